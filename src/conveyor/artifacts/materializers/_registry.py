"""Which materializer handles a value: user registrations first, then built-ins, then cloudpickle."""

from __future__ import annotations

import typing
from typing import Any

from conveyor.artifacts.materializers._base import BaseMaterializer
from conveyor.artifacts.materializers._builtin import BUILTIN_MATERIALIZERS, CloudpickleMaterializer

__all__ = ["MISSING", "materializer_for", "register_materializer"]


class _Missing:
    def __repr__(self) -> str:
        return "<no value>"


MISSING: Any = _Missing()

_USER_BY_TYPE: dict[type, type[BaseMaterializer]] = {}
_USER_ORDER: list[type[BaseMaterializer]] = []  # newest first
_CACHE: dict[type, type[BaseMaterializer] | None] = {}
_CACHE_LIMIT = 4096


def register_materializer(cls: type[BaseMaterializer]) -> type[BaseMaterializer]:
    """Make ``cls`` handle its ASSOCIATED_TYPES, ahead of the built-ins; usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, BaseMaterializer)):
        raise TypeError(f"register_materializer expects a BaseMaterializer subclass, got {cls!r}")
    types_ = cls.ASSOCIATED_TYPES
    if not isinstance(types_, tuple) or not types_ or not all(isinstance(t, type) for t in types_):
        raise TypeError(
            f"{cls.__qualname__}.ASSOCIATED_TYPES must be a non-empty tuple of classes, got {types_!r}: "
            "list the types this materializer saves"
        )
    for data_type in types_:
        _USER_BY_TYPE[data_type] = cls
    if cls in _USER_ORDER:
        _USER_ORDER.remove(cls)
    _USER_ORDER.insert(0, cls)
    _CACHE.clear()
    return cls


def materializer_for(data_type: Any = None, value: Any = MISSING) -> type[BaseMaterializer]:
    """Pick by the declared type when a materializer knows it and accepts the value, else by the value's type."""
    declared = _concrete_type(data_type)
    if declared is not None:
        found = _lookup(declared)
        if found is not None and (value is MISSING or found.can_save(value)):
            return found
    if value is not MISSING:
        found = _lookup(type(value))
        if found is not None and found.can_save(value):
            return found
    return CloudpickleMaterializer


def _concrete_type(annotation: Any) -> type | None:
    """The class behind an annotation, or None when it does not pin one down (Any, unions, TypeVars)."""
    if annotation is None or annotation is typing.Any:
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _concrete_type(typing.get_args(annotation)[0])
    if origin is not None:
        return origin if isinstance(origin, type) else None
    supertype = getattr(annotation, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return _concrete_type(supertype)
    return annotation if isinstance(annotation, type) else None


def _lookup(data_type: type) -> type[BaseMaterializer] | None:
    try:
        return _CACHE[data_type]
    except KeyError:
        pass
    except TypeError:  # unhashable metaclass instances
        return _lookup_uncached(data_type)
    found = _lookup_uncached(data_type)
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[data_type] = found
    return found


def _lookup_uncached(data_type: type) -> type[BaseMaterializer] | None:
    if _USER_ORDER:
        # Most specific registration along the MRO wins...
        for klass in getattr(data_type, "__mro__", (data_type,)):
            if klass in _USER_BY_TYPE:
                return _USER_BY_TYPE[klass]
        # ...then ABCs and custom handles_type(), newest registration first.
        for materializer in _USER_ORDER:
            if materializer.handles_type(data_type):
                return materializer
    for materializer in BUILTIN_MATERIALIZERS:
        if materializer.handles_type(data_type):
            return materializer
    return None
