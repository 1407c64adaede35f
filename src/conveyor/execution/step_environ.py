"""The environment of in-process steps: each sees its own variables in its own thread, and nothing else does.

An in-process step runs in a thread of the orchestrating process, beside other steps' threads and the threads
that launch steps elsewhere (a `local` step's process, sbatch, spark-submit inherit the process environment).
Writing a step's variables (secrets among them) into the process environment, even only for the step's
duration, hands them to all of those; and save/restore of overlapping steps leaves values behind. So they never
enter it. While some step holds variables:

- `os.environ` (the same object, so `from os import environ` and `os.getenv` see it too) becomes an instance
  of `_StepEnviron`, which overlays the variables registered for the calling thread: the step reads and writes
  them there, every other thread sees the real environment;
- `subprocess.Popen` (hence `subprocess.run`, `os.popen`) and `os.system` called from the step's thread without
  `env=` get the overlaid environment explicitly, since a child process otherwise inherits the C environment.

When the last step's variables are gone, os.environ's class, Popen and os.system are put back as they were.
Not covered: `os.exec*`, `os.spawn*`, `os.posix_spawn` without an env and `os.environb` see the process
environment (without the step's variables), and so do threads the step starts itself.
"""

from __future__ import annotations

import functools
import os
import subprocess
import threading
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["real_environ", "step_variables"]

#: a variable the step deleted in its own view (it may exist in the real environment)
_DELETED = None
#: thread ident -> that thread's variables (a dict, not threading.local: a fork() child keeps its thread's view)
_overlays: dict[int, dict[str, str | None]] = {}
_lock = threading.Lock()
_users = 0
#: position of `env` in Popen.__init__'s arguments after self (stable since Python 3.0)
_POPEN_ENV_POSITION = 10
_saved: dict[str, Any] = {}


def _overlay() -> dict[str, str | None] | None:
    return _overlays.get(threading.get_ident())


class _StepEnviron(os._Environ):  # type: ignore[name-defined,misc,type-arg]
    """os.environ while in-process steps hold variables: the calling thread's variables over the real ones."""

    def __getitem__(self, key: str) -> str:
        overlay = _overlay()
        if overlay is not None and key in overlay:
            value = overlay[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return super().__getitem__(key)  # type: ignore[no-any-return]

    def __setitem__(self, key: str, value: str) -> None:
        overlay = _overlay()
        if overlay is not None and key in overlay:
            self.encodekey(key), self.encodevalue(value)  # the type checks os.environ makes
            overlay[key] = value
            return
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        overlay = _overlay()
        if overlay is not None and key in overlay:
            if overlay[key] is _DELETED:
                raise KeyError(key)
            overlay[key] = _DELETED
            return
        super().__delitem__(key)

    def __iter__(self) -> Iterator[str]:
        overlay = _overlay()
        real = list(super().__iter__())
        if overlay is None:
            yield from real
            return
        yield from (k for k in real if k not in overlay)
        yield from (k for k, v in overlay.items() if v is not _DELETED)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"environ({dict(self)!r})"


def _thread_environment() -> dict[str, str] | None:
    """The calling thread's whole environment if it is a step's with variables, else None (inherit as usual)."""
    return dict(os.environ) if _overlay() is not None else None


def _popen_init(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        if len(args) <= _POPEN_ENV_POSITION and kwargs.get("env") is None:
            env = _thread_environment()
            if env is not None:
                kwargs["env"] = env
        original(self, *args, **kwargs)

    return __init__


def _system(original: Any) -> Any:
    @functools.wraps(original)
    def system(command: Any) -> int:
        env = _thread_environment()
        if env is None:
            return original(command)  # type: ignore[no-any-return]
        code = subprocess.call(command, shell=True, env=env)  # noqa: S602 - what os.system does
        return code << 8 if code >= 0 else -code  # os.system's wait status

    return system


def _install() -> None:
    global _users
    if _users == 0:
        if type(os.environ) is os._Environ:  # type: ignore[attr-defined]
            os.environ.__class__ = _StepEnviron
        _saved["popen"], _saved["system"] = subprocess.Popen.__init__, os.system
        subprocess.Popen.__init__ = _saved["our_popen"] = _popen_init(_saved["popen"])  # type: ignore[method-assign]
        os.system = _saved["our_system"] = _system(_saved["system"])
    _users += 1


def _uninstall() -> None:
    """Put back what _install replaced, unless someone replaced it since (then ours stays: inert without steps)."""
    global _users
    _users -= 1
    if _users == 0:
        if type(os.environ) is _StepEnviron:
            os.environ.__class__ = os._Environ  # type: ignore[attr-defined]
        if subprocess.Popen.__init__ is _saved.pop("our_popen"):
            subprocess.Popen.__init__ = _saved["popen"]  # type: ignore[method-assign]
        if os.system is _saved.pop("our_system"):
            os.system = _saved["system"]
        _saved.clear()


@contextmanager
def step_variables(env: dict[str, str]) -> Iterator[None]:
    """While the block runs, the calling thread (and what it starts) sees `env` over the process environment."""
    if not env:
        yield
        return
    for key, value in env.items():
        os.environ.encodekey(key), os.environ.encodevalue(value)  # type: ignore[attr-defined]
    tid = threading.get_ident()
    with _lock:
        previous = _overlays.get(tid)
        _overlays[tid] = {**(previous or {}), **env}
        _install()
    try:
        yield
    finally:
        with _lock:
            if previous is None:
                _overlays.pop(tid, None)
            else:
                _overlays[tid] = previous
            _uninstall()


def real_environ() -> dict[str, str]:
    """The process environment without any step's variables, whichever thread asks: for other steps' processes."""
    environ = os.environ
    return {environ.decodekey(k): environ.decodevalue(v)  # type: ignore[attr-defined]
            for k, v in list(environ._data.items())}  # type: ignore[attr-defined]
