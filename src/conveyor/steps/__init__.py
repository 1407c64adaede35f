"""Steps."""

from conveyor.steps.step import Step, step

__all__ = ["Step", "step"]
