"""The `azureml` step operator: one Azure Machine Learning command job per step attempt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.azureml.flavor import (
        AzureMLStepOperatorConfig,
        AzureMLStepOperatorFlavor,
        AzureMLStepOperatorSettings,
    )

__all__ = ["AzureMLStepOperatorConfig", "AzureMLStepOperatorFlavor", "AzureMLStepOperatorSettings"]

# the flavor's Settings, Config and Flavor classes, loaded on first use: importing the package imports no SDK
# (docs/integrations.md)
__getattr__, __dir__ = flavor_exports(__name__, "AzureML")
