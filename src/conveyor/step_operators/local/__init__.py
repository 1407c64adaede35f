"""The `local` step operator: a step in its own process here, with CPU, memory and GPU limits enforced."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.local.flavor import (
        LocalStepOperatorConfig,
        LocalStepOperatorFlavor,
        LocalStepOperatorSettings,
    )

__all__ = ["LocalStepOperatorConfig", "LocalStepOperatorFlavor", "LocalStepOperatorSettings"]

# the flavor's Settings, Config and Flavor classes, loaded on first use: importing the package imports no SDK
# (docs/integrations.md)
__getattr__, __dir__ = flavor_exports(__name__, "Local")
