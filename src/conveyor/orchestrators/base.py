"""Orchestrator contract: run a compiled snapshot's DAG, recording everything in the store."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from conveyor.stack.component import ComponentType, StackComponent
from conveyor.stack.flavor import Flavor

if TYPE_CHECKING:
    from conveyor.exceptions import StepFailedError
    from conveyor.orchestrators.base_config import BaseOrchestratorConfig

__all__ = ["BaseOrchestrator", "BaseOrchestratorConfig", "BaseOrchestratorFlavor"]


class BaseOrchestrator(StackComponent):
    TYPE: ClassVar[ComponentType] = ComponentType.ORCHESTRATOR

    @abstractmethod
    def run(self, **run: Any) -> list["StepFailedError"]:
        """Run every step; return the failures (empty when the run completed)."""


class BaseOrchestratorFlavor(Flavor):
    @property
    def type(self) -> ComponentType:
        return ComponentType.ORCHESTRATOR

    @property
    def config_class(self) -> type["BaseOrchestratorConfig"]:
        from conveyor.orchestrators.base_config import BaseOrchestratorConfig

        return BaseOrchestratorConfig


def __getattr__(name: str) -> Any:
    """`BaseOrchestratorConfig` (pydantic) loads only when asked for."""
    if name == "BaseOrchestratorConfig":
        from conveyor.orchestrators.base_config import BaseOrchestratorConfig

        return BaseOrchestratorConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
