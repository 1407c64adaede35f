"""Orchestrators run a pipeline's DAG."""

from typing import TYPE_CHECKING, Any

from conveyor.orchestrators.base import BaseOrchestrator, BaseOrchestratorFlavor

if TYPE_CHECKING:
    from conveyor.orchestrators.base_config import BaseOrchestratorConfig

__all__ = ["BaseOrchestrator", "BaseOrchestratorConfig", "BaseOrchestratorFlavor"]


def __getattr__(name: str) -> Any:
    if name == "BaseOrchestratorConfig":  # pydantic: only when asked for
        from conveyor.orchestrators.base_config import BaseOrchestratorConfig

        return BaseOrchestratorConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
