"""Step operators: run one step somewhere else, wait for it, stream its logs.

Names load on first use, so a flavor's remote helpers (e.g. the ssh launcher) can live in this package without
paying for pydantic at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

_WHERE = {
    "BaseStepOperator": "conveyor.step_operators.base",
    "BaseStepOperatorConfig": "conveyor.step_operators.base",
    "BaseStepOperatorFlavor": "conveyor.step_operators.base",
    "StepOperatorEntrypointConfiguration": "conveyor.step_operators.entrypoint",
    "StatusReport": "conveyor.step_operators.info",
    "StepConfig": "conveyor.step_operators.info",
    "StepRunInfo": "conveyor.step_operators.info",
    "Submission": "conveyor.step_operators.info",
}

if TYPE_CHECKING:
    from conveyor.step_operators.base import BaseStepOperator, BaseStepOperatorConfig, BaseStepOperatorFlavor
    from conveyor.step_operators.entrypoint import StepOperatorEntrypointConfiguration
    from conveyor.step_operators.info import StatusReport, StepConfig, StepRunInfo, Submission


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor.step_operators' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
