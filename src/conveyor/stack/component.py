"""Stack components and their types; a component's config becomes a pydantic model only when it is read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from conveyor.stack.config_model import StackComponentConfig
    from conveyor.stack.flavor import Flavor

__all__ = ["ComponentType", "PlainConfig", "StackComponent", "StackComponentConfig"]


class ComponentType(str, Enum):
    ORCHESTRATOR = "orchestrator"
    ARTIFACT_STORE = "artifact_store"
    STEP_OPERATOR = "step_operator"
    CONTAINER_REGISTRY = "container_registry"

    @property
    def cli_name(self) -> str:
        return self.value.replace("_", "-")


@dataclass(frozen=True)
class PlainConfig:
    """A stored config its flavor found valid without pydantic (`Flavor.plain_config`): its values now, the
    pydantic model only when something reads `.config` (validating `raw` then cannot fail, and says the same)."""

    values: Mapping[str, Any]  # every field, defaults filled in
    raw: Mapping[str, Any]  # as stored (secret references resolved): what the model is built from
    flavor: "Flavor"
    where: str

    def model(self) -> "StackComponentConfig":
        from conveyor.config.base import validate_strict

        return validate_strict(self.flavor.config_class, dict(self.raw), self.where)  # type: ignore[return-value]


class StackComponent:
    """A configured, named piece of a stack; built lazily from its store record."""

    TYPE: ClassVar[ComponentType]
    _plain: PlainConfig | None  # the stored config its flavor vouched for, until a model is built from it
    _model: "StackComponentConfig | None"

    def __init__(self, name: str, config: "StackComponentConfig | PlainConfig", flavor: str, id: str | None = None,
                 **_: Any) -> None:
        self.name = name
        self._config = config
        self.flavor = flavor
        self.id = id

    @property
    def _config(self) -> "StackComponentConfig":
        """The validated model (subclasses' typed `config` properties return this)."""
        if self._model is None:
            assert self._plain is not None
            self._model = self._plain.model()
        return self._model

    @_config.setter
    def _config(self, value: "StackComponentConfig | PlainConfig") -> None:
        if isinstance(value, PlainConfig):
            self._plain, self._model = value, None
        else:
            self._plain, self._model = None, value

    @property
    def config(self) -> "StackComponentConfig":
        return self._config

    def config_value(self, field: str) -> Any:
        """One config field: from the plain values when the flavor vouched for them, so the hot path of a default
        stack reads its settings without building a pydantic model; else from the model."""
        if self._model is None and self._plain is not None:
            return self._plain.values[field]
        return getattr(self._config, field)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, flavor={self.flavor!r})"


def __getattr__(name: str) -> Any:
    """`StackComponentConfig` (pydantic) is imported from here by flavors; it loads only when asked for."""
    if name == "StackComponentConfig":
        from conveyor.stack.config_model import StackComponentConfig

        return StackComponentConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
