"""`Flavor`: names a component implementation and its config, without importing the implementation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.stack.component import ComponentType

if TYPE_CHECKING:
    from conveyor.config.base import BaseSettings
    from conveyor.stack.component import StackComponent
    from conveyor.stack.config_model import StackComponentConfig


class Flavor(ABC):
    """Subclasses define `name`, `type`, `config_class`, `implementation_class` (properties or class attributes)."""

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def type(self) -> ComponentType: ...

    @property
    def config_class(self) -> type["StackComponentConfig"]:
        from conveyor.stack.config_model import StackComponentConfig

        return StackComponentConfig

    def plain_config(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        """Every field's value when the stored config `raw` is valid as it stands and that shows without pydantic;
        None (the default): `config_class` validates it when the component is built. A built-in flavor of the
        default stack answers for its common configs, so that a run on that stack never imports pydantic."""
        return None

    @property
    @abstractmethod
    def implementation_class(self) -> type["StackComponent"]:
        """Imported only when a component of this flavor is used."""

    @property
    def settings_class(self) -> type["BaseSettings"] | None:
        """Per-step settings under "step_operator.<name>", or None."""
        return None

    @property
    def description(self) -> str:
        doc = (type(self).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""
