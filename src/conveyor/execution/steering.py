"""Steering a run from outside its orchestrator: stop it, and follow its steps' logs while it runs.

Library functions that return typed results, so that `conveyor run stop|logs`, `Client.stop_run|follow_logs` and
the web view only format them. A run is named as a user types it (name, id, unique prefix: store/run_lookup.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.enums import ExecutionStatus
from conveyor.exceptions import ConveyorError
from conveyor.execution.logs import (  # the one reader of stored logs (chunks, or the file)
    LogTail,
    read_log,
)

if TYPE_CHECKING:
    import threading

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.context import Context
    from conveyor.store.store import MetadataStore

__all__ = ["LogChunk", "RunStop", "RunTakenOverError", "StopTimeoutError", "cancel_jobs", "check_step",
           "follow_logs", "follow_run_logs", "read_log", "run_artifact_store", "stop_run"]

#: statuses of a step that has not ended
STEP_ACTIVE = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)
#: how often the store is polled while waiting for a run to stop, or for new log output
POLL_S = 0.2
#: a live orchestrator polls its run's stop flag every second: this long is left to it before jobs are cancelled
#: underneath it (which could make a step look crashed instead of stopped)
ORCHESTRATOR_GRACE_S = 8.0


class StopTimeoutError(ConveyorError):
    """The run's orchestrator is alive and has not stopped the run within the wait."""


class RunTakenOverError(ConveyorError):
    """Another process took the run's lease (a `conveyor run resume`) while it was being stopped."""


@dataclass(frozen=True)
class RunStop:
    """What stopping a run did."""

    run_id: str
    run_name: str
    #: the run's status when the stop was asked; anything but "running" means nothing was done
    status_before: str
    #: the run's status afterwards ("stopped" once the stop has happened)
    status: str
    #: one line per backend job cancelled through its receipt (or that could not be)
    cancelled: tuple[str, ...] = ()
    #: the run's orchestrator was gone: the run and its unfinished steps were marked stopped here
    marked_by_stop: bool = False

    @property
    def requested(self) -> bool:
        return self.status_before == ExecutionStatus.RUNNING


def stop_run(ctx: "Context", name_or_id: str, *, wait_s: float = 15.0,
             on_message: Callable[[str], None] | None = None) -> RunStop:
    """Stop run `name_or_id`: flag it so its orchestrator cancels its steps, cancel every step's backend job
    through its receipt, and, when its orchestrator is gone, mark the run and its unfinished steps stopped.

    `on_message` hears each job cancellation as it happens. Raises StopTimeoutError when a live orchestrator has
    not stopped the run within `wait_s` seconds, RunTakenOverError when a resume took the run over meanwhile."""
    from conveyor.execution.liveness import orchestrator_alive, owner
    from conveyor.store.run_lookup import find_pipeline_run

    store = ctx.store
    run = find_pipeline_run(store, name_or_id)
    run_id, name = run["id"], run["name"]
    if run["status"] != ExecutionStatus.RUNNING:
        return RunStop(run_id, name, run["status"], run["status"])
    store.update_run(run_id, stop_requested=True)
    deadline = time.monotonic() + wait_s
    cancelled: set[str] = set()
    messages: list[str] = []

    def cancel() -> None:
        for message in cancel_jobs(ctx, run_id, cancelled):
            messages.append(message)
            if on_message is not None:
                on_message(message)

    row = store.find_run(run_id) or {}
    if orchestrator_alive(row, store):
        # Its orchestrator polls the flag every second and cancels its own steps, recording them as stopped.
        row = _wait_not_running(store, run_id, min(ORCHESTRATOR_GRACE_S, wait_s))
    if row.get("status") == ExecutionStatus.RUNNING:
        cancel()
        if orchestrator_alive(row, store):
            row = _wait_not_running(store, run_id, max(0.0, deadline - time.monotonic()))
        else:
            row = store.find_run(run_id) or {}
    marked = False
    if row.get("status") == ExecutionStatus.RUNNING:
        if orchestrator_alive(row, store):
            raise StopTimeoutError(
                f"run {name} is still running after {wait_s:g}s: its orchestrator ({owner(row, store)}) has not "
                f"stopped yet. In-process steps stop at their next Python instruction; check again with "
                f"`conveyor run describe {name}`")
        _mark_stopped(store, run_id, name, cancel)
        marked = True
    final = store.find_run(run_id) or row
    return RunStop(run_id, name, ExecutionStatus.RUNNING, final.get("status", ""), tuple(messages), marked)


def _mark_stopped(store: "MetadataStore", run_id: str, name: str, cancel: Callable[[], None]) -> None:
    """Record the stop of a run whose orchestrator is gone, owning the run meanwhile: a `conveyor run resume`
    cannot take it over halfway."""
    from conveyor.execution.lease import LeaseHeldError, RunLease
    from conveyor.store.store import now

    lease = RunLease(store, run_id)
    try:
        lease.acquire()
    except LeaseHeldError as err:
        raise RunTakenOverError(f"run {name} was taken over meanwhile by {err.holder.describe()}: run "
                                f"`conveyor run stop {name}` again to stop it there") from None
    try:
        cancel()  # steps that started meanwhile
        ts = now()
        for s in store.step_runs(run_id):
            if s["status"] in STEP_ACTIVE:
                store.update_step_run(s["id"], status=ExecutionStatus.STOPPED.value, end_time=ts,
                                      error="stopped by `conveyor run stop` (its orchestrator was gone)",
                                      failure_kind="stopped")
        store.update_run(run_id, status=ExecutionStatus.STOPPED.value, end_time=ts,
                         error="stopped by `conveyor run stop`")
    finally:
        lease.release()


def cancel_jobs(ctx: "Context", run_id: str, done: set[str]) -> list[str]:
    """Cancel, through its receipt, the backend job of every running step not in `done` (step run ids, updated);
    one line per job, for people."""
    from conveyor.stack.stack import build_component

    messages = []
    for row in ctx.store.step_runs(run_id):
        if row["status"] != ExecutionStatus.RUNNING or not row["submission"] or not row["operator"] or row["id"] in done:
            continue
        done.add(row["id"])
        record = ctx.store.get_component("step_operator", row["operator"])
        if record is None:
            messages.append(f"step {row['name']!r}: step operator {row['operator']!r} no longer exists; "
                            f"cancel job {row['submission'].get('job_name')} by hand")
            continue
        try:
            operator = build_component(ctx.registry, record, ctx.vault)
            operator.cancel(_submission(row["submission"]))  # type: ignore[attr-defined]
            messages.append(f"step {row['name']!r}: cancelled job {row['submission'].get('job_name')} "
                            f"on step operator {row['operator']!r}")
        except (ConveyorError, OSError) as err:
            messages.append(f"step {row['name']!r}: could not cancel its job: {err}")
    return messages


def _submission(receipt: dict[str, Any]) -> Any:
    """The stored receipt as the Submission the operator returned when it submitted the job."""
    from conveyor.step_operators.info import Submission

    known = {"flavor", "job_name", "backend_id", "data"}
    data = dict(receipt.get("data") or {})
    data.update({k: v for k, v in receipt.items() if k not in known})
    return Submission(flavor=receipt.get("flavor", ""), job_name=receipt.get("job_name", ""),
                      backend_id=receipt.get("backend_id"), data=data)


def _wait_not_running(store: "MetadataStore", run_id: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        row = store.find_run(run_id) or {}
        if row.get("status") != ExecutionStatus.RUNNING or time.monotonic() >= deadline:
            return row
        time.sleep(POLL_S)


# -- logs ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogChunk:
    """New output of one step's log, or an event of the follow (`attempt` set: a retry began a new log;
    `abandoned`: the run's orchestrator is gone, so the follow ended)."""

    step: str
    text: str = ""
    attempt: int | None = None
    abandoned: bool = False


def run_artifact_store(ctx: "Context", stack_name: str) -> "ArtifactStore":
    """The artifact store a run wrote to: its stack's, or the active stack's once that stack is gone."""
    try:
        return ctx.load_stack(stack_name).artifact_store.artifact_store()
    except ConveyorError:
        return ctx.load_stack().artifact_store.artifact_store()


def check_step(run_name: str, steps: list[str], step: str | None) -> list[str]:
    """The steps whose logs to show: `step`, or every step when None; an unknown step names the run's steps."""
    if step is None:
        return list(steps)
    if step not in steps:
        raise ConveyorError(f"run {run_name} has no step {step!r}; its steps: {', '.join(steps) or '(none)'}")
    return [step]


def follow_run_logs(ctx: "Context", name_or_id: str, step: str | None = None, *,
                    stop: "threading.Event | None" = None) -> Iterator[LogChunk]:
    """Follow the log of `step` of run `name_or_id`, or of all its steps (as `[step] ` lines) when None.
    An unknown run or step is an error here, before anything is followed. Setting `stop` ends the follow within
    a poll, output or not (a reader that left)."""
    from conveyor.store.run_lookup import find_pipeline_run

    run = find_pipeline_run(ctx.store, name_or_id)
    names = check_step(run["name"], [s["name"] for s in ctx.store.step_runs(run["id"])], step)
    store = run_artifact_store(ctx, run["stack_name"])
    return follow_logs(ctx, run["id"], names, store, prefix=step is None, stop=stop)


def follow_logs(ctx: "Context", run_id: str, steps: list[str], store: "ArtifactStore", *,
                prefix: bool = False, stop: "threading.Event | None" = None) -> Iterator[LogChunk]:
    """Poll the metadata store for each step's log location and status, and yield new output until every step
    has ended (or the run has, or its orchestrator is gone, or `stop` is set). With `prefix`, output comes as whole
    lines, each begun with `[step] ` (for several steps at once)."""
    from conveyor.execution.liveness import shown_status

    tails = {n: LogTail(store) for n in steps}
    partial = {n: "" for n in steps}

    def out(name: str, text: str, final: bool = False) -> Iterator[LogChunk]:
        if not prefix:
            if text:
                yield LogChunk(name, text)
            return
        partial[name] += text
        *lines, partial[name] = partial[name].split("\n")
        if final and partial[name]:
            lines.append(partial[name])
            partial[name] = ""
        if lines:
            yield LogChunk(name, "".join(f"[{name}] {line}\n" for line in lines))

    while True:
        rows = {s["name"]: s for s in ctx.store.step_runs(run_id)}
        run_row = ctx.store.find_run(run_id) or {}
        run_over = run_row.get("status") != ExecutionStatus.RUNNING or shown_status(run_row) == "abandoned"
        done = True
        for name in steps:
            row = rows.get(name, {})
            previous = tails[name].uri
            if tails[name].switch(row.get("logs_uri")) and previous is not None:  # a retry writes a new log
                yield from out(name, "", final=True)
                yield LogChunk(name, attempt=row.get("attempt"))
            yield from out(name, tails[name].read())
            if row.get("status") in STEP_ACTIVE and not run_over:
                done = False
        if done:
            for name in steps:  # what was written between the read and the status check
                yield from out(name, tails[name].read(), final=True)
            if run_row.get("status") == ExecutionStatus.RUNNING and shown_status(run_row) == "abandoned":
                yield LogChunk("", abandoned=True)
            return
        if stop is None:
            time.sleep(POLL_S)
        elif stop.wait(POLL_S):
            return
