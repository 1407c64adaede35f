"""`LocalOrchestratorConfig`, the pydantic model of the `local` orchestrator's config; its defaults and bounds come
from `flavor.py`, which the run path reads without pydantic."""

from __future__ import annotations

from pydantic import Field, field_validator

from conveyor.orchestrators.base_config import BaseOrchestratorConfig
from conveyor.orchestrators.local.flavor import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_PARALLELISM,
    MAX_HEARTBEAT_INTERVAL,
)

__all__ = ["LocalOrchestratorConfig"]


class LocalOrchestratorConfig(BaseOrchestratorConfig):
    max_parallelism: int | None = Field(default=DEFAULT_MAX_PARALLELISM, ge=1, description="the most steps running "
                                        "at once (default: no cap, every step whose inputs are ready starts)")
    heartbeat_interval: float = Field(default=DEFAULT_HEARTBEAT_INTERVAL, gt=0, description="seconds between "
                                      f"liveness marks on the run (at most {MAX_HEARTBEAT_INTERVAL:g})")

    @field_validator("heartbeat_interval")
    @classmethod
    def _bounded(cls, value: float) -> float:
        if value > MAX_HEARTBEAT_INTERVAL:
            raise ValueError(f"heartbeat_interval is {value:g}s but may be at most {MAX_HEARTBEAT_INTERVAL:g}s (a run "
                             f"whose orchestrator has not beaten for 30s may be taken as abandoned): set it to "
                             f"{MAX_HEARTBEAT_INTERVAL:g} or less")
        return value
