"""What a run records of a step's resource settings, without pydantic when the step sets none (the common case)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["recorded_resources"]

RESOURCES = "resources"  # the settings key; config.settings uses this one


def recorded_resources(settings: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`ResourceSettings` as a step run's config records it: the fields set, None left out. No "resources" (or
    an empty one) is `{}`, which is what the model would dump: every field defaults to None."""
    if not settings.get(RESOURCES):
        return {}
    from conveyor.config.settings import resource_settings

    return resource_settings(settings).model_dump(exclude_none=True)
