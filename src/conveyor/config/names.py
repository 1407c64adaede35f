"""The one pattern every user-given name must match, checked before anything is written.

Step names, invocation ids and output names become directories of the artifact store, and component, stack and
secret names are printed by the CLI: a name with `/`, `..`, a newline or rich markup in it could write outside the
store, make two steps share a folder, or garble what the terminal shows. Kept free of pydantic: the CLI and the
step's remote side may import it cheaply.
"""

from __future__ import annotations

import re

from conveyor.exceptions import ConfigError

__all__ = ["MAX_NAME_LENGTH", "NAME_PATTERN", "NAME_RULES", "NO_DOT_PATTERN", "NO_DOT_RULES", "InvalidNameError",
           "check_name", "is_valid_name", "name_from_function"]

MAX_NAME_LENGTH = 128
#: a letter, digit or `_` first (so never `.`, `..`, a hidden file or something that reads as a CLI option), then
#: letters, digits, `_`, `.` and `-`; 1 to 128 characters in all
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
#: secret and key names: the same without '.', which separates them in a reference `{{name.key}}`
NO_DOT_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$"


def _rules(pattern: str, chars: str) -> str:
    return (f"names must match {pattern}: 1 to {MAX_NAME_LENGTH} letters, digits, {chars}, starting with a letter, "
            "digit or '_'")


NAME_RULES = _rules(NAME_PATTERN, "'_', '.' and '-'")
NO_DOT_RULES = _rules(NO_DOT_PATTERN, "'_' and '-' (no '.')")
_NAME = re.compile(NAME_PATTERN)
_NO_DOT = re.compile(NO_DOT_PATTERN)
_SHOWN = 60  # characters of a refused name quoted in the error; the rest is counted


class InvalidNameError(ConfigError):
    """A name that does not match NAME_PATTERN; the message quotes the pattern and suggests a name that does."""


def is_valid_name(value: object, *, allow_dot: bool = True) -> bool:
    """Whether `value` is a string matching the pattern (without '.' when `allow_dot` is False)."""
    if not isinstance(value, str):
        return False
    # fullmatch: `$` alone would let a trailing newline through
    return bool((_NAME if allow_dot else _NO_DOT).fullmatch(value))


def check_name(kind: str, value: object, *, allow_dot: bool = True, where: str = "") -> str:
    """Return `value` if it is a valid `kind` name ("step", "output", "stack", ...), else raise InvalidNameError."""
    if is_valid_name(value, allow_dot=allow_dot):
        return value  # type: ignore[return-value]
    prefix = f"{where}: " if where else ""
    if not isinstance(value, str):
        raise InvalidNameError(f"{prefix}{kind} name must be a string, got {type(value).__name__}; "
                               f"{NAME_RULES if allow_dot else NO_DOT_RULES}")
    rules = NAME_RULES if allow_dot else NO_DOT_RULES
    suggestion = _suggest(value, allow_dot)
    if len(value) > MAX_NAME_LENGTH:
        fix = f"; shorten it to at most {MAX_NAME_LENGTH} characters"
    else:
        fix = f"; rename it, e.g. to {suggestion!r}" if suggestion else ""
    raise InvalidNameError(f"{prefix}invalid {kind} name {_shown(value)}: {rules}{fix}")


def name_from_function(kind: str, func_name: str) -> str:
    """A step's or pipeline's default name: the function's, made to fit the pattern when it cannot (`<lambda>`
    becomes `lambda`); a name the user gives is checked as given, never changed."""
    if is_valid_name(func_name):
        return func_name
    fitted = _suggest(func_name, True)
    if fitted is None:
        check_name(kind, func_name, where=f"the function's name: pass {kind}(name=...)")
    return fitted  # type: ignore[return-value]


def _shown(value: str) -> str:
    if not value:
        return "'' (empty)"
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value)} characters)"


def _suggest(value: str, allow_dot: bool) -> str | None:
    allowed = r"[^A-Za-z0-9_.-]" if allow_dot else r"[^A-Za-z0-9_-]"
    candidate = re.sub(allowed, "_", value).lstrip(".-")[:MAX_NAME_LENGTH].strip("_") or ""
    return candidate if candidate and is_valid_name(candidate, allow_dot=allow_dot) else None
