"""`StackComponentConfig`, the pydantic base of every component's config: its own module so that building a
stack whose flavors vouch for their stored configs (`Flavor.plain_config`) never imports pydantic."""

from __future__ import annotations

from conveyor.config.base import StrictModel

__all__ = ["StackComponentConfig"]


class StackComponentConfig(StrictModel):
    """Strict: a misspelt field is refused at registration, naming the valid ones."""
