"""The `slurm` step operator: a step as a Slurm batch job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.slurm.flavor import (
        SlurmStepOperatorConfig,
        SlurmStepOperatorFlavor,
        SlurmStepOperatorSettings,
    )

__all__ = ["SlurmStepOperatorConfig", "SlurmStepOperatorFlavor", "SlurmStepOperatorSettings"]

# the flavor's Settings, Config and Flavor classes, loaded on first use: importing the package imports no SDK
# (docs/integrations.md)
__getattr__, __dir__ = flavor_exports(__name__, "Slurm")
