"""Settings keys, their validation, and pipeline-under-step merging."""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from pydantic import BaseModel

from conveyor.config.base import BaseSettings, validate_strict
from conveyor.config.resources import ResourceSettings
from conveyor.config.merge import merge_settings
from conveyor.config.recorded import RESOURCES
from conveyor.exceptions import ConfigError
from conveyor.config.docker_settings import SETTINGS_KEY as DOCKER, DockerSettings

__all__ = ["docker_settings", "environment_settings", "merge_settings", "normalize_settings", "operator_settings", "resource_settings"]


class SettingsFlavor(Protocol):
    """What settings need of a step operator flavor (conveyor.stack.flavor.Flavor has it): config stays below
    the stack."""

    @property
    def name(self) -> str: ...

    @property
    def settings_class(self) -> type[BaseSettings] | None: ...


STEP_OPERATOR = "step_operator"
ENVIRONMENT = "environment"
STATIC_KEYS: dict[str, type[BaseSettings]] = {RESOURCES: ResourceSettings, DOCKER: DockerSettings}
VALID_KEYS_TEXT = '"resources", "environment", "docker", "step_operator", "step_operator.<flavor>"'

SettingsInput = Mapping[str, BaseSettings | Mapping[str, Any]]


def _as_dict(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True, mode="json")
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(f"{where}: expected a settings object or a dict, got {type(value).__name__}")


def normalize_settings(settings: SettingsInput | None, where: str) -> dict[str, dict[str, Any]]:
    """Check keys and static values now, at decoration time; keep plain dicts for the snapshot."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in (settings or {}).items():
        label = f"{where} settings[{key!r}]"
        if key != ENVIRONMENT:
            _no_secret_references(value, label)
        if key == ENVIRONMENT:
            out[key] = _environment(value, label)
        elif key in STATIC_KEYS:
            model = STATIC_KEYS[key]
            validated = validate_strict(model, value, label)
            out[key] = validated.model_dump(exclude_unset=True, mode="json")
        elif key == STEP_OPERATOR or (key.startswith(STEP_OPERATOR + ".") and len(key) > len(STEP_OPERATOR) + 1):
            if isinstance(value, BaseSettings):
                validate_strict(type(value), value, label)
            out[key] = _as_dict(value, label)
        else:
            raise ConfigError(f"{where}: unknown settings key {key!r}. Valid keys: {VALID_KEYS_TEXT}")
    return out


def _environment(value: Any, label: str) -> dict[str, str]:
    """Variables for the step's process; values may be secret references, `{{name.key}}`, resolved at launch."""
    import re

    if not isinstance(value, Mapping):
        raise ConfigError(f"{label}: expected a dict of environment variable names to values")
    bad = [k for k in value if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
    if bad:
        raise ConfigError(f"{label}: {bad} are not valid environment variable names (letters, digits, '_')")
    wrong = [k for k, v in value.items() if not isinstance(v, (str, int, float, bool))]
    if wrong:
        raise ConfigError(f"{label}: the values of {wrong} must be strings (or secret references as strings)")
    return {k: v if isinstance(v, str) else str(v) for k, v in value.items()}


def _no_secret_references(value: Any, label: str) -> None:
    from conveyor.secrets.references import find_references

    refs = find_references(value if not isinstance(value, BaseModel) else value.model_dump(mode="json"))
    if refs:
        name, key = sorted(refs)[0]
        raise ConfigError(f"{label}: secret references such as {{{{{name}.{key}}}}} are resolved only in "
                          f'settings["environment"] and in component configs; pass the secret to the step as '
                          f'settings={{"environment": {{"MY_VAR": "{{{{{name}.{key}}}}}"}}}}')


def environment_settings(settings: Mapping[str, dict[str, Any]]) -> dict[str, str]:
    """The step's environment variables, pipeline-level under step-level, references unresolved."""
    return dict(settings.get(ENVIRONMENT, {}))


def resource_settings(settings: Mapping[str, dict[str, Any]]) -> ResourceSettings:
    return ResourceSettings.model_validate(settings.get(RESOURCES, {}))


def docker_settings(settings: Mapping[str, dict[str, Any]]) -> DockerSettings:
    """The step's image spec (pipeline-level "docker" settings already merged under the step's)."""
    return DockerSettings.model_validate(settings.get(DOCKER, {}))


def operator_settings(settings: Mapping[str, dict[str, Any]], flavor: SettingsFlavor, where: str) -> BaseSettings | None:
    """The flavor's settings: generic "step_operator" under "step_operator.<flavor>"; other flavors' keys ignored."""
    model = flavor.settings_class
    generic = settings.get(STEP_OPERATOR, {})
    specific = settings.get(f"{STEP_OPERATOR}.{flavor.name}", {})
    if model is None:
        if generic or specific:
            raise ConfigError(f"{where}: step operator flavor {flavor.name!r} takes no settings, but some were given")
        return None
    return validate_strict(model, {**generic, **specific}, f"{where} settings for flavor {flavor.name!r}")
