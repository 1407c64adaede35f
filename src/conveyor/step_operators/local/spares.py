"""Step processes made ahead of their steps, so that a step neither waits for Conveyor's imports nor pays for them.

One fork server per interpreter (`forkserver.py`) imports Conveyor's remote side once; each step process is a
fork of it (a few ms of CPU, where starting Python and importing costs ~60-100 ms, which on a small machine is
taken from the steps running meanwhile). The first step of an interpreter starts cold, and starts the server; from
then on one fork is kept asked for ahead (the spare), and a step that finds none asks for its own.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import socket
import subprocess
import threading
import time
import weakref
from typing import TYPE_CHECKING

from conveyor.step_operators.entrypoint import ENTRYPOINT_MODULE
from conveyor.utils.procs import process_start, same_process

if TYPE_CHECKING:
    from conveyor.step_operators.local.limits import MemoryLimit

__all__ = ["FORKSERVER_MODULE", "SPARES", "ForkedWorker", "Spares"]

FORKSERVER_MODULE = "conveyor.step_operators.local.forkserver"
#: how long a step waits for the fork server's answer (it may still be importing) before it starts cold
FORK_TIMEOUT = 30.0
#: an exit code the fork server never relayed (it was killed): the step's end is known, not how it ended
UNKNOWN_EXIT = 255


class ForkedWorker:
    """A step process the fork server made; `hand_over` gives it its one job.

    What the operator uses of `subprocess.Popen`: `pid`, `returncode`, `poll()` and `wait(timeout)`. The process is
    the fork server's child, so its exit status comes from the server, over a pipe: a line, then EOF.
    """

    def __init__(self, pid: int, job_fd: int, status_fd: int) -> None:
        self.pid = pid
        self.args = [f"<forked step process {pid}>"]
        self.returncode: int | None = None
        self._status_fd = status_fd
        # the descriptors still open; the status pipe is closed with the object, never earlier: another thread
        # may be waiting on it in select()
        self._fds = {"job": job_fd, "status": status_fd}
        self._status = b""
        self._start = process_start(pid)  # to follow it by pid and start time if the server goes without telling
        self._orphaned = False
        self._lock = threading.Lock()
        weakref.finalize(self, _close_fds, self._fds)

    def hand_over(self, command: list[str], env: dict[str, str], log_path: str, cpus: list[int],
                  memory: "MemoryLimit | None") -> None:
        job = {
            "argv": command[3:], "env": env, "cwd": os.getcwd(), "log_path": log_path, "cpus": cpus,
            "cgroup_procs": str(memory.cgroup / "cgroup.procs") if memory is not None and memory.cgroup else None,
            "rlimit": memory.limit if memory is not None and memory.mechanism == "rlimit" else None,
        }
        data = memoryview((json.dumps(job) + "\n").encode())
        fd = self._fds.pop("job")  # a worker takes one job
        try:
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)

    def discard(self) -> None:
        """A spare not used: EOF on its job pipe ends it."""
        fd = self._fds.pop("job", None)
        if fd is not None:
            os.close(fd)

    def poll(self) -> int | None:
        self._ended(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def _ended(self, timeout: float | None) -> bool:
        """Whether the process has ended (its exit code known), waiting up to `timeout` for it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.returncode is not None:
                return True
            if self._orphaned:
                return self._orphan_ended(deadline)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([self._status_fd], [], [], left)
            if readable:
                self._read_status()
                continue
            return False

    def _read_status(self) -> None:
        with self._lock:
            if self.returncode is not None or self._orphaned:
                return
            chunk = os.read(self._status_fd, 64)
            self._status += chunk
            if self._status.endswith(b"\n"):
                self.returncode = int(self._status)
            elif not chunk:  # the server is gone: follow the process itself
                self._orphaned = True

    def _orphan_ended(self, deadline: float | None) -> bool:
        while self._start is not None and same_process(self.pid, self._start):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        self.returncode = UNKNOWN_EXIT
        return True


def _close_fds(fds: dict[str, int]) -> None:
    while fds:
        try:
            os.close(fds.popitem()[1])
        except OSError:
            pass


class _ForkServer:
    """One fork server: forks are asked for with one byte each and answered in order."""

    def __init__(self, python: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own module
                [python, "-u", "-m", FORKSERVER_MODULE, str(theirs.fileno())], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(FORK_TIMEOUT)
        self.sock = ours
        self.asked = 0  # forks asked for and claimed by nobody yet: the spare
        self._receiving = threading.Lock()

    def ask(self) -> None:
        self.sock.send(b"F")

    def receive(self) -> ForkedWorker:
        """The next fork's answer (the one asked for longest ago); OSError if the server is gone or too slow."""
        with self._receiving:
            message, fds, _flags, _addr = socket.recv_fds(self.sock, 32, 2)
        if len(fds) != 2 or not message:
            _close_fds({str(i): fd for i, fd in enumerate(fds)})
            raise ConnectionError("the fork server is gone")
        return ForkedWorker(int(message), fds[0], fds[1])

    def close(self, wait: float) -> None:
        self.sock.close()  # the server ends once its children have; forks never received see EOF and end
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass  # a step still running: the server stays its parent until it ends


def _standard(command: list[str]) -> bool:
    return len(command) > 3 and command[1:3] == ["-m", ENTRYPOINT_MODULE]


class Spares:
    def __init__(self) -> None:
        self._servers: dict[str, _ForkServer] = {}
        self._lock = threading.Lock()
        atexit.register(self.close)

    def take(self, command: list[str]) -> ForkedWorker | None:
        """A step process for this interpreter, made ahead if one was; None means start the step cold."""
        if not _standard(command):
            return None
        python = command[0]
        for _ in range(2):  # a spare that died meanwhile: one more, fresh
            with self._lock:
                server = self._servers.get(python)
                if server is None:
                    return None
                try:
                    if server.asked:
                        server.asked -= 1  # claim the spare
                    else:
                        server.ask()
                except OSError:
                    self._drop(python, server)
                    return None
            try:
                worker = server.receive()
            except OSError:
                with self._lock:
                    self._drop(python, server)
                return None
            if worker.poll() is None:
                return worker
            worker.discard()
        return None

    def replenish(self, command: list[str]) -> None:
        """Have a spare asked for: the fork server starts on the first call (the server imports meanwhile)."""
        if not _standard(command):
            return
        python = command[0]
        with self._lock:
            server = self._servers.get(python)
            if server is not None and server.process.poll() is not None:
                self._drop(python, server)
                server = None
            try:
                if server is None:
                    server = self._servers[python] = _ForkServer(python)
                if not server.asked:
                    server.ask()
                    server.asked += 1
            except OSError:
                if server is not None:
                    self._drop(python, server)

    def _drop(self, python: str, server: _ForkServer) -> None:
        """Forget a server that failed us (called with the lock held)."""
        if self._servers.get(python) is server:
            del self._servers[python]
        server.close(wait=0)

    def close(self) -> None:
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close(wait=2)


SPARES = Spares()
