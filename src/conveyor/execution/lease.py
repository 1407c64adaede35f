"""A run's lease: one live process owns a run, and the operating system (or PostgreSQL) says which.

A heartbeat's age cannot tell a dead orchestrator from a suspended one (Ctrl-Z) or a slow one, so taking a run
over on heartbeat age alone let `conveyor run resume` run a live run's steps a second time. The lease is a lock
held by the orchestrating process for the run's whole life and released by the kernel (or the database server)
the moment that process dies:

- SQLite store: an exclusive `flock` on `<store dir>/locks/<run_id>.lock`; the file also says who holds it.
- PostgreSQL store: a session-level `pg_advisory_lock` on a dedicated connection kept open for the run.

`lease_held` answers True (someone holds it), False (nobody: the owner is gone), or None where a run has no lease
to ask about (a run recorded before leases existed): callers then fall back to pid and heartbeat.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from conveyor.store.store import MetadataStore

__all__ = ["Holder", "LeaseHeldError", "RunLease", "lease_held", "lease_holder", "lock_path"]

#: how long taking a lease retries while the lock is seen busy (a reader probing it holds it for microseconds)
ACQUIRE_RETRY_S = 0.5
#: lock files this process holds open
_HELD: set[int] = set()


def _forget_in_child() -> None:
    """A child forked without exec (multiprocessing in a step) must not keep a run looking owned after its
    orchestrator died: it closes its copies (the lock stays with the parent's descriptors)."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lease, as far as it is recorded."""

    host: str | None
    pid: int | None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}" if self.pid else "another process"


class LeaseHeldError(ConveyorError):
    """The run is owned by a live process."""

    def __init__(self, run_id: str, holder: Holder) -> None:
        super().__init__(f"run {run_id} is owned by a live process ({holder.describe()})")
        self.holder = holder


def lock_path(store: "MetadataStore", run_id: str) -> Path | None:
    """`<directory of the SQLite file>/locks/<run_id>.lock`; None for a store that is not a SQLite file."""
    if not store.is_sqlite:
        return None
    database = store.url.split("///", 1)[1] if "///" in store.url else ""
    if not database or database.startswith(":memory:"):
        return None
    return Path(database).parent / "locks" / f"{run_id}.lock"


def _pg_key(run_id: str) -> int:
    """A signed 64-bit advisory lock key of the run (its own namespace: the migration lock is a fixed key)."""
    return int.from_bytes(hashlib.sha256(b"conveyor-run-lease:" + run_id.encode()).digest()[:8], "big", signed=True)


class RunLease:
    """Held by the orchestrating process from before the run starts (or is resumed) until it has ended."""

    def __init__(self, store: "MetadataStore", run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self._fd: int | None = None
        self._conn: Any = None

    def __enter__(self) -> "RunLease":
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeldError naming who holds it."""
        path = lock_path(self.store, self.run_id)
        if path is not None:
            self._acquire_file(path)
        elif not self.store.is_sqlite:
            self._acquire_pg()

    def _acquire_file(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # in .conveyor/: private (docs/secrets.md)
        deadline = time.monotonic() + ACQUIRE_RETRY_S
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise LeaseHeldError(self.run_id, lease_holder(self.store, self.run_id)) from None
                time.sleep(0.02)
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # an owner that just finished removed the file we locked: lock the current one
                os.close(fd)
                continue
            break
        from conveyor.utils.procs import process_start

        me = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": process_start(os.getpid())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        _HELD.add(fd)

    def _acquire_pg(self) -> None:
        self._conn = self.store.db.dedicated_connection()  # the lock lives as long as this session: nobody else's
        if not self._pg("SELECT pg_try_advisory_lock(?)"):
            self.release()
            raise LeaseHeldError(self.run_id, lease_holder(self.store, self.run_id))

    def _pg(self, sql: str) -> Any:
        """`sql` with the run's key, on the lease's own connection; its one value."""
        cur = self._conn.cursor()
        try:
            cur.execute(self.store.db.sql(sql), (_pg_key(self.run_id),))
            return cur.fetchone()[0]
        finally:
            cur.close()

    def release(self) -> None:
        """Give the lease up (the run's final status is written already)."""
        if self._fd is not None:
            path = lock_path(self.store, self.run_id)
            try:
                if path is not None:
                    path.unlink()  # while still locked: a process waiting on this file re-checks and locks anew
            except FileNotFoundError:
                pass
            _HELD.discard(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            try:
                # unlock explicitly: closing the connection alone frees the lock only when the server's backend
                # process has exited, a moment later, so a check right after could still see the run owned
                self._pg("SELECT pg_advisory_unlock(?)")
            except Exception:  # noqa: BLE001 - the connection is gone already: so is its lock
                pass
            try:
                self._conn.close()  # the session ends: PostgreSQL drops whatever it still held
            finally:
                self._conn = None


def lease_held(store: "MetadataStore", run_id: str) -> bool | None:
    """True while a live process holds the run's lease, False when nobody does, None when the run has none."""
    path = lock_path(store, run_id)
    if path is not None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: two readers asking at once do not collide
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops our shared lock
        return False
    if store.is_sqlite:
        return None
    key = _pg_key(run_id)
    with store.read() as c:
        return bool(c.scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid::bigint = ? AND objid::bigint = ?", ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)))


def lease_holder(store: "MetadataStore", run_id: str) -> Holder:
    """Who holds the lease: the lock file's record on SQLite, the run's row on PostgreSQL."""
    path = lock_path(store, run_id)
    if path is not None:
        try:
            me = json.loads(path.read_text() or "{}")
            return Holder(me.get("host"), me.get("pid"))
        except (OSError, ValueError):
            pass
    row = store.find_run(run_id) or {}
    return Holder(row.get("host"), row.get("pid"))
