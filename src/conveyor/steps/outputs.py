"""Reading a step's inputs and outputs off its signature."""

from __future__ import annotations

import inspect
import typing
import weakref
from dataclasses import dataclass
from typing import Any, Annotated, Callable, get_args, get_origin

DEFAULT_OUTPUT = "output"


@dataclass(frozen=True)
class OutputSpec:
    name: str
    type: Any
    named: bool = False  # by `Annotated[T, "name"]`: the artifact's name too (else `{pipeline}::{step}::{output}`)


#: resolved hints per function: a step called a thousand times in a run resolves its annotations once
_RESOLVED: "weakref.WeakKeyDictionary[Callable[..., Any], dict[str, Any]]" = weakref.WeakKeyDictionary()


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return _RESOLVED[func]
    except (KeyError, TypeError):  # TypeError: an object that takes no weak reference
        pass
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # forward references we cannot resolve (yet: not cached): fall back to raw annotations
        return dict(getattr(func, "__annotations__", {}))
    try:
        _RESOLVED[func] = hints
    except TypeError:
        pass
    return hints


def _named(tp: Any) -> tuple[Any, str | None]:
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        names = [m for m in meta if isinstance(m, str)]
        return base, (names[0] if names else None)
    return tp, None


def output_specs(func: Callable[..., Any]) -> tuple[OutputSpec, ...]:
    """`-> T` gives "output"; `-> Annotated[T, "name"]` names it; a tuple of them gives several."""
    hints = _hints(func)
    if "return" not in hints:
        return (OutputSpec(DEFAULT_OUTPUT, Any),)
    ret = hints["return"]
    if ret is None or ret is type(None):
        return ()
    base, name = _named(ret)
    if name is None and get_origin(base) is tuple:
        args = get_args(base)
        if args and args[-1] is not Ellipsis:
            specs = []
            for i, arg in enumerate(args):
                arg_base, arg_name = _named(arg)
                specs.append(OutputSpec(f"{DEFAULT_OUTPUT}_{i}" if arg_name is None else arg_name, arg_base,
                                        arg_name is not None))
            names = [_checked(s.name, func) for s in specs]
            if len(set(names)) != len(names):
                raise TypeError(f"step {func.__name__!r} declares duplicate output names {names}")
            return tuple(specs)
    return (OutputSpec(DEFAULT_OUTPUT if name is None else _checked(name, func), base, name is not None),)


def _checked(name: str, func: Callable[..., Any]) -> str:
    """Output names become directories of the artifact store: `../x` must never get that far."""
    from conveyor.config.names import check_name

    return check_name("output", name, where=f"step {getattr(func, '__name__', func)!r}")


def input_types(func: Callable[..., Any]) -> dict[str, Any]:
    hints = _hints(func)
    return {n: _named(hints.get(n, Any))[0] for n in inspect.signature(func).parameters}
