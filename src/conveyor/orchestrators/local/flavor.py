"""The `local` orchestrator: the DAG in this process, independent steps side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from conveyor.orchestrators.base import BaseOrchestratorConfig, BaseOrchestratorFlavor

if TYPE_CHECKING:
    from conveyor.orchestrators.local.orchestrator import LocalOrchestrator


#: the longest heartbeat_interval: a run without a lease to ask is taken as abandoned after 30 s without a beat
#: (execution/liveness.py), so an orchestrator must beat at least three times in that window
MAX_HEARTBEAT_INTERVAL = 10.0


class LocalOrchestratorConfig(BaseOrchestratorConfig):
    max_parallelism: int = Field(default=16, ge=1, description="steps running at once")
    heartbeat_interval: float = Field(default=5.0, gt=0, description="seconds between liveness marks on the run "
                                      f"(at most {MAX_HEARTBEAT_INTERVAL:g})")

    @field_validator("heartbeat_interval")
    @classmethod
    def _bounded(cls, value: float) -> float:
        if value > MAX_HEARTBEAT_INTERVAL:
            raise ValueError(f"heartbeat_interval is {value:g}s but may be at most {MAX_HEARTBEAT_INTERVAL:g}s (a run "
                             f"whose orchestrator has not beaten for 30s may be taken as abandoned): set it to "
                             f"{MAX_HEARTBEAT_INTERVAL:g} or less")
        return value


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
