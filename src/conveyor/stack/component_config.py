"""Checking a component's config before it is saved, and what of it is saved.

One place for what `conveyor <type> register|update|remove-attribute` and `Client.register_component` /
`update_component` validate, so every way in refuses the same mistakes with the same words.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from conveyor.exceptions import ConfigError

__all__ = ["config_to_store", "field_hints", "plain_secret_fields", "validate_config"]


def field_hints(unknown: Iterable[str], valid: list[str]) -> str:
    """`'x' (did you mean 'y'?), 'z'` for misspelt field names."""
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key.replace("-", "_"), valid, n=1, cutoff=0.6)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(hints)


def validate_config(config_class: Any, data: dict[str, Any], where: str) -> Any:
    """Validate before anything is written; an unknown field names the valid ones (and the likely one)."""
    from conveyor.config.base import validate_strict

    valid = list(config_class.model_fields)
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {field_hints(unknown, valid)}. "
                          f"Valid fields of {config_class.__name__}: {', '.join(valid) or '(none)'}")
    return validate_strict(config_class, data, where)


def config_to_store(model: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """The normalised values the user set (`10m` -> 600.0); secrets keep their raw value, not pydantic's mask."""
    from pydantic import SecretBytes, SecretStr

    dumped = model.model_dump(mode="json", exclude_unset=True)
    for key in dumped:
        if isinstance(getattr(model, key, None), (SecretStr, SecretBytes)):
            dumped[key] = raw[key]
    return dumped


def plain_secret_fields(model: Any, given: dict[str, Any]) -> tuple[str, ...]:
    """The secret fields (SecretStr, SecretBytes) among `given` set to a plain value rather than a `{{name.key}}`
    reference: the store keeps such a value as given, so the CLI says how to keep it in a secret instead."""
    from conveyor.secrets.references import has_references
    from conveyor.stack.flavor_description import secret_field_names

    secret = secret_field_names(type(model))
    return tuple(sorted(key for key, value in given.items()
                        if key in secret and value is not None and not has_references(value)))
