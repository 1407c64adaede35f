"""Errors users see. Each message should say what to do next."""

from __future__ import annotations


#: What every flavor says when a step is killed for exceeding its memory.
MEMORY_ADVICE = "killed for memory: raise ResourceSettings(memory=...)"


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""


class ConfigError(ConveyorError, ValueError):
    """Invalid settings, config field or flavor config. `fields`: the top-level fields a validation refused, where
    known (the message names them too)."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class PipelineDefinitionError(ConveyorError):
    """A pipeline that cannot be compiled: cycle, unconnected input, no steps."""


class StackError(ConveyorError):
    """Unknown or inconsistent stack, component or flavor."""


class StepFailedError(ConveyorError):
    """A step failed; carries the (remote) traceback and a failure kind."""

    def __init__(self, step: str, message: str, traceback: str | None = None, kind: str = "user") -> None:
        self.step = step
        self.message = message
        self.remote_traceback = traceback
        self.kind = kind
        super().__init__(f"step {step!r} failed: {message}")

    def __str__(self) -> str:
        text = f"step {self.step!r} failed: {self.message}"
        if self.remote_traceback:
            from conveyor.utils.tracebacks import user_frames_first

            text += "\n\nTraceback of the step:\n" + user_frames_first(self.remote_traceback).rstrip()
        return text


class RunFailedError(ConveyorError):
    """Raised by a pipeline call whose run did not complete."""

    def __init__(self, run: object, failures: list[StepFailedError]) -> None:
        self.run = run
        self.failures = failures
        names = ", ".join(f.step for f in failures) or "(none)"
        super().__init__(f"pipeline run {getattr(run, 'name', '?')} {getattr(run, 'status', 'failed')}: steps {names}")

    def __str__(self) -> str:
        head = super().__str__()
        return head + "".join("\n\n" + str(f) for f in self.failures)


class ResourceUnavailableError(ConveyorError):
    """A resource request the step operator can never satisfy; raised before anything runs."""


class InfrastructureError(ConveyorError):
    """The backend lost, preempted or failed the job through no fault of the step's code."""
