"""Whether this process may run a pipeline.

Most scripts call their pipeline at module level, without `if __name__ == "__main__":`. Whatever imports such a
script to reach a step, a type or a pipeline object (the remote side of a step, `conveyor run resume`,
`conveyor build`, loading an artifact) would run the whole pipeline again, and in a step process that pipeline's
own steps would do the same: a fork bomb. So a pipeline call does not run:

* while Conveyor itself imports user code (`importing_user_code()`; a context variable, so a pipeline call in
  another thread is not affected), the call ends the module's execution right there (`ModuleStopped`), and the
  importer keeps the module as far as it got (`keep_stopped_module`). Everything a step needs is defined before
  the pipeline can be called, while what follows the call (`run = p(); print(run.steps)`, uploading a model)
  is the script's own business and must not run inside each step;
* anywhere in a step process, which the step entrypoint marks with `CONVEYOR_STEP_PROCESS=1` before importing any
  user code: an environment variable, not a module flag, so the step's own children (multiprocessing workers, a
  subprocess that imports the script) inherit it. There the call returns None. A step that really wants to run a
  pipeline in a child process removes the variable from that child's environment.

Pure standard library: the remote side imports it.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from types import FrameType, ModuleType
from typing import Iterator

__all__ = [
    "STEP_PROCESS_ENV",
    "ModuleStopped",
    "importing_user_code",
    "keep_stopped_module",
    "mark_step_process",
    "stop_module_if_importing",
    "why_prevented",
]

STEP_PROCESS_ENV = "CONVEYOR_STEP_PROCESS"

_importing: ContextVar[bool] = ContextVar("conveyor_importing_user_code", default=False)


def mark_step_process() -> None:
    """Called by the step entrypoint before the step's code is imported; inherited by the step's children."""
    os.environ[STEP_PROCESS_ENV] = "1"


@contextmanager
def importing_user_code() -> Iterator[None]:
    """Pipeline calls made while the body imports user modules (module-level `my_pipeline()`) do not run."""
    token = _importing.set(True)
    try:
        yield
    finally:
        _importing.reset(token)


def why_prevented() -> str | None:
    """The reason a pipeline call must not run here, or None when it may."""
    if os.environ.get(STEP_PROCESS_ENV):
        return f"this is a step's process ({STEP_PROCESS_ENV} is set): it imported the module to reach its step"
    if _importing.get():
        return "Conveyor is importing the module to reach a step, a type or a pipeline"
    return None


class ModuleStopped(BaseException):
    """A pipeline call while Conveyor imported user code: the calling module stops executing there.

    A BaseException, so the script's own `except Exception:` around its pipeline call does not swallow it.
    """

    def __init__(self, module: ModuleType | None) -> None:
        super().__init__(f"pipeline call while importing {getattr(module, '__name__', 'a module')}: not run")
        self.module = module


def _innermost_module(frame: FrameType | None) -> ModuleType | None:
    """The module whose top-level code is executing nearest to `frame` (the one calling the pipeline)."""
    while frame is not None:
        if frame.f_code.co_name == "<module>":
            module = sys.modules.get(frame.f_globals.get("__name__", ""))
            if module is not None and module.__dict__ is frame.f_globals:
                return module
        frame = frame.f_back
    return None


def stop_module_if_importing() -> None:
    """Called by a pipeline call that may not run: inside `importing_user_code()`, end the calling module there."""
    if _importing.get():
        raise ModuleStopped(_innermost_module(sys._getframe(2)))


def keep_stopped_module(stopped: ModuleStopped) -> None:
    """Put the stopped module back where the failed import removed it from, with what it defined so far."""
    module = stopped.module
    if module is None:
        return
    name = module.__name__
    sys.modules.setdefault(name, module)
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, sys.modules[name])
