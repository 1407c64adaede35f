"""The outcome classifier: from the backend's last report, result.json and the launcher's own reason to cancel,
to the attempt's outputs or a failure kind (which decides retries) and a message that says what happened."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from conveyor.enums import FailureKind as K
from conveyor.enums import StepStatus
from conveyor.exceptions import MEMORY_ADVICE
from conveyor.execution.jobspec import ArtifactRef, StepError, StepResult
from conveyor.execution.outcome import Completed, Failed, ResultUnreadable, classify
from conveyor.step_operators.info import StatusReport

RESULT_URI = "/store/runs/r/steps/s/attempt-1/result.json"
OUT = {"y": ArtifactRef("/store/runs/r/steps/s/attempt-1/outputs/y", "m.P", "builtins:int", "c", 3)}
DONE = StepResult(StepStatus.COMPLETED, OUT)


def failed(kind: str, message: str = "bad", type_: str = "ValueError") -> StepResult:
    return StepResult(StepStatus.FAILED, error=StepError(type_, message, kind, "Traceback (most recent call last)"))


class Row(NamedTuple):
    report: StatusReport
    result: StepResult | ResultUnreadable | None
    reason: K | None
    kind: K | None  # None: completed
    message: str  # the failure message (exact when it starts with "=", else a part of it)


ROWS = {
    "completed": Row(StatusReport("completed", exit_code=0), DONE, None, None, ""),
    "a result wins over a lost job": Row(StatusReport("lost", "node gone"), DONE, None, None, ""),
    "user error": Row(StatusReport("failed", exit_code=1), failed("user"), None, K.USER, "=ValueError: bad"),
    "error without a kind is the user's": Row(StatusReport("failed", exit_code=1),
                                              StepResult(StepStatus.FAILED, error=StepError("KeyError", "'x'")), None,
                                              K.USER, "=KeyError: 'x'"),
    "memory, said by the step": Row(StatusReport("failed", exit_code=1), failed("memory", "out of memory (limit 1G)",
                                                                                "MemoryError"), None, K.MEMORY,
                                    "=out of memory (limit 1G)"),
    "memory, said by the backend": Row(StatusReport("failed", "OOMKilled", exit_code=137, kind="memory"), None, None,
                                       K.MEMORY, "=OOMKilled"),
    "memory, from exit code 137": Row(StatusReport("failed", "killed: memory limit", exit_code=137), None, None, K.MEMORY,
                                      "=killed: memory limit"),
    "memory kind without a message": Row(StatusReport("failed", kind="memory"), None, None, K.MEMORY, "=" + MEMORY_ADVICE),
    "timeout, ours": Row(StatusReport("cancelled"), None, K.TIMEOUT, K.TIMEOUT,
                         "=timed out after 5s: the job was cancelled"),
    "timeout, the backend's": Row(StatusReport("failed", "DeadlineExceeded", kind="timeout"), None, None, K.TIMEOUT,
                                  "=DeadlineExceeded"),
    "pending, ours": Row(StatusReport("cancelled", "no node has 8 GPUs"), None, K.PENDING, K.PENDING,
                         "=still waiting in the queue after 60s (pending timeout): no node has 8 GPUs"),
    "pending, the backend's": Row(StatusReport("failed", "Unschedulable", kind="pending"), None, None, K.PENDING,
                                  "=Unschedulable"),
    "stopped wins over a result": Row(StatusReport("cancelled"), DONE, K.STOPPED, K.STOPPED, "=stopped"),
    "preempted": Row(StatusReport("preempted", "spot reclaimed"), None, None, K.INFRASTRUCTURE,
                     "=job preempted: spot reclaimed"),
    "lost": Row(StatusReport("lost"), None, None, K.INFRASTRUCTURE, "=job lost"),
    "cancelled outside": Row(StatusReport("cancelled", "scancel by admin"), None, None, K.STOPPED,
                             "=job was cancelled outside Conveyor: scancel by admin"),
    "store full (exit 75)": Row(StatusReport("failed", exit_code=75), None, None, K.STORE, "out of space or quota"),
    "store failed (exit 74)": Row(StatusReport("failed", exit_code=74), None, None, K.STORE,
                                  "could not write its result " + RESULT_URI),
    "exit 0 without a result": Row(StatusReport("completed", exit_code=0), None, None, K.RESULT,
                                   "ended normally (exit code 0) but there is no result at " + RESULT_URI),
    "crash": Row(StatusReport("failed", "segfault", exit_code=139), None, None, K.CRASH,
                 "=the step ended without a result (exit code 139): segfault"),
    "crash without a message": Row(StatusReport("failed"), None, None, K.CRASH,
                                   "=the step ended without a result: see the step logs"),
    "ended some other way": Row(StatusReport("completed", exit_code=3), None, None, K.INFRASTRUCTURE,
                                "=the step ended without a result (exit code 3): see the step logs"),
    "damaged result": Row(StatusReport("failed", exit_code=1), ResultUnreadable("not valid JSON"), None, K.RESULT,
                          "=not valid JSON"),
    "damaged result of a preempted job": Row(StatusReport("preempted"), ResultUnreadable("not valid JSON"), None,
                                             K.INFRASTRUCTURE, "=not valid JSON"),
    "store unreadable": Row(StatusReport("completed", exit_code=0), ResultUnreadable("store unreachable", store=True),
                            None, K.STORE, "=store unreachable"),
    "unusable job spec": Row(StatusReport("failed", exit_code=2), failed("job_spec", "lacks run_id", "JobSpecError"),
                             None, K.JOB_SPEC, "=JobSpecError: lacks run_id"),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_outcome(row: Row) -> None:
    outcome = classify(row.report, row.result, row.reason, timeout=5, pending_timeout=60, store_root="/store",
                       result_uri=RESULT_URI)
    if row.kind is None:
        assert outcome == Completed(OUT)
        return
    assert isinstance(outcome, Failed)
    assert outcome.kind == row.kind
    if row.message.startswith("="):
        assert outcome.message == row.message[1:]
    else:
        assert row.message in outcome.message


def test_the_step_traceback_travels_with_its_failure() -> None:
    outcome = classify(StatusReport("failed", exit_code=1), failed("user"), None)
    assert isinstance(outcome, Failed) and outcome.traceback == "Traceback (most recent call last)"


def test_an_unknown_kind_from_a_newer_remote_side_stays_as_written() -> None:
    outcome = classify(StatusReport("failed", exit_code=1), failed("gpu_fell_off"), None)
    assert isinstance(outcome, Failed) and outcome.kind == "gpu_fell_off"
