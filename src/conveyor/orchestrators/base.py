"""Orchestrator contract: run a compiled snapshot's DAG, recording everything in the store."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from conveyor.stack.component import ComponentType, StackComponent, StackComponentConfig
from conveyor.stack.flavor import Flavor

if TYPE_CHECKING:
    from conveyor.exceptions import StepFailedError


class BaseOrchestratorConfig(StackComponentConfig):
    pass


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
    def config_class(self) -> type[BaseOrchestratorConfig]:
        return BaseOrchestratorConfig
