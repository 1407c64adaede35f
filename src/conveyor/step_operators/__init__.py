"""Step operators: run one step somewhere else, wait for it, stream its logs."""

from conveyor.step_operators.base import BaseStepOperator, BaseStepOperatorConfig, BaseStepOperatorFlavor
from conveyor.step_operators.entrypoint import StepOperatorEntrypointConfiguration
from conveyor.step_operators.info import StatusReport, StepConfig, StepRunInfo, Submission

__all__ = [
    "BaseStepOperator",
    "BaseStepOperatorConfig",
    "BaseStepOperatorFlavor",
    "StatusReport",
    "StepConfig",
    "StepOperatorEntrypointConfiguration",
    "StepRunInfo",
    "Submission",
]
