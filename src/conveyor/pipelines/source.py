"""How the remote side finds a step's code: an importable module path, or the function pickled by value."""

from __future__ import annotations

import base64
import hashlib
import inspect
import sys
from pathlib import Path
from typing import Any, Callable


def _module_file_name(module_name: str) -> tuple[str, str | None]:
    """(importable module name, code root) for a module; `__main__` becomes its script's stem."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if not file:
        return module_name, None
    path = Path(file).resolve()
    if module_name == "__main__":
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name:  # run with `python -m pkg.mod`
            module_name = spec.name
        else:
            return path.stem, str(path.parent)
    depth = len(module_name.split("."))
    root = path.parent if path.name != "__init__.py" else path.parent.parent
    for _ in range(depth - 1):
        root = root.parent
    return module_name, str(root)


def step_source(step: Any) -> dict[str, Any]:
    """Reference the step by import path when importing its module defines it, else pickle the function by value.

    A step of the running script (`__main__`) is referenced by the script's module name only when it is defined at
    module level: one under `if __name__ == "__main__":` does not exist when the script is imported, so it travels
    by value like one defined inside a function (as does one that uses a name bound only there).
    """
    func: Callable[..., Any] = step.entrypoint
    module_name, code_root = _module_file_name(func.__module__)
    qualname = func.__qualname__
    if "<locals>" not in qualname and code_root is not None and _found_by_import(step, func):
        return {"module": module_name, "attr": qualname, "code_root": code_root}
    return _by_value(step, func, module_name, code_root)


def _found_by_import(step: Any, func: Callable[..., Any]) -> bool:
    if func.__module__ == "__main__":
        from conveyor.pipelines.main_script import script_reference

        return script_reference(func, exact=False) is not None
    obj: Any = sys.modules.get(func.__module__)
    for part in func.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is step or getattr(obj, "entrypoint", None) is func or obj is func


def _by_value(step: Any, func: Callable[..., Any], module_name: str, code_root: str | None) -> dict[str, Any]:
    """The function pickled; a step that cannot be is refused now when it goes to a step operator (in-process it
    runs from the function itself, so only a later `conveyor run resume` in another process would need it)."""
    from conveyor.pipelines.main_script import dumps

    qualname = func.__qualname__
    source: dict[str, Any] = {"code_root": code_root, "module": module_name, "attr": qualname}
    try:
        return {**source, "pickled": base64.b64encode(dumps(func)).decode()}
    except Exception as err:  # noqa: BLE001 - cloudpickle raises TypeError, PicklingError, RecursionError, ...
        where = ("inside a function" if "<locals>" in qualname
                 else 'under `if __name__ == "__main__":` (or uses names bound only there)'
                 if func.__module__ == "__main__"
                 else f"where importing {func.__module__} does not reach it")
        reason = (f"step {step.name!r} is defined {where}, so it must travel to its step's process pickled by value, "
                  f"and cloudpickle cannot pickle it ({type(err).__name__}: {err}): define the step at the module "
                  "level of its file, or make what it refers to picklable")
    if step.step_operator is None or step.step_operator is False:
        return {**source, "unpicklable": reason}
    from conveyor.exceptions import PipelineDefinitionError

    raise PipelineDefinitionError(reason)


def load_step_function(source: dict[str, Any]) -> Callable[..., Any]:
    """Inverse of `step_source`, run on the remote side (and by `conveyor run resume`).

    Importing the step's module runs its module-level code; a pipeline call there does not run (see `run_guard`).
    """
    root = source.get("code_root")
    if root and root not in sys.path and Path(root).is_dir():
        sys.path.insert(0, root)
    from conveyor.pipelines.main_script import import_user_module, loads

    if "unpicklable" in source:
        from conveyor.exceptions import PipelineDefinitionError

        raise PipelineDefinitionError(source["unpicklable"])
    if "pickled" in source:
        return loads(base64.b64decode(source["pickled"]))  # type: ignore[no-any-return]
    obj: Any = import_user_module(source["module"])
    for part in source["attr"].split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(
                f"cannot import step {source['attr']!r}: module {source['module']!r} has no such name once "
                'imported (renamed or moved since, or defined under `if __name__ == "__main__":`); define it at '
                "module level and run the pipeline again") from None
    return getattr(obj, "entrypoint", obj)  # type: ignore[no-any-return]


def code_hash(func: Callable[..., Any]) -> str:
    """Changes when the function's source changes; bytecode as a fallback when there is no source."""
    try:
        text = inspect.getsource(func).encode()
    except (OSError, TypeError):
        code = getattr(func, "__code__", None)
        text = code.co_code + repr(code.co_consts).encode() if code else repr(func).encode()
    return hashlib.sha256(text).hexdigest()[:32]
