"""Steps."""

from conveyor.steps.context import StepContext, get_step_context
from conveyor.steps.step import Step, step

__all__ = ["Step", "StepContext", "get_step_context", "step"]
