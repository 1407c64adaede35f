"""What a step's cache key knows of its code beyond the function's own source.

Two parts, both cheap enough to compute on every pipeline call:

- the definitions of the step's own module that the function refers to by name (helper functions, classes,
  simple constants), followed transitively, so editing a helper in the same file re-runs the step while editing
  an unrelated step there does not;
- every project module the step's module imports, transitively, hashed whole: a module counts when its file lies
  under the step's code root (the directory the step's module is imported from), never an installed package.
  Imports are read from the source (anywhere in the file, function bodies included), so an edit to a helper module
  re-runs every step whose module reaches it.

Files are hashed and parsed once per (path, mtime, size) within a process. Not covered, by design: data files
read at run time, installed package versions, environment variables, and modules imported dynamically by a
computed name (`importlib.import_module(name)`); `cache_version=` on the step is the escape hatch for those.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import sysconfig
import threading
import types
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["code_fingerprint"]

#: path -> ((mtime_ns, size), sha256 of the bytes, imports as (module or "", level, names))
_FILES: dict[str, tuple[tuple[int, int], str, tuple[tuple[str, int, tuple[str, ...]], ...]]] = {}
_LOCK = threading.Lock()
_SIMPLE = (int, float, complex, str, bytes, bool, type(None))
#: an installed package's own imports are not followed: its version is not part of the key (see the docs)
_INSTALLED = tuple(str(Path(p).resolve()) for p in {sysconfig.get_path(k) for k in ("stdlib", "platstdlib", "purelib",
                                                                                    "platlib")} if p)


def code_fingerprint(func: Callable[..., Any], code_root: str | None) -> str:
    """A hash of the code `func` runs besides its own source: same-module helpers and imported project modules."""
    globals_ = getattr(func, "__globals__", None) or {}
    parts: dict[str, Any] = {"refs": _referenced_definitions(func, globals_)}
    start = globals_.get("__file__")
    if code_root and start and not _is_installed(code_root):
        package = globals_.get("__package__") or ""
        parts["modules"] = _imported_module_hashes(Path(start).resolve(), package, Path(code_root).resolve())
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


# -- definitions in the step's own module -------------------------------------------------------------------------
def _referenced_definitions(func: Callable[..., Any], globals_: dict[str, Any]) -> list[str]:
    """Sources of the same-module functions, classes and simple constants `func` reaches by global name."""
    module = getattr(func, "__module__", None)
    seen: set[int] = {id(func)}
    out: list[str] = []
    pending: list[Any] = [func]
    while pending:
        current = pending.pop()
        for value in _closure_values(current):
            if isinstance(value, _SIMPLE):
                out.append(f"closure:{value!r}")
            elif id(value) not in seen and _defined_in(value, module):
                seen.add(id(value))
                out.append(_source(value))
                pending.append(value)
        for name in sorted(_global_names(current)):
            value = globals_.get(name)
            if isinstance(value, _SIMPLE) or _is_simple_collection(value):
                out.append(f"{name}={value!r}")
            elif value is not None and id(value) not in seen and _defined_in(value, module):
                seen.add(id(value))
                out.append(_source(value))
                pending.append(value)
    return out


def _defined_in(value: Any, module: str | None) -> bool:
    target = getattr(value, "entrypoint", value)  # a Step: its function
    return (isinstance(target, (types.FunctionType, type)) and getattr(target, "__module__", None) == module)


def _code_objects(obj: Any) -> Iterator[types.CodeType]:
    target = getattr(obj, "entrypoint", obj)
    if isinstance(target, type):
        for member in vars(target).values():
            member = getattr(member, "__func__", member)  # staticmethod / classmethod
            if isinstance(member, property):
                member = member.fget
            code = getattr(member, "__code__", None)
            if code is not None:
                yield from _nested(code)
    else:
        code = getattr(target, "__code__", None)
        if code is not None:
            yield from _nested(code)


def _nested(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _nested(const)


def _global_names(obj: Any) -> set[str]:
    return {name for code in _code_objects(obj) for name in code.co_names}


def _closure_values(obj: Any) -> list[Any]:
    target = getattr(obj, "entrypoint", obj)
    values = []
    for cell in getattr(target, "__closure__", None) or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    return values


def _is_simple_collection(value: Any) -> bool:
    return isinstance(value, (tuple, frozenset)) and all(isinstance(v, _SIMPLE) for v in value)


def _source(obj: Any) -> str:
    target = getattr(obj, "entrypoint", obj)
    try:
        return inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        return (code.co_code.hex() + repr(code.co_consts)) if code is not None else repr(target)


# -- imported project modules -------------------------------------------------------------------------------------
def _is_installed(root: str) -> bool:
    resolved = str(Path(root).resolve())
    return any(resolved == p or resolved.startswith(p + os.sep) for p in _INSTALLED) or any(
        part in ("site-packages", "dist-packages") for part in Path(resolved).parts)


def _imported_module_hashes(start: Path, package: str, root: Path) -> dict[str, str]:
    """relative path -> sha256 of every project file reachable from `start` by import (not `start` itself)."""
    found: dict[str, str] = {}
    visited: set[Path] = {start}
    queue: list[tuple[Path, str]] = [(start, package)]
    while queue:
        path, pkg = queue.pop()
        scanned = _scan(path)
        if scanned is None:
            continue
        for name in _imported_names(scanned[1], pkg):
            target = _module_file(root, name)
            if target is None or target in visited:
                continue
            visited.add(target)
            info = _scan(target)
            if info is None:
                continue
            found[target.relative_to(root).as_posix()] = info[0]
            queue.append((target, name if target.name == "__init__.py" else name.rpartition(".")[0]))
    return found


def _scan(path: Path) -> tuple[str, tuple[tuple[str, int, tuple[str, ...]], ...]] | None:
    """(sha256, imports) of a Python file, from the per-process cache while its mtime and size are unchanged."""
    key = str(path)
    try:
        st = os.stat(key)
    except OSError:
        return None
    sig = (st.st_mtime_ns, st.st_size)
    cached = _FILES.get(key)
    if cached is not None and cached[0] == sig:
        return cached[1], cached[2]
    try:
        data = path.read_bytes()
    except OSError:
        return None
    imports: list[tuple[str, int, tuple[str, ...]]] = []
    try:
        tree = ast.parse(data, filename=key)
    except (SyntaxError, ValueError):
        tree = None
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imports += [(alias.name, 0, ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imports.append((node.module or "", node.level, tuple(a.name for a in node.names if a.name != "*")))
    entry = (sig, hashlib.sha256(data).hexdigest(), tuple(imports))
    with _LOCK:
        _FILES[key] = entry
    return entry[1], entry[2]


def _imported_names(imports: tuple[tuple[str, int, tuple[str, ...]], ...], package: str) -> list[str]:
    """Absolute module names an import list may load: each parent package, the module, and `from` submodules."""
    names: list[str] = []
    for module, level, members in imports:
        if level:
            base = package.split(".") if package else []
            if level - 1 > len(base) or not base:
                continue  # a relative import that cannot resolve here
            base = base[: len(base) - (level - 1)]
            module = ".".join(base + ([module] if module else []))
        if not module:
            continue
        parts = module.split(".")
        names += [".".join(parts[: i + 1]) for i in range(len(parts))]
        names += [f"{module}.{m}" for m in members]
    return names


def _module_file(root: Path, name: str) -> Path | None:
    """The file under `root` that importing `name` runs, if it is a project file."""
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None
