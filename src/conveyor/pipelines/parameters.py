"""Step and pipeline parameters checked against the function's type hints when the pipeline is compiled.

A wrong parameter (`scale="not-a-float"` for `scale: float`) must fail before anything runs, not inside a step on
a cluster an hour later. A value that already fits (the light `type_checks`, no pydantic) is kept as it is; any
other value goes through pydantic's `TypeAdapter`, which coerces as ZenML does (`"3"` for an `int`, a list for a
`tuple`) or refuses it. The coerced value is what the step receives when it stays JSON-serializable (the snapshot
stores parameters as JSON); otherwise the value as given, which pydantic accepted.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, NoReturn

from conveyor.exceptions import PipelineDefinitionError
from conveyor.steps.type_checks import describe_type, mismatch

__all__ = ["validated_parameter"]


def validated_parameter(value: Any, annotation: Any, where: str, name: str) -> Any:
    """`value` as the function will receive it, or PipelineDefinitionError naming `where`, `name` and the type."""
    if annotation is inspect.Parameter.empty or mismatch(value, annotation) is None:
        return value
    from pydantic import TypeAdapter, ValidationError

    try:
        adapter = TypeAdapter(annotation)
    except Exception:  # noqa: BLE001 - a type pydantic cannot build a schema for: the light check's word stands
        adapter = None
    if adapter is None:
        _refuse(value, annotation, where, name, "")
    try:
        coerced = adapter.validate_python(value)
    except ValidationError as err:
        first = err.errors()[0] if err.errors() else {"msg": str(err), "loc": ()}
        loc = "".join(f"[{p!r}]" for p in first.get("loc", ()))
        _refuse(value, annotation, where, name, f" ({loc + ': ' if loc else ''}{first['msg']})")
    try:
        json.dumps(coerced)
    except (TypeError, ValueError):
        return value
    return coerced


def _refuse(value: Any, annotation: Any, where: str, name: str, detail: str) -> NoReturn:
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise PipelineDefinitionError(
        f"{where}: parameter {name!r} expects {describe_type(annotation)}, got {type(value).__name__} {shown}"
        f"{detail}: pass a {describe_type(annotation)}, or change the parameter's type hint")
