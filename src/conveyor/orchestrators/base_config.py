"""`BaseOrchestratorConfig`: pydantic, so apart from `orchestrators.base`, which a run imports without it."""

from __future__ import annotations

from conveyor.stack.config_model import StackComponentConfig

__all__ = ["BaseOrchestratorConfig"]


class BaseOrchestratorConfig(StackComponentConfig):
    pass
