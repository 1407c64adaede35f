"""Strict pydantic base classes shared by settings and component configs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """A typo must be an error that lists the valid fields, never a silent drop."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @classmethod
    def field_names(cls) -> list[str]:
        return list(cls.model_fields)


class BaseSettings(StrictModel):
    """Settings attached to a step or pipeline under a settings key."""


def explain_validation_error(model: type[BaseModel], err: ValidationError, where: str) -> str:
    """Turn pydantic's error into one message that names the valid fields."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(value)"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown field {loc!r}")
        else:
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            lines.append(f"{loc}: {msg}")
    valid = ", ".join(model.model_fields) or "(none)"
    return f"{where}: " + "; ".join(lines) + f". Valid fields of {model.__name__}: {valid}"


def validate_strict(model: type[StrictModel], data: Any, where: str) -> StrictModel:
    """Validate `data` into `model`, raising ConfigError with a helpful message."""
    from conveyor.exceptions import ConfigError

    if isinstance(data, model):
        return data
    if isinstance(data, BaseModel):
        data = data.model_dump(exclude_unset=True)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a {model.__name__} or a dict, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        refused = tuple(dict.fromkeys(str(e["loc"][0]) for e in err.errors() if e["loc"]))
        raise ConfigError(explain_validation_error(model, err, where), refused) from None
