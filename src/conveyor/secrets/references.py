"""`{{name.key}}` references: found and checked without the key or the store; resolved at launch."""

from __future__ import annotations

import re
from typing import Any, Callable

from conveyor.exceptions import ConfigError

#: secret and key names: letters, digits, `_` and `-` (no dots: the dot separates them)
NAME = r"[A-Za-z0-9_-]+"
REFERENCE = re.compile(r"\{\{\s*(" + NAME + r")\.(" + NAME + r")\s*\}\}")


class SecretReferenceError(ConfigError):
    pass


def has_references(value: Any) -> bool:
    return bool(find_references(value))


def find_references(value: Any) -> set[tuple[str, str]]:
    """Every (secret, key) a nested config or settings value refers to."""
    found: set[tuple[str, str]] = set()
    _walk(value, lambda text: found.update(REFERENCE.findall(text)) or text)
    return found


def resolve_references(value: Any, lookup: Callable[[str, str], str]) -> tuple[Any, set[str]]:
    """A copy with every reference replaced by its value, and the set of values used (for redaction)."""
    used: set[str] = set()

    def sub(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            secret = lookup(match.group(1), match.group(2))
            used.add(secret)
            return secret

        return REFERENCE.sub(one, text)

    return _walk(value, sub), used


def _walk(value: Any, on_text: Callable[[str], Any]) -> Any:
    if isinstance(value, str):
        return on_text(value) if "{{" in value else value
    if isinstance(value, dict):
        return {k: _walk(v, on_text) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_walk(v, on_text) for v in value)
    return value


def redact(text: str, values: set[str] | frozenset[str]) -> str:
    """Each secret value (longest first, so one inside another goes too) becomes `****`."""
    for secret in sorted(values, key=len, reverse=True):
        if len(secret) >= 3 and secret in text:
            text = text.replace(secret, "****")
    return text
