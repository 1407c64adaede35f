"""What a flavor accepts, read from its pydantic config and settings classes: `conveyor <type> flavor describe`.

Every field with its type, default and description, the extra the flavor needs and whether it is installed, so
that a user can register a component without opening the source."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.stack.component import ComponentType

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

    from conveyor.stack.registry import FlavorRegistry

__all__ = ["FieldDescription", "FlavorDescription", "IntegrationStatus", "SettingsDescription", "describe_fields",
           "describe_flavor", "secret_field_names", "type_name"]

#: `conveyor.config.settings.DockerSettings` -> `DockerSettings`, `typing.Literal` -> `Literal`
_QUALIFIED = re.compile(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)")


@dataclass(frozen=True)
class FieldDescription:
    """One field of a config or settings class; `default` is JSON-ready and None when the field is required."""

    name: str
    type: str
    required: bool
    default: Any
    description: str
    secret: bool


@dataclass(frozen=True)
class SettingsDescription:
    """The per-step settings class of a flavor and the key steps give them under."""

    key: str
    class_name: str
    import_path: str
    fields: tuple[FieldDescription, ...]


@dataclass(frozen=True)
class IntegrationStatus:
    """The package extra a flavor needs, and whether this environment has it."""

    name: str
    extra: str
    installed: bool
    install_command: str


@dataclass(frozen=True)
class FlavorDescription:
    name: str
    type: ComponentType
    origin: str
    source: str
    description: str
    config_class: str
    fields: tuple[FieldDescription, ...]
    integration: IntegrationStatus | None
    settings: SettingsDescription | None


def type_name(annotation: Any) -> str:
    """A type as a user writes it: `str | None`, `list[str]`, `DockerSettings`."""
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    text = str(annotation).replace("NoneType", "None")
    return _QUALIFIED.sub(r"\1", text)


def _is_secret(annotation: Any) -> bool:
    from pydantic import SecretBytes, SecretStr

    args = getattr(annotation, "__args__", ()) or ()
    return annotation in (SecretStr, SecretBytes) or any(a in (SecretStr, SecretBytes) for a in args)


def secret_field_names(model: "type[BaseModel]") -> set[str]:
    """Fields whose values are never shown: SecretStr and SecretBytes, optional or not."""
    return {name for name, field in model.model_fields.items() if _is_secret(field.annotation)}


def _default(field: "FieldInfo") -> Any:
    from pydantic_core import to_jsonable_python

    if field.is_required():
        return None
    value = field.get_default(call_default_factory=True)
    try:
        return to_jsonable_python(value)
    except Exception:  # noqa: BLE001 - a default pydantic cannot serialise is still worth showing
        return repr(value)


def describe_fields(model: "type[BaseModel]") -> tuple[FieldDescription, ...]:
    """Every field of a pydantic model, in declaration order."""
    secret = secret_field_names(model)
    return tuple(FieldDescription(name, type_name(field.annotation), field.is_required(), _default(field),
                                  field.description or "", name in secret)
                 for name, field in model.model_fields.items())


def _integration(type_: ComponentType, flavor: str) -> IntegrationStatus | None:
    from conveyor.integrations import integration_for_flavor

    found = integration_for_flavor(type_.value, flavor)
    if found is None:
        return None
    return IntegrationStatus(str(getattr(found, "name", found.extra)), found.extra, bool(found.installed),
                             found.install_command)


def describe_flavor(registry: "FlavorRegistry", type_: ComponentType | str, name: str) -> FlavorDescription:
    """The flavor's config fields, settings and integration; an unknown flavor raises StackError naming the known."""
    ctype = ComponentType(type_)
    flavor = registry.get(ctype, name)
    source, origin = registry.sources(ctype).get(name, ("", "?"))
    config_class = flavor.config_class
    settings = None
    settings_class = flavor.settings_class
    if settings_class is not None:
        settings = SettingsDescription(f"{ctype.value}.{name}", settings_class.__name__,
                                       f"{settings_class.__module__}.{settings_class.__qualname__}",
                                       describe_fields(settings_class))
    return FlavorDescription(name, ctype, origin, source, flavor.description,
                             f"{config_class.__module__}.{config_class.__qualname__}", describe_fields(config_class),
                             _integration(ctype, name), settings)
