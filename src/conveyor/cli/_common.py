"""Shared CLI helpers: `--field=value` parsing, the project context, consoles and formatting.

Nothing heavy is imported at module level so that `conveyor --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

    from conveyor.context import Context


# -- component types (strings here, so the CLI does not import pydantic to print its help) -----------------
@dataclass(frozen=True)
class Kind:
    """A component type as the CLI names it."""

    value: str  # "step_operator", as stored
    cli: str  # "step-operator", as typed
    label: str  # "step operator", as written in sentences


ORCHESTRATOR = Kind("orchestrator", "orchestrator", "orchestrator")
ARTIFACT_STORE = Kind("artifact_store", "artifact-store", "artifact store")
STEP_OPERATOR = Kind("step_operator", "step-operator", "step operator")
CONTAINER_REGISTRY = Kind("container_registry", "container-registry", "container registry")
KINDS = (ORCHESTRATOR, ARTIFACT_STORE, STEP_OPERATOR, CONTAINER_REGISTRY)


# -- errors ----------------------------------------------------------------------------------------------
class UserError(click.ClickException):
    """A mistake the user can fix: one red line on stderr, exit status 1, no traceback."""

    exit_code = 1

    def show(self, file: Any = None) -> None:  # noqa: ARG002 - click's signature
        err_console().print(f"Error: {self.message}", style="bold red", markup=False, highlight=False,
                            soft_wrap=True)


def fail(message: str) -> NoReturn:
    raise UserError(message)


# -- consoles --------------------------------------------------------------------------------------------
_consoles: dict[bool, "Console"] = {}


def _make_console(stderr: bool) -> "Console":
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (tests, `| grep`) must not be folded at 80 columns.
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", "0") or 0) or 200
    return Console(stderr=stderr, width=width, highlight=False)


def console() -> "Console":
    if False not in _consoles:
        _consoles[False] = _make_console(False)
    return _consoles[False]


def err_console() -> "Console":
    if True not in _consoles:
        _consoles[True] = _make_console(True)
    return _consoles[True]


def say(message: str, style: str | None = None) -> None:
    console().print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """A warning that does not stop the command."""
    err_console().print(message, style="yellow", markup=False, highlight=False, soft_wrap=True)


def table(*columns: str, title: str | None = None) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left")
    for col in columns:
        t.add_column(col, overflow="fold")
    return t


def show(renderable: Any) -> None:
    console().print(renderable)


# -- --output table|json ---------------------------------------------------------------------------------
OUTPUT_FORMATS = ("table", "json")
F = TypeVar("F", bound=Callable[..., Any])


def output_option(func: F) -> F:
    """`--output table|json` on a list or describe command (long form only: `-o` names the orchestrator in
    `stack register`); the command takes it as its `output` parameter."""
    return click.option("--output", "output", type=click.Choice(OUTPUT_FORMATS, case_sensitive=False),
                        default="table", show_default=True,
                        help="table for people; json for scripts: standard output then holds only the JSON.")(func)


def emit(data: Any, render_table: Callable[[], None], output: str | None = None) -> None:
    """Print `data` as JSON when the command was given `--output json`, else call `render_table`.

    The JSON has the keys the data gives it in a fixed order, ISO 8601 UTC times and no rich markup; whatever
    else a command says goes to standard error."""
    if output is None:
        current = click.get_current_context(silent=True)
        output = str((current.params if current else {}).get("output") or "table")
    if output.lower() != "json":
        render_table()
        return
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums, times and paths as plain JSON values (times as ISO 8601 in UTC)."""
    import dataclasses
    from enum import Enum
    from pathlib import PurePath

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return to_jsonable(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [to_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    from pydantic_core import to_jsonable_python

    try:
        return to_jsonable_python(value)
    except Exception:  # noqa: BLE001 - anything else is shown as text rather than failing the command
        return str(value)


def iso_time(ts: datetime | None) -> str | None:
    """A store timestamp (naive UTC) as ISO 8601 with its UTC offset, for JSON."""
    if ts is None:
        return None
    aware = ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    return aware.isoformat()


# -- project ---------------------------------------------------------------------------------------------
def get_ctx() -> "Context":
    """The project's context, with the `default` stack created on first use."""
    from conveyor.context import get_context

    ctx = get_context()
    ctx.ensure_defaults()
    return ctx


def component_record(ctx: "Context", kind: Kind, name: str) -> dict[str, Any]:
    """The stored component, or a clear error listing the registered ones and how to register this one."""
    from conveyor.stack.lifecycle import get_component

    return get_component(ctx.store, kind.value, name)


def stacks_using(ctx: "Context", component_id: str) -> list[str]:
    from conveyor.stack.lifecycle import stacks_using as using

    return using(ctx.store, component_id)


def mask_url(url: str) -> str:
    """A store URL fit to print: the password hidden (the store's own errors print it the same way)."""
    from conveyor.store.errors import mask_url as mask

    return mask(url)


# -- --field=value -----------------------------------------------------------------------------------------
def parse_value(raw: str) -> Any:
    """JSON for lists and objects; anything else (a secret reference `{{name.key}}` too) stays a string."""
    text = raw.strip()
    if text[:1] in ("[", "{") and not text.startswith("{{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            fail(f"invalid JSON value {raw!r}: {err.msg} at column {err.colno}. "
                 "Quote it for the shell, e.g. --field='[\"a\", \"b\"]'")
    return raw


def parse_field_args(tokens: Sequence[str], positional_name: str | None = "NAME") -> tuple[list[str], dict[str, Any]]:
    """Split `NAME --a=1 --b 2` into positionals and fields; `--flag` alone means true."""
    positionals: list[str] = []
    fields: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok.startswith("--") and len(tok) > 2:
            key, eq, value = tok[2:].partition("=")
            if not eq:
                if i < len(tokens) and not tokens[i].startswith("--"):
                    value = tokens[i]
                    i += 1
                else:
                    value = "true"
            if not key:
                fail(f"malformed option {tok!r}: write config fields as --field_name=value")
            if key in fields:
                fail(f"field {key!r} given twice: give each --{key}=... once")
            fields[key] = parse_value(value)
        elif tok.startswith("-") and len(tok) > 1 and not _is_number(tok):
            fail(f"unknown option {tok!r}: config fields are written --field_name=value")
        else:
            positionals.append(tok)
    return positionals, fields


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


#: what a secret config value shows as, in tables and in JSON alike
SECRET_MASK = "********"


def config_for_display(config_class: Any, stored: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(field, value, is_default) for every field; secrets masked."""
    out = []
    secret_types = _secret_fields(config_class)
    for name, field in config_class.model_fields.items():
        if name in stored:
            value = SECRET_MASK if name in secret_types else _short(stored[name])
            out.append((name, value, False))
        else:
            default = field.get_default(call_default_factory=True) if not field.is_required() else "(required)"
            out.append((name, _short(default), True))
    return out


def config_summary(ctx: "Context", kind: Kind, record: dict[str, Any]) -> str:
    """`field=value, ...` for the fields set on a component (defaults left out)."""
    from conveyor.exceptions import ConveyorError

    config = record["config"] or {}
    try:
        config_class = ctx.registry.get(kind.value, record["flavor"]).config_class
    except ConveyorError:
        return ", ".join(f"{k}={_short(v)}" for k, v in config.items()) or "(defaults)"
    rows = config_for_display(config_class, config)
    return ", ".join(f"{k}={v}" for k, v, is_default in rows if not is_default) or "(defaults)"


def config_values(ctx: "Context", kind: Kind, record: dict[str, Any]) -> dict[str, Any]:
    """The fields set on a component (defaults left out) as values, for `--output json`; secrets masked as in
    the tables."""
    from conveyor.exceptions import ConveyorError

    config = dict(record["config"] or {})
    try:
        secret = _secret_fields(ctx.registry.get(kind.value, record["flavor"]).config_class)
    except ConveyorError:
        return config
    return {k: SECRET_MASK if k in secret else v for k, v in config.items()}


def _secret_fields(config_class: Any) -> set[str]:
    from conveyor.stack.flavor_description import secret_field_names

    return secret_field_names(config_class)


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


# -- time ------------------------------------------------------------------------------------------------
def utcnow() -> datetime:
    """Naive UTC, like the store's timestamps."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def fmt_time(ts: datetime | None) -> str:
    if ts is None:
        return "-"
    return ts.replace(tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")
