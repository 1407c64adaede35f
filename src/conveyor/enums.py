"""Enumerations shared with ported ZenML code (`from zenml.enums import ExecutionStatus` -> `conveyor.enums`).

Members are plain strings too (`StrEnum`): a status read from the store compares equal to "completed" and to
`ExecutionStatus.COMPLETED` alike, so code written either way keeps working.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

__all__ = ["ACTIVE_STATUSES", "SUCCESSFUL_STATUSES", "UNSUCCESSFUL_STATUSES", "ExecutionStatus", "FailureKind",
           "StepStatus"]


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
        return self in SUCCESSFUL_STATUSES

    @property
    def is_active(self) -> bool:
        """True while the step or run has not ended: waiting to start or running."""
        return self in ACTIVE_STATUSES

    @property
    def is_failed(self) -> bool:
        return self is ExecutionStatus.FAILED

    @classmethod
    def of(cls, value: str) -> "ExecutionStatus | str":
        """The member for a stored status; an unknown value (a newer writer's) stays the plain string."""
        return _member_or_value(cls, value)


#: a step's status is a run's status: one list of values, whichever name the code reads better with
StepStatus = ExecutionStatus

#: the sets the orchestrator, resume and the CLI decide by (members hash as their strings: `"cached" in` works)
SUCCESSFUL_STATUSES = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.CACHED})
#: ended without outputs: downstream steps cannot run
UNSUCCESSFUL_STATUSES = frozenset({ExecutionStatus.FAILED, ExecutionStatus.STOPPED, ExecutionStatus.SKIPPED})
ACTIVE_STATUSES = frozenset({ExecutionStatus.PENDING, ExecutionStatus.RUNNING})
_FINISHED = SUCCESSFUL_STATUSES | UNSUCCESSFUL_STATUSES
_E = TypeVar("_E", bound=StrEnum)


class FailureKind(StrEnum):
    """Why a step failed, as stored (`failure_kind`), written in result.json and carried by StepFailedError.

    What the launcher does next depends on it: the step's own failures (`USER`, `MEMORY`, `CRASH`, `TIMEOUT`) are
    retried by the step's retry settings, `INFRASTRUCTURE` by the operator's `infrastructure_retries`, the rest never.
    """

    USER = "user"  # the step's code raised (or called sys.exit)
    MEMORY = "memory"  # out of memory, or killed at its memory limit
    CRASH = "crash"  # the step's process died without writing a result
    TIMEOUT = "timeout"  # ran longer than the step's timeout
    PENDING = "pending"  # waited in the backend's queue past pending_timeout, or can never start there
    INFRASTRUCTURE = "infrastructure"  # preempted, node lost, job vanished
    STOPPED = "stopped"  # `conveyor run stop`, Ctrl-C, or a job cancelled outside Conveyor
    RESOURCES = "resources"  # the request can never be honoured by this operator
    SUBMIT = "submit"  # the backend refused the job
    RESULT = "result"  # result.json unreadable, or missing after a clean exit
    STORE = "store"  # the artifact store failed (full, read-only, unreachable)
    JOB_SPEC = "job_spec"  # the remote side could not use its job spec
    INTERNAL = "internal"  # a bug of ours

    @classmethod
    def of(cls, value: str) -> "FailureKind | str":
        """The member for a stored kind; an unknown value (a newer writer's) stays the plain string."""
        return _member_or_value(cls, value)


def _member_or_value(enum: type[_E], value: str) -> _E | str:
    try:
        return enum(value)
    except ValueError:
        return value
