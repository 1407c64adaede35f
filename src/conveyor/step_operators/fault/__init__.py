"""The `fault` step operator: `local`, plus failures on demand, for testing pipelines and Conveyor itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.fault.flavor import (
        FaultStepOperatorConfig,
        FaultStepOperatorFlavor,
        FaultStepOperatorSettings,
    )

__all__ = ["FaultStepOperatorConfig", "FaultStepOperatorFlavor", "FaultStepOperatorSettings"]

# the flavor's Settings, Config and Flavor classes, loaded on first use: importing the package imports no SDK
# (docs/integrations.md)
__getattr__, __dir__ = flavor_exports(__name__, "Fault")
