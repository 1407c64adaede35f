"""The fork server: imports Conveyor's remote side once, then forks one step process per request.

Starting a Python process and importing the entrypoint costs ~60-100 ms of CPU; a fork of this already-warm
process costs a few. The `local` step operator (`spares.py`) starts one per interpreter and talks to it over a
Unix socket whose descriptor number is the only argument:

- each request (one byte) is answered with the new process's pid, and two descriptors: the write end of the
  pipe the job arrives on (one JSON line, `worker.run`) and the read end of the pipe its exit status comes back
  on (one line, `os.waitstatus_to_exitcode`, then EOF), since only this process, its parent, can wait for it;
- EOF on the socket (the orchestrator closed it or is gone) ends the server once its children have ended:
  a spare never handed a job sees EOF on its job pipe and exits; a step still running keeps running.

Each forked process leaves this one's session (`setsid`: its own process group, as a process started with
`start_new_session`) and drops the server's descriptors and signal handling. It ends as the interpreter's exit
does (threads that are not daemons joined, atexit handlers run, streams flushed), but with `os._exit`: tearing
down every object inherited from the server would write to, and so copy, every page the two share.
Standard library and Conveyor's remote side only: the step processes it makes must not import pydantic or
SQLAlchemy.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import sys
from typing import NoReturn

__all__ = ["main"]


def _reap(status_pipes: dict[int, int]) -> None:
    """Send each ended child's exit code on its status pipe, and close it."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status_pipes.pop(pid, None)
        if fd is None:
            continue
        try:
            os.write(fd, f"{os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:
            pass  # the orchestrator is gone: nobody to tell
        os.close(fd)


def _child(line_fd: int, started_in: str) -> NoReturn:
    """In the forked process: wait for the job, run it, and exit."""
    from conveyor.step_operators.local import worker

    sys.argv[:] = [worker.__file__ or "worker"]
    try:
        with os.fdopen(line_fd, "rb") as pipe:
            line = pipe.readline()
        code = worker.run(line.decode(), started_in)
    except SystemExit as stop:  # as the interpreter treats one: a code, or a message and 1
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if stop.code is not None and not isinstance(stop.code, int):
            print(stop.code, file=sys.stderr)
    except BaseException as err:  # noqa: BLE001 - reported as the interpreter would, then the process ends
        import traceback

        traceback.print_exc()
        _exit(1, interrupted=isinstance(err, KeyboardInterrupt))
    _exit(code)


def _exit(code: int, interrupted: bool = False) -> NoReturn:
    """End as the interpreter's exit would, without its teardown of every module and object: in a fork, that
    teardown writes to every page shared with the server, copying them all (tens of ms a step)."""
    import atexit
    import threading

    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()  # the step's threads that are not daemons, joined as at any exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a log on a full disk must not change the exit code (exit_with)
            pass
    if interrupted:  # as the interpreter ends on an unhandled KeyboardInterrupt: killed by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def main(argv: list[str]) -> int:
    from conveyor.step_operators.local import worker

    sock = socket.socket(fileno=int(argv[0]))
    started_in = os.getcwd()
    worker.preload()
    gc.collect()
    gc.freeze()  # what is here now is never collected: a collection in a fork would copy every page it visits
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup descriptor hears of it
    signal.set_wakeup_fd(wake_w)
    status_pipes: dict[int, int] = {}  # child pid -> write end of its status pipe
    listening = True
    while listening or status_pipes:
        ready, _, _ = select.select([sock, wake_r] if listening else [wake_r], [], [])
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        _reap(status_pipes)
        if not listening or sock not in ready:
            continue
        try:
            request = sock.recv(16)
        except OSError:
            request = b""
        if not request:
            listening = False
            sock.close()
            continue
        line_r, line_w = os.pipe()
        status_r, status_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sock.close()
            for fd in (wake_r, wake_w, line_w, status_r, status_w, *status_pipes.values()):
                os.close(fd)
            os.setsid()
            _child(line_r, started_in)
        os.close(line_r)
        status_pipes[pid] = status_w
        try:
            socket.send_fds(sock, [str(pid).encode()], [line_w, status_r])
        except OSError:
            pass  # the orchestrator is gone: the child reads EOF on its job pipe and ends
        os.close(line_w)
        os.close(status_r)
    return 0


if __name__ == "__main__":
    from conveyor.entrypoints.step_operator import exit_with

    exit_with(main(sys.argv[1:]))
