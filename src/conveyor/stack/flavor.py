"""`Flavor`: names a component implementation and its config, without importing the implementation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from conveyor.stack.component import ComponentType, StackComponentConfig

if TYPE_CHECKING:
    from conveyor.config.base import BaseSettings
    from conveyor.stack.component import StackComponent


class Flavor(ABC):
    """Subclasses define `name`, `type`, `config_class`, `implementation_class` (properties or class attributes)."""

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def type(self) -> ComponentType: ...

    @property
    def config_class(self) -> type[StackComponentConfig]:
        return StackComponentConfig

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
