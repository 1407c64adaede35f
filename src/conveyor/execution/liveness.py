"""Whether a run's orchestrating process is still alive: shared by `run list`, `run stop` and `run resume`.

The run's lease (execution/lease.py) decides: held means alive, however old the heartbeat (a suspended or busy
orchestrator still owns its run); released means gone. Only a run without a lease to ask (recorded before leases
existed) falls back to its pid, checked with its start time, and its heartbeat.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.store.store import MetadataStore

__all__ = ["HEARTBEAT_STALE", "STALE_ENV", "heartbeat_stale", "orchestrator_alive", "owner", "shown_status"]

#: A running run without a lease whose orchestrator has not marked it for this long is abandoned.
HEARTBEAT_STALE = timedelta(seconds=30)
#: overrides HEARTBEAT_STALE (seconds); the tests shorten it instead of waiting 30 s
STALE_ENV = "CONVEYOR_HEARTBEAT_STALE_S"


def heartbeat_stale() -> timedelta:
    value = os.environ.get(STALE_ENV)
    return timedelta(seconds=float(value)) if value else HEARTBEAT_STALE


def _get(run: Any, key: str) -> Any:
    return run.get(key) if isinstance(run, dict) else getattr(run, key, None)


def orchestrator_alive(run: Any, store: "MetadataStore | None" = None) -> bool:
    """Whether a live process owns the run (a store row dict or a Client PipelineRun)."""
    from conveyor.execution.lease import lease_held
    from conveyor.store.store import now
    from conveyor.utils.procs import same_process

    if store is None:
        from conveyor.context import get_context

        store = get_context().store
    held = lease_held(store, _get(run, "id"))
    if held is not None:
        return held
    host, pid, heartbeat = _get(run, "host"), _get(run, "pid"), _get(run, "heartbeat")
    if host == socket.gethostname() and pid and not same_process(int(pid), _get(run, "pid_start")):
        return False
    return heartbeat is not None and now() - heartbeat < heartbeat_stale()


def owner(run: Any, store: "MetadataStore | None" = None) -> str:
    """Who owns the run, for messages: `pid N on HOST`."""
    from conveyor.execution.lease import lease_holder

    if store is None:
        from conveyor.context import get_context

        store = get_context().store
    return lease_holder(store, _get(run, "id")).describe()


def shown_status(run: Any, store: "MetadataStore | None" = None) -> str:
    """The stored status, except that a `running` run nobody is running any more shows as `abandoned`."""
    status = _get(run, "status")
    if status != "running":
        return status
    return "running" if orchestrator_alive(run, store) else "abandoned"
