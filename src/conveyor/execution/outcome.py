"""How one attempt through a step operator ended: its outputs, or a failure kind and a message that says why.

A pure function of what the launcher gathered (the backend's last StatusReport, result.json as read, and why the
launcher itself cancelled the job, if it did), so every case is one row of a table test (tests/test_outcome.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.enums import FailureKind, StepStatus
from conveyor.exceptions import MEMORY_ADVICE
from conveyor.execution.jobspec import ArtifactRef, StepError, StepResult, store_exit_message

if TYPE_CHECKING:
    from conveyor.step_operators.info import StatusReport

__all__ = ["Completed", "Failed", "Outcome", "ResultUnreadable", "classify"]


@dataclass(frozen=True)
class Completed:
    """The step returned: its outputs as the remote side saved them."""

    outputs: dict[str, ArtifactRef]


@dataclass(frozen=True)
class Failed:
    kind: FailureKind | str
    message: str
    traceback: str | None = None


Outcome = Completed | Failed


@dataclass(frozen=True)
class ResultUnreadable:
    """result.json exists but could not be used: damaged (`store` False) or the artifact store failed reading it."""

    message: str
    store: bool = False


_INFRASTRUCTURE = ("preempted", "lost")


def classify(report: "StatusReport", result: StepResult | ResultUnreadable | None, reason: FailureKind | None = None,
             *, timeout: float | None = None, pending_timeout: float | None = None, store_root: str = "",
             result_uri: str = "") -> Outcome:
    """The outcome of one attempt.

    `reason` is why the launcher cancelled the job (`STOPPED`, `TIMEOUT`, `PENDING`), which wins over anything the
    job reported after; `result` is result.json (None when there is none); `timeout` and `pending_timeout` are the
    limits the messages name; `store_root` and `result_uri` name where the result should have been.
    """
    if reason == FailureKind.STOPPED:
        return Failed(FailureKind.STOPPED, "stopped")
    if reason == FailureKind.TIMEOUT:
        return Failed(FailureKind.TIMEOUT, f"timed out after {timeout or 0:g}s: the job was cancelled")
    if reason == FailureKind.PENDING:
        return Failed(FailureKind.PENDING, f"still waiting in the queue after {pending_timeout or 0:g}s (pending "
                                           f"timeout): {report.message or 'the backend could not place it'}")
    if isinstance(result, ResultUnreadable):
        if result.store:
            return Failed(FailureKind.STORE, result.message)
        # a job that died while writing its result is the infrastructure's doing: it is submitted again
        return Failed(FailureKind.INFRASTRUCTURE if report.state in _INFRASTRUCTURE else FailureKind.RESULT,
                      result.message)
    if result is not None:
        if result.status == StepStatus.COMPLETED:
            return Completed(dict(result.outputs))
        error = result.error or StepError("Error", "")
        if error.kind == FailureKind.MEMORY:
            return Failed(FailureKind.MEMORY, error.message or MEMORY_ADVICE, error.traceback)
        return Failed(error.kind, f"{error.type}: {error.message}", error.traceback)
    return _without_result(report, store_root, result_uri)


def _without_result(report: "StatusReport", store_root: str, result_uri: str) -> Failed:
    """The job ended and left no result.json: the backend's report and the exit code are all there is."""
    if report.state in _INFRASTRUCTURE:
        return Failed(FailureKind.INFRASTRUCTURE, f"job {report.state}: {report.message}".rstrip(": "))
    if report.state == "cancelled":
        return Failed(FailureKind.STOPPED, f"job was cancelled outside Conveyor: {report.message}".rstrip(": "))
    code = report.exit_code
    if report.kind in (FailureKind.MEMORY, FailureKind.TIMEOUT, FailureKind.PENDING):
        return Failed(FailureKind(report.kind), report.message or MEMORY_ADVICE)
    if code in (137, -9) and "memory" in report.message:
        return Failed(FailureKind.MEMORY, report.message)
    store_failure = store_exit_message(code, store_root, result_uri) if report.state == "failed" else None
    if store_failure:  # the step's process could not write its result (nor, perhaps, its log): a full disk
        return Failed(FailureKind.STORE, store_failure)
    if report.state == "completed" and code == 0:
        # the step ran to its end: running it again (as for a lost job) would run the user's code again
        return Failed(FailureKind.RESULT,
                      f"the step's process ended normally (exit code 0) but there is no result at {result_uri}: "
                      "something moved or deleted it, or the step wrote it elsewhere; check what else writes to the "
                      "artifact store, then run the pipeline again")
    detail = f" (exit code {code})" if code is not None else ""
    return Failed(FailureKind.CRASH if report.state == "failed" else FailureKind.INFRASTRUCTURE,
                  f"the step ended without a result{detail}: {report.message or 'see the step logs'}")
