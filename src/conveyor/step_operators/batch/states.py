"""What a batch scheduler says about a job, and the table that turns it into a `StatusReport`.

Each scheduler names its states differently (Slurm's `PENDING`/`COMPLETED`, LSF's `PEND`/`DONE`, PBS's `Q`/`F`);
a `StateTable` is the one place a scheduler flavor writes that down, so the reporting logic (queued with its
reason, can never start, memory, time limit, lost, preempted, cancelled) is written once in the base.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.enums import FailureKind
from conveyor.exceptions import MEMORY_ADVICE
from conveyor.step_operators.info import JobState, StatusReport

__all__ = ["Ending", "JobInfo", "QueueEntry", "StateTable"]


@dataclass(frozen=True)
class QueueEntry:
    """One job as the scheduler's queue lists it (squeue, bjobs, qstat): its state and why it waits."""

    state: str
    reason: str = ""


@dataclass(frozen=True)
class JobInfo:
    """A job the queue no longer lists, as the controller or the accounting remembers it.

    `fields` holds the scheduler's other fields by its own names (Slurm: `TimeLimit`, `NodeList`): the state
    table's messages may name them.
    """

    state: str
    reason: str
    exit_code: int | None
    signal: int | None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ending:
    """What a final scheduler state becomes. `message` is a `str.format` template over `scheduler`, `job_id`,
    `state`, `reason`, `detail` (exit code or signal), `advice` (the memory advice) and the job's `fields`
    (a field the scheduler did not report reads `?`)."""

    state: JobState
    message: str = ""
    kind: FailureKind | None = None
    #: False where the exit code means nothing (the node died, the job was preempted)
    with_exit_code: bool = True


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


@dataclass(frozen=True)
class StateTable:
    """A scheduler's states and messages. Everything not queued, running or completed is final: `endings` names
    the ones with a meaning of their own, every other one becomes `otherwise` (a failure)."""

    scheduler: str
    queued: frozenset[str]
    running: frozenset[str]
    completed: frozenset[str]
    #: pending reasons no amount of waiting clears (the request does not fit the queue, account or QOS)
    never_clear: frozenset[str] = frozenset()
    #: the queue state of a job killed at its memory limit, where the scheduler has one
    memory_states: frozenset[str] = frozenset()
    endings: Mapping[str, Ending] = field(default_factory=dict)
    memory: Ending = Ending(JobState.FAILED, "{advice} ({scheduler} job {job_id} ran out of its memory request)",
                            FailureKind.MEMORY)
    never_starts: Ending = Ending(JobState.FAILED, "{scheduler} job {job_id} can never start: pending with reason "
                                  "{reason} (the request does not fit the queue)", FailureKind.PENDING)
    otherwise: Ending = Ending(JobState.FAILED, "{scheduler} job {job_id} ended {state} ({detail})")
    pending: str = "pending in the {scheduler} queue"

    def active(self, state: str) -> bool:
        """True while the job may still run: the scheduler's queue lists it as waiting or running."""
        return state in self.queued or state in self.running

    def queued_report(self, reason: str) -> StatusReport:
        text = self.pending.format(scheduler=self.scheduler)
        return StatusReport(JobState.QUEUED, text + (f" ({reason})" if reason and reason != "None" else ""))

    def report(self, job_id: str, info: JobInfo, killed_for_memory: bool = False) -> StatusReport:
        """The status of a job from what the scheduler remembers of it; `killed_for_memory` when the flavor
        found out (from the state, the reason or the job's output) that it was killed at its memory limit."""
        if info.state in self.queued:
            return self.queued_report(info.reason)
        if info.state in self.running:
            return StatusReport(JobState.RUNNING)
        if info.state in self.completed:
            return StatusReport(JobState.COMPLETED, exit_code=info.exit_code)
        ending = self.memory if killed_for_memory else self.endings.get(info.state, self.otherwise)
        return self.render(ending, job_id, info)

    def render(self, ending: Ending, job_id: str, info: JobInfo) -> StatusReport:
        detail = f"exit code {info.exit_code}" if not info.signal else f"signal {info.signal}"
        values = _Fields(info.fields, scheduler=self.scheduler, job_id=job_id, state=info.state, reason=info.reason,
                         detail=detail, advice=MEMORY_ADVICE)
        message = string.Formatter().vformat(ending.message, (), values)
        return StatusReport(ending.state, message, info.exit_code if ending.with_exit_code else None, ending.kind)
