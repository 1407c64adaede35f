"""Interrupting an in-process step's thread: the only handle Python gives is an asynchronous exception."""

from __future__ import annotations

import ctypes
import threading


class StepInterrupted(BaseException):
    """Raised inside an in-process step's thread when it times out or the run is stopped."""

    def __init__(self, reason: str = "stopped") -> None:
        super().__init__(reason)
        self.reason = reason


class StepTimedOut(StepInterrupted):
    def __init__(self) -> None:
        super().__init__("timeout")


class StepStopped(StepInterrupted):
    def __init__(self) -> None:
        super().__init__("stopped")


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Takes effect at the thread's next Python bytecode; a thread blocked in C code notices later."""
    n = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))
    if n > 1:  # should never happen; undo rather than hit several threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        return False
    return n == 1


class Watchdog:
    """Raises StepTimedOut in the calling thread after `seconds`, unless cancelled first."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._armed = False

    def __enter__(self) -> "Watchdog":
        if self.seconds:
            tid = threading.get_ident()
            self._armed = True

            def fire() -> None:
                with self._lock:
                    if self._armed:
                        raise_in_thread(tid, StepTimedOut)

            self._timer = threading.Timer(self.seconds, fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._armed = False
        if self._timer is not None:
            self._timer.cancel()
