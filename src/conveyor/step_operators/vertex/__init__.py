"""Vertex AI step operator: one CustomJob per step attempt (light package: the SDK loads in operator.py only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.vertex.flavor import (
        VertexStepOperatorConfig,
        VertexStepOperatorFlavor,
        VertexStepOperatorSettings,
    )

__all__ = ["VertexStepOperatorConfig", "VertexStepOperatorFlavor", "VertexStepOperatorSettings"]

# the flavor's Settings, Config and Flavor classes, loaded on first use: importing the package imports no SDK
# (docs/integrations.md)
__getattr__, __dir__ = flavor_exports(__name__, "Vertex")
