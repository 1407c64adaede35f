"""The `sagemaker` step operator: a step as an Amazon SageMaker training job. Importing this package imports no boto3."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.sagemaker.flavor import (
        SageMakerStepOperatorConfig,
        SageMakerStepOperatorFlavor,
        SageMakerStepOperatorSettings,
        SageMakerStepOperatorConfig as SagemakerStepOperatorConfig,
        SageMakerStepOperatorFlavor as SagemakerStepOperatorFlavor,
        SageMakerStepOperatorSettings as SagemakerStepOperatorSettings,
    )

__all__ = ["SageMakerStepOperatorConfig", "SageMakerStepOperatorFlavor", "SageMakerStepOperatorSettings",
           "SagemakerStepOperatorConfig", "SagemakerStepOperatorFlavor", "SagemakerStepOperatorSettings"]

# the flavor's Settings, Config and Flavor classes, loaded on first use: importing the package imports no SDK
# (docs/integrations.md)
# ZenML's code spells it "Sagemaker", its docs "SageMaker": both names work
__getattr__, __dir__ = flavor_exports(__name__, "SageMaker", {
    "SagemakerStepOperatorConfig": "SageMakerStepOperatorConfig",
    "SagemakerStepOperatorFlavor": "SageMakerStepOperatorFlavor",
    "SagemakerStepOperatorSettings": "SageMakerStepOperatorSettings",
})
