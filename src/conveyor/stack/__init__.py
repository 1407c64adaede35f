"""Stacks, components and flavors."""

from conveyor.stack.component import ComponentType, StackComponent, StackComponentConfig
from conveyor.stack.flavor import Flavor

__all__ = ["ComponentType", "Flavor", "StackComponent", "StackComponentConfig"]
