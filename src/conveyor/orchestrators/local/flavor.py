"""The `local` orchestrator: the DAG in this process, independent steps side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from conveyor.orchestrators.base import BaseOrchestratorConfig, BaseOrchestratorFlavor

if TYPE_CHECKING:
    from conveyor.orchestrators.local.orchestrator import LocalOrchestrator


class LocalOrchestratorConfig(BaseOrchestratorConfig):
    max_parallelism: int = Field(default=16, ge=1, description="steps running at once")
    heartbeat_interval: float = Field(default=5.0, gt=0, description="seconds between liveness marks on the run")


class LocalOrchestratorFlavor(BaseOrchestratorFlavor):
    """Runs the DAG in this process; independent steps run concurrently."""

    name = "local"

    @property
    def config_class(self) -> type[LocalOrchestratorConfig]:
        return LocalOrchestratorConfig

    @property
    def implementation_class(self) -> type["LocalOrchestrator"]:
        from conveyor.orchestrators.local.orchestrator import LocalOrchestrator

        return LocalOrchestrator
