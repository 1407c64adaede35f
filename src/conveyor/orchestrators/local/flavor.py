"""The `local` orchestrator: the DAG in this process, independent steps side by side.

Its config model (pydantic) lives in `config.py` and loads only when asked for: an orchestrator registered with
no config, as the default stack's is, runs on the defaults below without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.orchestrators.base import BaseOrchestratorFlavor

if TYPE_CHECKING:
    from conveyor.orchestrators.local.config import LocalOrchestratorConfig
    from conveyor.orchestrators.local.orchestrator import LocalOrchestrator

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_PARALLELISM",
    "MAX_HEARTBEAT_INTERVAL",
    "LocalOrchestratorConfig",
    "LocalOrchestratorFlavor",
]

#: the longest heartbeat_interval: a run without a lease to ask is taken as abandoned after 30 s without a beat
#: (execution/liveness.py), so an orchestrator must beat at least three times in that window
MAX_HEARTBEAT_INTERVAL = 10.0
#: the config's defaults, here so that the run path reads them without pydantic (config.py's fields use them)
DEFAULT_MAX_PARALLELISM: int | None = None  # no cap: every step whose inputs are ready starts
DEFAULT_HEARTBEAT_INTERVAL = 5.0


class LocalOrchestratorFlavor(BaseOrchestratorFlavor):
    """Runs the DAG in this process; independent steps run concurrently."""

    name = "local"

    @property
    def config_class(self) -> type["LocalOrchestratorConfig"]:
        from conveyor.orchestrators.local.config import LocalOrchestratorConfig

        return LocalOrchestratorConfig

    def plain_config(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        """No config set (the default stack's): the defaults. Anything set is validated by the model."""
        if raw:
            return None
        return {"max_parallelism": DEFAULT_MAX_PARALLELISM, "heartbeat_interval": DEFAULT_HEARTBEAT_INTERVAL}

    @property
    def implementation_class(self) -> type["LocalOrchestrator"]:
        from conveyor.orchestrators.local.orchestrator import LocalOrchestrator

        return LocalOrchestrator


def __getattr__(name: str) -> Any:
    """`LocalOrchestratorConfig` was defined here; it still imports from here, loading pydantic then."""
    if name == "LocalOrchestratorConfig":
        from conveyor.orchestrators.local.config import LocalOrchestratorConfig

        return LocalOrchestratorConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
