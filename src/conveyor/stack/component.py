"""Stack components, their configs and types."""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar

from conveyor.config.base import StrictModel


class ComponentType(str, Enum):
    ORCHESTRATOR = "orchestrator"
    ARTIFACT_STORE = "artifact_store"
    STEP_OPERATOR = "step_operator"

    @property
    def cli_name(self) -> str:
        return self.value.replace("_", "-")


class StackComponentConfig(StrictModel):
    """Strict: a misspelt field is refused at registration, naming the valid ones."""


class StackComponent:
    """A configured, named piece of a stack; built lazily from its store record."""

    TYPE: ClassVar[ComponentType]

    def __init__(self, name: str, config: StackComponentConfig, flavor: str, id: str | None = None, **_: Any) -> None:
        self.name = name
        self._config = config
        self.flavor = flavor
        self.id = id

    @property
    def config(self) -> StackComponentConfig:
        return self._config

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, flavor={self.flavor!r})"
