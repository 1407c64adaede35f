"""Enforcing ResourceSettings on a child process: CPU affinity, a memory cgroup or RLIMIT_AS, GPU choice."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

MEMORY_CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")


def _own_cgroup(controller: str | None) -> str | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (controller is None and controllers == "") or (controller and controller in controllers.split(",")):
                return path
    except OSError:
        return None
    return None


@dataclass
class MemoryLimit:
    """A per-step memory limit; `oom_killed()` tells afterwards whether the limit killed the step."""

    limit: int
    mechanism: str  # "cgroup-v1" | "cgroup-v2" | "rlimit"
    cgroup: Path | None = None

    def oom_killed(self) -> bool:
        if self.cgroup is None:
            return False
        name = "memory.oom_control" if self.mechanism == "cgroup-v1" else "memory.events"
        try:
            for line in (self.cgroup / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except OSError:
            return False
        return False

    def kill_all(self, deadline_s: float = 5.0) -> None:
        """SIGKILL every process in the step's cgroup. Membership survives `setsid` and re-parenting, so this
        reaches what left the step's process group and tree: `cgroup.kill` on cgroup v2 where the kernel has it,
        else each pid `cgroup.procs` lists, until it lists none (a pid listed there is a member, never a reused one)."""
        if self.cgroup is None:
            return
        import signal
        import time

        try:
            (self.cgroup / "cgroup.kill").write_text("1")
        except OSError:
            pass  # cgroup v1, or a kernel before 5.14: one by one
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                pids = [int(p) for p in (self.cgroup / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                return
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        if self.cgroup is not None:
            try:
                self.cgroup.rmdir()
            except OSError:
                pass


def _new_cgroup(parent: Path, limit: int, mechanism: str, files: dict[str, str], optional: dict[str, str]) -> MemoryLimit | None:
    """Create a child cgroup with the given limit files; None (and nothing left behind) where we may not."""
    path = parent / f"conveyor-{uuid.uuid4().hex[:12]}"
    try:
        path.mkdir()
        for name, value in files.items():
            (path / name).write_text(value)
        for name, value in optional.items():
            if (path / name).exists():
                (path / name).write_text(value)
    except OSError:
        try:
            path.rmdir()
        except OSError:
            pass
        return None
    return MemoryLimit(limit, mechanism, path)


def _cgroup_v1(limit: int) -> MemoryLimit | None:
    own = _own_cgroup("memory")
    if own is None or not MEMORY_CGROUP_V1.is_dir():
        return None
    return _new_cgroup(MEMORY_CGROUP_V1 / own.lstrip("/"), limit, "cgroup-v1", {"memory.limit_in_bytes": str(limit)},
                       {"memory.memsw.limit_in_bytes": str(limit)})


def _cgroup_v2(limit: int) -> MemoryLimit | None:
    controllers = CGROUP_V2 / "cgroup.controllers"
    own = _own_cgroup(None)
    if own is None or not controllers.exists() or "memory" not in controllers.read_text().split():
        return None
    parent = CGROUP_V2 / own.lstrip("/")
    try:
        if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
            (parent / "cgroup.subtree_control").write_text("+memory")
    except OSError:
        return None
    return _new_cgroup(parent, limit, "cgroup-v2", {"memory.max": str(limit)}, {"memory.swap.max": "0"})


def memory_limit(limit: int, enforcement: str) -> MemoryLimit | None:
    if enforcement == "none":
        return None
    if enforcement in ("auto", "cgroup"):
        found = _cgroup_v2(limit) or _cgroup_v1(limit)
        if found is not None:
            return found
        if enforcement == "cgroup":
            raise OSError("memory_enforcement='cgroup' but no writable memory cgroup was found; use 'auto' or 'rlimit'")
    return MemoryLimit(limit, "rlimit")


def rlimit_notice(memory: MemoryLimit | None, enforcement: str) -> str | None:
    """The line a step's log starts with when its memory limit is per process: RLIMIT_AS binds each process on
    its own, so a step that starts children can use the limit several times over (a cgroup would bind them all)."""
    if memory is None or memory.mechanism != "rlimit":
        return None
    why = "no writable cgroup" if enforcement in ("auto", "cgroup") else f"memory_enforcement={enforcement!r}"
    return f"memory limit enforced per process with RLIMIT_AS ({why}): children each get the limit"


def make_preexec(cpus: list[int], memory: MemoryLimit | None):  # type: ignore[no-untyped-def]
    """Runs in the child between fork and exec: only os-level calls, no locks, no imports."""
    import resource

    procs = str(memory.cgroup / "cgroup.procs") if memory is not None and memory.cgroup is not None else None
    rlimit = memory.limit if memory is not None and memory.mechanism == "rlimit" else None

    def preexec() -> None:
        if procs is not None:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
        if rlimit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (rlimit, rlimit))
        if cpus:
            os.sched_setaffinity(0, cpus)

    return preexec


class CpuAllocator:
    """Spreads steps over the CPUs this process may use: each step gets the least-used ones."""

    def __init__(self) -> None:
        self.available = sorted(os.sched_getaffinity(0))
        self.load = {c: 0 for c in self.available}
        self._lock = threading.Lock()

    def acquire(self, count: float) -> list[int]:
        n = max(1, math.ceil(count))
        with self._lock:
            chosen = sorted(sorted(self.available, key=lambda c: (self.load[c], c))[:n])
            for c in chosen:
                self.load[c] += 1
            return chosen

    def release(self, cpus: list[int]) -> None:
        with self._lock:
            for c in cpus:
                self.load[c] = max(0, self.load[c] - 1)


@dataclass
class GpuInventory:
    """GPUs as nvidia-smi sees them, minus the ones busy with other processes or given to our steps."""

    indices: list[int] = field(default_factory=list)
    busy: set[int] = field(default_factory=set)
    reason: str = ""

    @classmethod
    def probe(cls) -> "GpuInventory":
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return cls(reason="nvidia-smi not found")
        try:
            gpus = subprocess.run([smi, "--query-gpu=index,uuid", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=20, check=True).stdout
            apps = subprocess.run([smi, "--query-compute-apps=gpu_uuid", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=20, check=True).stdout
        except (subprocess.SubprocessError, OSError) as err:
            return cls(reason=f"nvidia-smi failed: {err}")
        by_uuid = {}
        for line in gpus.splitlines():
            if "," in line:
                index, uuid_ = (p.strip() for p in line.split(",", 1))
                by_uuid[uuid_] = int(index)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        indices = sorted(by_uuid.values())
        if visible is not None and visible.strip():
            wanted = {v.strip() for v in visible.split(",") if v.strip()}
            indices = [i for u, i in by_uuid.items() if str(i) in wanted or u in wanted]
        busy = {by_uuid[u.strip()] for u in apps.splitlines() if u.strip() in by_uuid}
        return cls(indices=indices, busy=busy, reason="" if indices else "nvidia-smi lists no GPUs")


class GpuAllocator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ours: set[int] = set()
        self._total: int | None = None
        self._reason = ""

    def total(self) -> tuple[int, str]:
        if self._total is None:
            inv = GpuInventory.probe()
            self._total, self._reason = len(inv.indices), inv.reason
        return self._total, self._reason

    def acquire(self, count: int) -> list[int] | None:
        """The GPUs for a step, or None while not enough are free (the step stays queued)."""
        with self._lock:
            inv = GpuInventory.probe()
            free = [i for i in inv.indices if i not in inv.busy and i not in self._ours]
            if len(free) < count:
                return None
            chosen = free[:count]
            self._ours.update(chosen)
            return chosen

    def release(self, gpus: list[int]) -> None:
        with self._lock:
            self._ours.difference_update(gpus)


CPUS = CpuAllocator()
GPUS = GpuAllocator()
