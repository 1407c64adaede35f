"""`conveyor run resume`: finish a run whose orchestrator died, failed or was stopped, without redoing work.

Finished steps keep their outputs; a step whose backend job is still known is followed through its receipt
(never submitted twice); everything else runs again as a new attempt.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from conveyor.artifacts.layout import AttemptLayout
from conveyor.enums import SUCCESSFUL_STATUSES, StepStatus
from conveyor.exceptions import ConveyorError
from conveyor.execution.jobspec import ArtifactRef

if TYPE_CHECKING:
    from conveyor.context import Context
    from conveyor.execution.run import FinishedRun


class ResumeError(ConveyorError):
    pass


def resume_run(run_ref: str, ctx: "Context | None" = None) -> "FinishedRun":
    """Take the run's lease (refused while its orchestrator lives, naming it), then finish the run. `run_ref` is
    a run's name, id or unique prefix of either."""
    from conveyor.context import get_context
    from conveyor.execution.lease import LeaseHeldError, RunLease
    from conveyor.execution.liveness import orchestrator_alive, owner
    from conveyor.store.run_lookup import find_pipeline_run

    ctx = ctx or get_context()
    store = ctx.store
    row = find_pipeline_run(store, run_ref)
    name = row["name"]
    if row["status"] == StepStatus.COMPLETED:
        raise ResumeError(f"run {name} already completed: there is nothing to resume")
    if row["status"] == StepStatus.RUNNING and orchestrator_alive(row, store):
        raise _still_running(name, owner(row, store))
    lease = RunLease(store, row["id"])
    try:
        lease.acquire()
    except LeaseHeldError as err:
        raise _still_running(name, err.holder.describe()) from None
    try:
        return _resume(ctx, store.find_run(row["id"]) or row)
    finally:
        lease.release()


def _still_running(name: str, holder: str) -> ResumeError:
    return ResumeError(f"run {name} is still running: its orchestrator ({holder}) owns it. Wait for it to end, or "
                       f"`conveyor run stop {name}` first; an orchestrator suspended with Ctrl-Z still owns its run "
                       f"until it is resumed (`fg`) or killed")


def _resume(ctx: Any, row: dict[str, Any]) -> "FinishedRun":
    """Run what is left of the run; this process holds the run's lease."""
    from conveyor.execution.run import FinishedRun, resolve_steps
    from conveyor.pipelines.compiler import snapshot_from_spec
    from conveyor.utils.procs import process_start

    store = ctx.store
    name = row["name"]
    if row["status"] == StepStatus.COMPLETED:  # it ended while we took the lease
        raise ResumeError(f"run {name} already completed: there is nothing to resume")
    stored = store.get_snapshot(row["snapshot_id"])
    snapshot = snapshot_from_spec(stored["spec"], stored["spec_hash"])
    stack = ctx.load_stack(row["stack_name"])
    resolved = resolve_steps(snapshot, stack)
    step_rows = {s["name"]: s for s in store.step_runs(row["id"])}
    artifacts = stack.artifact_store.artifact_store()
    artifacts.check_usable()
    statuses, outputs, reattach, attempts = _plan(store, step_rows)
    if not store.claim_run(row["id"], previous=(row["pid"], row["heartbeat"]), host=socket.gethostname(),
                           pid=os.getpid(), pid_start=process_start(os.getpid())):
        raise ResumeError(f"run {name} was resumed by another process at the same moment")
    # what writers killed mid-write left (hidden .NAME.tmp-* folders), except where a followed job still writes
    artifacts.remove_temporaries(artifacts.join("runs", row["id"]), keep=[
        AttemptLayout(artifacts.root, row["id"], n, r["attempt"]).uri for n, r in reattach.items()])
    failures = stack.orchestrator.run(
        store=store, artifacts=artifacts, stack=stack, snapshot=snapshot,
        run_id=row["id"], run_name=name, step_ids={n: s["id"] for n, s in step_rows.items()}, resolved=resolved,
        statuses=statuses, outputs=outputs, reattach=reattach, previous_attempts=attempts)
    return FinishedRun(row["id"], list(failures or []))


def _plan(store: Any, step_rows: dict[str, dict[str, Any]]) -> tuple[dict[str, str], dict[str, dict[str, ArtifactRef]],
                                                                     dict[str, dict[str, Any]], dict[str, int]]:
    """What is already done (with its outputs), which backend jobs to follow, and how many attempts each step made."""
    done = {n: s for n, s in step_rows.items() if s["status"] in SUCCESSFUL_STATUSES}
    outputs: dict[str, dict[str, ArtifactRef]] = {n: {} for n in done}
    by_id = {s["id"]: n for n, s in done.items()}
    for link in store.step_run_artifacts(list(by_id)):
        if link["direction"] == "output":  # the link's name is the output's; the artifact's is artifact_name
            outputs[by_id[link["step_run_id"]]][link["name"]] = ArtifactRef.from_json(
                {**link, "name": link.get("artifact_name")})
    reattach = {}
    for n, s in step_rows.items():
        receipt = s["submission"] or {}
        if (s["status"] == StepStatus.RUNNING and s["operator"] and receipt
                and (receipt.get("data") or {}).get("state") != "submitting"):
            reattach[n] = {"attempt": s["attempt"], "submission": receipt}
    attempts = {n: s["attempt"] or 0 for n, s in step_rows.items()}
    return {n: s["status"] for n, s in done.items()}, outputs, reattach, attempts
