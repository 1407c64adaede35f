"""The script the user ran (`__main__`), known everywhere else by its module name (`train` for `python train.py`).

A step process imports the script as `train`, so its classes are `train.Foo` there while the script itself sees
`__main__.Foo`. Rather than pickling every `__main__` class by value (a new, unequal class on each side, and
artifacts only loadable where that class can be rebuilt), both sides agree on the module name:

* what the script defines at module level is recorded and pickled as `train:Foo` (`import_path`, `dumps`);
* in the script's own process `train` is an alias of `__main__` (`alias_main_module`), so `train.Foo` *is*
  `__main__.Foo`: an artifact made by a step process loads as the script's own class, `isinstance` and `==` hold,
  and nothing executes the file a second time;
* elsewhere (a step process, a notebook loading an artifact) `train` is imported with pipeline runs prevented
  (`conveyor.pipelines.run_guard`), so a module-level pipeline call does not run again.

What only exists when the file runs as a script (defined under `if __name__ == "__main__":`, or inside a function)
cannot be imported by name: it travels by value through cloudpickle instead.

Pure standard library until something is pickled: the remote side imports it.
"""

from __future__ import annotations

import ast
import functools
import importlib
import io
import os
import pickle
import sys
import types
from types import ModuleType
from typing import Any, Callable, TypeVar

from conveyor.pipelines.run_guard import ModuleStopped, importing_user_code, keep_stopped_module

T = TypeVar("T")
_CONVEYOR_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep
_MAX_STOPS = 16  # modules stopped at a pipeline call in one import chain

__all__ = [
    "alias_main_module",
    "dumps",
    "import_path",
    "import_script_attr",
    "import_user_module",
    "loads",
    "script_module_name",
    "script_reference",
]


def script_module_name() -> str | None:
    """The name other processes import the running script by, or None when `__main__` is no user file."""
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    if main is None or not file:  # REPL, notebook, `python -c`
        return None
    path = os.path.realpath(file)
    if path.startswith(_CONVEYOR_DIR):  # a step process: its __main__ is Conveyor's entrypoint, not user code
        return None
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:  # `python -m pkg.train`
        name = spec.name
    else:
        name = os.path.splitext(os.path.basename(path))[0]  # as `step_source` names it
    return None if not name or name == "__main__" else name


def alias_main_module() -> str | None:
    """Make `import <script name>` give the running script instead of executing its file a second time.

    Returns the name when the alias holds; None when there is no script or the name is taken by another module
    (then `__main__` objects are not referenced by name at all).
    """
    name = script_module_name()
    if name is None:
        return None
    main = sys.modules["__main__"]
    return name if sys.modules.setdefault(name, main) is main else None


def _is_main_test(test: ast.expr) -> bool:
    """`__name__ == "__main__"` (either order, possibly inside a larger condition)."""
    for node in ast.walk(test):
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Name) and o.id == "__name__" for o in operands) and \
                    any(isinstance(o, ast.Constant) and o.value == "__main__" for o in operands):
                return True
    return False


def _bound_names(statements: list[ast.stmt]) -> set[str]:
    """Names these statements bind in their own scope (not inside the functions and classes they define)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            return
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    for stmt in statements:
        visit(stmt)
    return names


@functools.lru_cache(maxsize=8)
def _main_only_names(path: str, _mtime_ns: int) -> frozenset[str] | None:
    """Names bound under a top-level `if __name__ == "__main__":`; None when the file cannot be read as Python."""
    try:
        with open(path, "rb") as fh:
            tree = ast.parse(fh.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and _is_main_test(stmt.test):
            names |= _bound_names(stmt.body)
    return frozenset(names)


def _script_only_names() -> frozenset[str] | None:
    """`_main_only_names` of the running script; None when there is none or it cannot be read."""
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not file:
        return None
    try:
        return _main_only_names(file, os.stat(file).st_mtime_ns)
    except OSError:
        return None


def script_reference(obj: Any, *, exact: bool = True) -> str | None:
    """The module name under which `obj`, defined in `__main__`, is found by importing the script; else None.

    None too for what importing does not define (bound under `if __name__ == "__main__":`) and for a function using
    such a name (imported, it would fail with a NameError; by value it takes those objects along). With
    `exact=False` a step object whose `entrypoint` is `obj` counts as finding it (how steps are referenced).
    """
    if getattr(obj, "__module__", None) != "__main__":
        return None
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(qualname, str) or not qualname or "<locals>" in qualname:
        return None
    name = alias_main_module()
    if name is None:
        return None
    main = sys.modules["__main__"]
    found: Any = main
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not obj and (exact or getattr(found, "entrypoint", None) is not obj):
        return None
    script_only = _script_only_names()
    if script_only is None or qualname.split(".")[0] in script_only:
        return None
    code = getattr(obj, "__code__", None)
    if code is not None and not script_only.isdisjoint(_code_names(code)):
        return None
    return name


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def import_path(obj: Any) -> str:
    """`module:QualName` for a class or function, naming a script's objects by the script's module name."""
    return f"{script_reference(obj) or obj.__module__}:{obj.__qualname__}"


def _stopping_at_pipeline_calls(action: Callable[[], T]) -> T:
    """Run an import (or an unpickling that imports) with pipeline runs prevented; a module stopped at its
    pipeline call is kept as far as it got, and the action retried (an outer module then imports it as is)."""
    with importing_user_code():
        for _ in range(_MAX_STOPS):
            try:
                return action()
            except ModuleStopped as stopped:
                if stopped.module is None:
                    break
                keep_stopped_module(stopped)
    raise ImportError("a pipeline call stopped the import of user code and the module it was in could not be kept: "
                      'put the call under `if __name__ == "__main__":`')


def import_user_module(name: str) -> ModuleType:
    """Import a module of the user's code; a pipeline call at its module level does not run (see `run_guard`)."""
    alias_main_module()
    return _stopping_at_pipeline_calls(lambda: importlib.import_module(name))


def import_script_attr(module: str, qualname: str) -> Any:
    """How `dumps` pickles a script's module-level class or function: by name, resolved on load."""
    obj: Any = import_user_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@functools.cache
def _pickler_class() -> type:
    import cloudpickle

    class ScriptPickler(cloudpickle.Pickler):  # type: ignore[misc, name-defined]
        """cloudpickle, except that the script's importable classes and functions go by name (see module doc)."""

        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, (type, types.FunctionType)) and getattr(obj, "__module__", None) == "__main__":
                name = script_reference(obj)
                if name is not None:
                    return import_script_attr, (name, obj.__qualname__)
            return super().reducer_override(obj)

    return ScriptPickler


def dumps(obj: Any) -> bytes:
    """cloudpickle's bytes for `obj`, with the running script's importable objects pickled by name."""
    buffer = io.BytesIO()
    _pickler_class()(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    """Unpickle; modules the pickle names are imported with pipeline runs prevented, the script as itself."""
    alias_main_module()
    return _stopping_at_pipeline_calls(lambda: pickle.loads(data))
