"""Does a value fit a type annotation? A light check for step outputs, run wherever the step ran.

The remote side of a step must not import pydantic, so outputs are checked here with the standard library only:
builtins and classes by `isinstance`, `Optional`/`Union`, `Literal`, `Annotated`, `Any`, and the containers
(`list`, `tuple`, `dict`, `set`, `frozenset` and their `collections.abc` forms) by their own type and a sample of
their elements. What the checker does not understand (a TypeVar, a forward reference left as a string, a protocol
that is not runtime-checkable) passes: a false alarm would fail a correct step.

Numbers follow Python's typing rules, widened to the numeric tower so numpy scalars fit: `int` takes any
`numbers.Integral` (numpy.int64 too), `float` any `numbers.Real` (an int, numpy.float32), `complex` any
`numbers.Complex`.
"""

from __future__ import annotations

import collections.abc
import itertools
import numbers
import types
import typing
from typing import Any, Annotated, Callable, Literal, Mapping, Union, get_args, get_origin

__all__ = ["OutputTypeError", "check_outputs", "describe_type", "mismatch"]

#: elements of a container looked at; enough to catch a wrong element type, cheap for a list of a million
SAMPLE = 32

_NUMBERS: dict[type, type] = {int: numbers.Integral, float: numbers.Real, complex: numbers.Complex}


class OutputTypeError(TypeError):
    """A step returned a value that does not fit its return annotation; raised before anything is stored."""


def describe_type(tp: Any) -> str:
    """`int`, `list[str]`, `Optional[float]`: as the user wrote it, without module prefixes for builtins."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
    return str(tp).replace("typing.", "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: Any) -> str:
    return f"{describe_type(type(value))} {_short(value)}"


def mismatch(value: Any, tp: Any) -> str | None:
    """None when `value` fits `tp` (or the check cannot tell); else what was found instead, for the message."""
    try:
        return _mismatch(value, tp)
    except Exception:  # noqa: BLE001 - an annotation we cannot evaluate is not the step's failure
        return None


def _mismatch(value: Any, tp: Any) -> str | None:
    if tp is Any or tp is object or isinstance(tp, (str, typing.TypeVar, typing.ForwardRef)):
        return None
    if tp is None or tp is type(None):
        return None if value is None else _got(value)
    supertype = getattr(tp, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return _mismatch(value, supertype)
    origin = get_origin(tp)
    if origin is Annotated:
        return _mismatch(value, get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return None if any(_mismatch(value, arg) is None for arg in get_args(tp)) else _got(value)
    if origin is Literal:
        return None if value in get_args(tp) else _got(value)
    if origin is None:
        return _instance(value, tp)
    return _generic(value, origin, get_args(tp))


def _instance(value: Any, tp: Any) -> str | None:
    if not isinstance(tp, type):
        return None
    check = _NUMBERS.get(tp, tp)
    try:
        return None if isinstance(value, check) else _got(value)
    except TypeError:  # a protocol that is not runtime-checkable, a special form
        return None


def _generic(value: Any, origin: Any, args: tuple[Any, ...]) -> str | None:
    if origin is type:
        return None if isinstance(value, type) else _got(value)
    if origin in (collections.abc.Callable,):
        return None if callable(value) else _got(value)
    if not isinstance(origin, type):
        return None
    try:
        if not isinstance(value, origin):
            return _got(value)
    except TypeError:
        return None
    if not args:
        return None
    if origin is tuple:
        return _tuple(value, args)
    if isinstance(value, Mapping) and len(args) == 2:
        for i, (k, v) in enumerate(value.items()):
            if i >= SAMPLE:
                break
            for part, tp, label in ((k, args[0], "key"), (v, args[1], "value")):
                found = _mismatch(part, tp)
                if found is not None:
                    return f"{describe_type(type(value))} whose {label} {_short(k)} is {found}"
        return None
    if isinstance(value, collections.abc.Collection) and not isinstance(value, (str, bytes)) and len(args) == 1:
        ordered = isinstance(value, collections.abc.Sequence)
        for i, item in enumerate(itertools.islice(value, SAMPLE)):  # a collection: iterating consumes nothing
            found = _mismatch(item, args[0])
            if found is not None:
                where = f"element [{i}]" if ordered else "an element"
                return f"{describe_type(type(value))} whose {where} is {found}"
    return None


def _tuple(value: tuple[Any, ...], args: tuple[Any, ...]) -> str | None:
    if len(args) == 2 and args[1] is Ellipsis:
        types_ = [args[0]] * min(len(value), SAMPLE)
    elif args == ((),):  # tuple[()]
        types_ = []
        if value:
            return f"a tuple of {len(value)}"
    else:
        if len(value) != len(args):
            return f"a tuple of {len(value)} ({_short(value)})"
        types_ = list(args)
    for i, (item, tp) in enumerate(zip(value, types_)):
        found = _mismatch(item, tp)
        if found is not None:
            return f"tuple whose element [{i}] is {found}"
    return None


def check_outputs(step_name: str, func: Callable[..., Any], values: Mapping[str, Any]) -> None:
    """Each output against its declared type; the first that does not fit fails the step, naming both types."""
    from conveyor.steps.outputs import output_specs

    declared = {spec.name: spec.type for spec in output_specs(func)}
    for name, value in values.items():
        tp = declared.get(name, Any)
        found = mismatch(value, tp)
        if found is not None:
            raise OutputTypeError(
                f"step {step_name!r} output {name!r} is declared {describe_type(tp)} but the step returned "
                f"{found}: return a {describe_type(tp)}, or change the step's return annotation")
