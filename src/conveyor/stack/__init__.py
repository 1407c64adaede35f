"""Stacks, components and flavors (`StackComponentConfig`, a pydantic model, loads only when asked for)."""

from typing import TYPE_CHECKING, Any

from conveyor.stack.component import ComponentType, StackComponent
from conveyor.stack.flavor import Flavor

if TYPE_CHECKING:
    from conveyor.stack.config_model import StackComponentConfig

__all__ = ["ComponentType", "Flavor", "StackComponent", "StackComponentConfig"]


def __getattr__(name: str) -> Any:
    if name == "StackComponentConfig":
        from conveyor.stack.config_model import StackComponentConfig

        return StackComponentConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
