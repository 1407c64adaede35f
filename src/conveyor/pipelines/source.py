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
    """Reference the step by import path when that resolves to it, else pickle the function by value."""
    func: Callable[..., Any] = step.entrypoint
    module_name, code_root = _module_file_name(func.__module__)
    qualname = func.__qualname__
    if "<locals>" not in qualname and code_root is not None:
        module = sys.modules.get(func.__module__)
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if obj is step or getattr(obj, "entrypoint", None) is func or obj is func:
            return {"module": module_name, "attr": qualname, "code_root": code_root}
    import cloudpickle

    return {"pickled": base64.b64encode(cloudpickle.dumps(func)).decode(), "code_root": code_root,
            "module": module_name, "attr": qualname}


def load_step_function(source: dict[str, Any]) -> Callable[..., Any]:
    """Inverse of `step_source`, run on the remote side."""
    root = source.get("code_root")
    if root and root not in sys.path and Path(root).is_dir():
        sys.path.insert(0, root)
    if "pickled" in source:
        import cloudpickle

        return cloudpickle.loads(base64.b64decode(source["pickled"]))
    import importlib

    obj: Any = importlib.import_module(source["module"])
    for part in source["attr"].split("."):
        obj = getattr(obj, part)
    return getattr(obj, "entrypoint", obj)


def code_hash(func: Callable[..., Any]) -> str:
    """Changes when the function's source changes; bytecode as a fallback when there is no source."""
    try:
        text = inspect.getsource(func).encode()
    except (OSError, TypeError):
        code = getattr(func, "__code__", None)
        text = code.co_code + repr(code.co_consts).encode() if code else repr(func).encode()
    return hashlib.sha256(text).hexdigest()[:32]
