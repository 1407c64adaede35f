"""Enumerations shared with ported ZenML code (`from zenml.enums import ExecutionStatus` -> `conveyor.enums`).

Members are plain strings too (`StrEnum`): a status read from the store compares equal to "completed" and to
`ExecutionStatus.COMPLETED` alike, so code written either way keeps working.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ExecutionStatus"]


class ExecutionStatus(StrEnum):
    """The status of a pipeline run or of one of its steps, as stored.

    ZenML's `INITIALIZING` is our `PENDING` (an alias: the same member). ZenML's `PROVISIONING`, `RETRYING`,
    `RETRIED` and `STOPPING` have no member: a step waiting in a backend's queue or retried is `RUNNING` (its
    `attempt` counts the retries), and a stop is recorded once it has happened (`STOPPED`).
    """

    PENDING = "pending"
    INITIALIZING = "pending"  # ZenML's name for a step that has not started yet
    RUNNING = "running"
    COMPLETED = "completed"
    CACHED = "cached"
    FAILED = "failed"
    STOPPED = "stopped"
    SKIPPED = "skipped"  # an upstream step failed: this one never ran

    @property
    def is_finished(self) -> bool:
        """True once nothing more will happen to this run or step."""
        return self in _FINISHED

    @property
    def is_successful(self) -> bool:
        """True when the outputs exist: computed now or reused from the cache."""
        return self in (ExecutionStatus.COMPLETED, ExecutionStatus.CACHED)

    @property
    def is_failed(self) -> bool:
        return self is ExecutionStatus.FAILED

    @classmethod
    def of(cls, value: str) -> "ExecutionStatus | str":
        """The member for a stored status; an unknown value (a newer writer's) stays the plain string."""
        try:
            return cls(value)
        except ValueError:
            return value


_FINISHED = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.CACHED, ExecutionStatus.FAILED,
                       ExecutionStatus.STOPPED, ExecutionStatus.SKIPPED})
