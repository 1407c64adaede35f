"""One spare step process per interpreter, started ahead so a step does not wait for Conveyor's imports."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import threading
from typing import TYPE_CHECKING

from conveyor.step_operators.entrypoint import ENTRYPOINT_MODULE

if TYPE_CHECKING:
    from conveyor.step_operators.local.limits import MemoryLimit

WORKER_MODULE = "conveyor.step_operators.local.worker"


class Worker(subprocess.Popen):  # type: ignore[type-arg]
    """A started worker; `hand_over` gives it its one job."""

    def hand_over(self, command: list[str], env: dict[str, str], log_path: str, cpus: list[int],
                  memory: "MemoryLimit | None") -> None:
        job = {
            "argv": command[3:], "env": env, "cwd": os.getcwd(), "log_path": log_path, "cpus": cpus,
            "cgroup_procs": str(memory.cgroup / "cgroup.procs") if memory is not None and memory.cgroup else None,
            "rlimit": memory.limit if memory is not None and memory.mechanism == "rlimit" else None,
        }
        assert self.stdin is not None
        self.stdin.write((json.dumps(job) + "\n").encode())
        self.stdin.close()


def _standard(command: list[str]) -> bool:
    return len(command) > 3 and command[1:3] == ["-m", ENTRYPOINT_MODULE]


class Spares:
    def __init__(self) -> None:
        self._spare: dict[str, Worker] = {}
        self._lock = threading.Lock()
        atexit.register(self.close)

    def take(self, command: list[str]) -> Worker | None:
        """The spare for this interpreter, if one is up; None means start the step cold."""
        if not _standard(command):
            return None
        with self._lock:
            worker = self._spare.pop(command[0], None)
        if worker is None or worker.poll() is not None:
            return None
        return worker

    def replenish(self, command: list[str]) -> None:
        if not _standard(command):
            return
        python = command[0]
        with self._lock:
            if python in self._spare:
                return
            try:
                self._spare[python] = Worker(  # noqa: S603 - our own module
                    [python, "-u", "-m", WORKER_MODULE], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            workers, self._spare = list(self._spare.values()), {}
        for w in workers:
            try:
                if w.stdin:
                    w.stdin.close()  # EOF: the worker exits on its own
                w.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                w.kill()


SPARES = Spares()
