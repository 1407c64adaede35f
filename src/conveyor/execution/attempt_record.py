"""What the store records about one attempt of a step (table `step_attempts`), gathered while the attempt goes.

The launcher owns one `AttemptRecord` per attempt and hands its changes to the store's existing writes (the
attempt's start, its submission, the step's finish): recording phases costs a step no extra transaction except
where a phase is new while the step runs (queued, started, a new queue reason, a retried attempt's outcome).

Phases: `submitted` (handed to the step operator; in-process: when it started), `queued` (first status report
waiting in the backend's queue, `queue_reason` its latest words), `started` (first report running), `finished`
(the job ended), `published` (its outputs recorded).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from conveyor.enums import FailureKind, StepStatus
from conveyor.store.store import new_id, now
from conveyor.store.tables import COLUMNS

if TYPE_CHECKING:
    from conveyor.execution.jobspec import StepResult
    from conveyor.step_operators.info import StatusReport

__all__ = ["AttemptRecord", "attempt_failure_kind", "this_host"]

#: the fields an attempt's row keeps beside its id and step run
_FIELDS = tuple(c for c in COLUMNS["step_attempts"] if c not in ("id", "step_run_id"))


@cache
def this_host() -> str:
    """This machine's name: where an in-process step runs."""
    return socket.gethostname()


def attempt_failure_kind(kind: FailureKind | str, last_state: str | None) -> str:
    """The attempt's failure kind: the step's (`FailureKind`), except "preempted" for an infrastructure failure
    the backend reported as a preemption (the timeline tells a preemption from a lost node)."""
    if kind == FailureKind.INFRASTRUCTURE and last_state == "preempted":
        return "preempted"
    return str(kind)


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


@dataclass
class AttemptRecord:
    """One attempt's row as it stands, and what changed since it was last written (`pending`)."""

    id: str
    number: int
    status: str = StepStatus.RUNNING
    failure_kind: str | None = None
    submitted: datetime | None = None
    queued: datetime | None = None
    queue_reason: str | None = None
    started: datetime | None = None
    finished: datetime | None = None
    published: datetime | None = None
    backend_job_id: str | None = None
    host: str | None = None
    image_digest: str | None = None
    code_hash: str | None = None
    requested: dict[str, Any] = field(default_factory=dict)
    peak_rss_bytes: int | None = None
    cpu_seconds: float | None = None
    operator: str | None = None
    operator_flavor: str | None = None
    error: str | None = None
    traceback: str | None = None
    logs_uri: str | None = None
    #: the last state a status report gave (a preemption's outcome is told by it)
    last_state: str | None = field(default=None, repr=False)
    _changed: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def new(cls, number: int, **fields: Any) -> AttemptRecord:
        return cls(id=new_id(), number=number, **fields)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AttemptRecord:
        """An attempt recorded by an earlier orchestrator, continued by the one that re-attached to its job."""
        return cls(id=row["id"], **{k: row[k] for k in _FIELDS if k in row and row[k] is not None})

    def row(self) -> dict[str, Any]:
        """The whole row, for its insert (then `written()`)."""
        return {"id": self.id, **{k: getattr(self, k) for k in _FIELDS}}

    def set(self, **fields: Any) -> None:
        for key, value in fields.items():
            if getattr(self, key) != value:
                setattr(self, key, value)
                self._changed[key] = value

    def pending(self) -> dict[str, Any]:
        """What changed since the row was last written."""
        return dict(self._changed)

    def written(self, fields: dict[str, Any] | None = None) -> None:
        """The store committed the pending changes (and `fields`, such as an outcome)."""
        self.set(**(fields or {}))
        self._changed.clear()

    # -- what the backend and the remote side said -------------------------------------------------------------
    def saw(self, report: StatusReport) -> bool:
        """Note a status report's phase: first queued (with its reason; a newer non-empty reason replaces it while
        queued), first running, the end. True when the row changed while the job is still going (worth a write
        now: the dashboard shows it live); the end is written with the outcome."""
        from conveyor.step_operators.info import JobState

        self.last_state = str(report.state)
        if report.terminal:
            if self.finished is None:
                self.set(finished=now())
            if report.kind == FailureKind.PENDING and self.started is None and not self.queue_reason:
                # it can never start, found out at the first look (Slurm's PartitionConfig): that is why it waited
                self.set(queued=self.queued or self.finished, queue_reason=report.message or None)
            return False
        if report.state == JobState.QUEUED and self.started is None:
            if self.queued is None:
                self.set(queued=now())
            if report.message:
                self.set(queue_reason=report.message)
        elif report.state == JobState.RUNNING and self.started is None:
            self.set(started=now())
        return bool(self._changed)

    def took_result(self, result: StepResult) -> None:
        """Where the step ran and what it used, as its own process reported them in result.json; the start it
        reported fills `started` when no status report ever said running (a job that ended between two polls)."""
        self.set(**{k: v for k, v in (("host", result.host), ("peak_rss_bytes", result.peak_memory_bytes),
                                      ("cpu_seconds", result.cpu_seconds)) if v is not None})
        start = (result.timings or {}).get("start")
        if self.started is None and isinstance(start, (int, float)):
            started = _utc(start)  # the remote clock: kept inside the phases this side saw
            if self.submitted is not None:
                started = max(started, self.submitted)
            if self.finished is not None:
                started = min(started, self.finished)
            self.set(started=started)

    def outcome(self, status: str, kind: FailureKind | str | None = None, error: str | None = None,
                traceback: str | None = None) -> dict[str, Any]:
        """The fields that end the attempt, with what is pending (applied once the store has them: `written`);
        a completed attempt is `published` now, as its outputs are recorded in the same write."""
        ts = now()
        fields: dict[str, Any] = {**self._changed, "status": str(status), "finished": self.finished or ts}
        if status == StepStatus.COMPLETED:
            fields["published"] = ts
            if self.started is None and self.submitted is not None:
                fields["started"] = self.submitted  # nothing said when it started: no queue time is made up
        else:
            fields.update(failure_kind=attempt_failure_kind(kind, self.last_state) if kind else None, error=error,
                          traceback=traceback)
        return fields

    @property
    def open(self) -> bool:
        """Not ended yet (a retried attempt is ended before the run may stop during the retry's delay)."""
        return self.status in (StepStatus.RUNNING, StepStatus.PENDING)
