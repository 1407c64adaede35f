"""The materializer contract and the small types every materializer module shares."""

from __future__ import annotations

import types
from typing import Any, ClassVar, NamedTuple

from conveyor.artifacts.store import ArtifactStore
from conveyor.exceptions import ConveyorError
from conveyor.pipelines.main_script import import_path as script_aware_import_path
from conveyor.pipelines.main_script import import_user_module

__all__ = [
    "ArtifactCorruptedError",
    "ArtifactMeta",
    "BaseMaterializer",
    "CannotMaterialize",
    "import_path",
    "load_import_path",
]


class ArtifactCorruptedError(ConveyorError):
    """Stored bytes no longer match what was written; the artifact must be produced again."""


class CannotMaterialize(Exception):
    """Raised by ``save`` when this value turns out not to fit; saving falls back to cloudpickle."""


class ArtifactMeta(NamedTuple):
    """What the metadata store needs to find the artifact's loader and check it later."""

    materializer: str
    data_type: str
    size: int
    checksum: str


class BaseMaterializer:
    """Writes one value into a directory of the store and reads it back.

    ``uri`` is a directory that exists and is empty when ``save`` runs (a
    temporary one that is renamed afterwards, so never persist ``uri`` itself).
    """

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = ()

    def __init__(self, uri: str, store: ArtifactStore) -> None:
        self.uri = uri.rstrip("/")
        self.store = store

    @classmethod
    def handles_type(cls, data_type: type) -> bool:
        """Whether values declared as ``data_type`` belong here; overridable for duck-typed families."""
        return any(_is_subclass(data_type, t) for t in cls.ASSOCIATED_TYPES)

    @classmethod
    def can_save(cls, value: Any) -> bool:
        """A per-value veto, for types whose instances only sometimes fit the format."""
        return True

    def path_for(self, name: str) -> str:
        """URI of a file inside this artifact's directory."""
        return f"{self.uri}/{name}"

    def save(self, data: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement save()")

    def load(self, data_type: type) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement load()")


def _is_subclass(candidate: Any, base: type) -> bool:
    try:
        return isinstance(candidate, type) and issubclass(candidate, base)
    except TypeError:
        return False


def import_path(obj: Any) -> str:
    """``module:QualName``, the form that survives nested classes (unlike dotted paths).

    A class of the running script is named by the script's module name (``train:Foo``, not ``__main__:Foo``), so
    a step's process and later readers can import it (see ``conveyor.pipelines.main_script``).
    """
    return script_aware_import_path(obj)


_RESOLVED: dict[str, Any] = {}


def load_import_path(path: str) -> Any:
    """Inverse of :func:`import_path`; also accepts ``module.attr``. Results are cached."""
    try:
        return _RESOLVED[path]
    except KeyError:
        pass
    obj = _resolve(path)
    _RESOLVED[path] = obj
    return obj


def _resolve(path: str) -> Any:
    module_name, sep, qualname = path.partition(":")
    if not sep:
        module_name, _, qualname = path.rpartition(".")
    if not module_name or not qualname:
        raise ImportError(f"{path!r} is not an import path: expected 'package.module:QualName'")
    try:
        obj: Any = import_user_module(module_name)  # a module-level pipeline call there does not run
    except ImportError as exc:
        raise ImportError(f"cannot import module {module_name!r} for {path!r} ({exc}): install it or make it importable") from exc
    for attr in qualname.split("."):
        obj = _getattr_or_builtin_type(obj, attr, path)
    return obj


def _getattr_or_builtin_type(obj: Any, attr: str, path: str) -> Any:
    try:
        return getattr(obj, attr)
    except AttributeError:
        pass
    # NoneType & co. report module "builtins" but live in ``types``.
    if getattr(obj, "__name__", None) == "builtins" and hasattr(types, attr):
        return getattr(types, attr)
    raise ImportError(f"{path!r} names {attr!r}, which does not exist: was it renamed, or defined inside a function?")
