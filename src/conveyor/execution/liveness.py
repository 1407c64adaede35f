"""Whether a run's orchestrating process is still alive: shared by `run list`, `run stop` and `run resume`."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

#: A running run whose orchestrator has not marked it for this long is abandoned (it beats every 5 s).
HEARTBEAT_STALE = timedelta(seconds=30)


def orchestrator_alive(host: str | None, pid: int | None, heartbeat: Any) -> bool:
    """False when the run's process is dead on this host or has not beaten for 30 s."""
    from conveyor.store.store import now
    from conveyor.utils.procs import alive

    if host == socket.gethostname() and pid and not alive(int(pid)):
        return False
    return heartbeat is not None and now() - heartbeat < HEARTBEAT_STALE


def shown_status(run: Any) -> str:
    """The stored status, except that a `running` run nobody is running any more shows as `abandoned`."""
    status = run.status if not isinstance(run, dict) else run["status"]
    if status != "running":
        return status
    get = run.get if isinstance(run, dict) else lambda k: getattr(run, k)
    return "running" if orchestrator_alive(get("host"), get("pid"), get("heartbeat")) else "abandoned"
