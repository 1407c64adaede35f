"""Deleting a pipeline run: its records, and on request the artifacts only it uses.

A run still owned by a live process (its lease held, execution/lease.py) is refused: its orchestrator would go on
writing records that no longer have a run. Deletion holds the run's lease itself, so no `conveyor run resume`
can take the run over halfway. An artifact another run still uses (a later run's cache hit links the very same
artifact) is kept, records and files, and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from conveyor.context import Context

__all__ = ["KeptArtifact", "RunDeletion", "RunStillRunningError", "delete_pipeline_run"]


class RunStillRunningError(ConveyorError):
    """The run's orchestrator is alive."""


@dataclass(frozen=True)
class KeptArtifact:
    """An artifact of the deleted run that other runs still use."""

    id: str
    uri: str
    used_by: tuple[str, ...]


@dataclass(frozen=True)
class RunDeletion:
    """What deleting a run did."""

    run_id: str
    run_name: str
    deleted_artifacts: tuple[str, ...] = ()  # their URIs
    kept_artifacts: tuple[KeptArtifact, ...] = ()
    files_not_removed: tuple[str, ...] = field(default=())  # "uri: reason" for files the store refused to remove


def delete_pipeline_run(ctx: "Context", name_or_id: str, *, delete_artifacts: bool = False) -> RunDeletion:
    """Delete run `name_or_id` (name, id or id prefix); with `delete_artifacts`, also its own artifacts' files."""
    from conveyor.execution.lease import LeaseHeldError, RunLease
    from conveyor.execution.liveness import orchestrator_alive, owner
    from conveyor.store.run_lookup import find_pipeline_run

    store = ctx.store
    run = find_pipeline_run(store, name_or_id)
    run_id, run_name, stack_name = run["id"], run["name"], run["stack_name"]
    refuse = (f"run {run_name} is still running ({{who}}): stop it first with `conveyor run stop {run_name}`, "
              f"then delete it")
    if str(run["status"]) == "running" and orchestrator_alive(run, store):
        raise RunStillRunningError(refuse.format(who=f"its orchestrator is {owner(run, store)}"))
    lease = RunLease(store, run_id)
    try:
        lease.acquire()
    except LeaseHeldError as err:
        raise RunStillRunningError(refuse.format(who=f"owned by {err.holder.describe()}")) from None
    try:
        plan = store.delete_run(run_id, artifacts=delete_artifacts)
    finally:
        lease.release()
    kept = tuple(KeptArtifact(a["id"], a["uri"], tuple(users)) for a, users in plan["kept"])
    deleted = tuple(a["uri"] for a in plan["deleted"])
    failed: list[str] = []
    if delete_artifacts:
        failed = _remove_files(ctx, stack_name, run_id, plan["deleted"], plan["logs"], [k.uri for k in kept])
    return RunDeletion(run_id, run_name, deleted, kept, tuple(failed))


def _remove_files(ctx: "Context", stack_name: str, run_id: str, rows: list[dict[str, Any]], logs: list[str],
                  keep: list[str]) -> list[str]:
    """The artifacts' index entries and files, and the run's logs; the run's whole folder when nothing in it is
    kept."""
    from conveyor.artifacts.registry import remove_index
    from conveyor.artifacts.store import ArtifactStoreError
    from conveyor.execution.logs import stored_log_uris
    from conveyor.execution.steering import run_artifact_store

    store = run_artifact_store(ctx, stack_name)
    run_dir = store.join("runs", run_id)
    artifact_uris = [a["uri"] for a in rows]
    failed = []
    try:
        remove_index(store, rows)
    except ArtifactStoreError as err:
        failed.append(f"{store.join('artifact_index')}: {err}")
    logs = [part for uri in logs for part in stored_log_uris(uri)]  # and chunks a writer that died left
    targets = [run_dir] if not any(u.startswith(run_dir + "/") for u in keep) else [*artifact_uris, *logs]
    targets += [u for u in artifact_uris if not u.startswith(run_dir + "/")] if targets == [run_dir] else []
    for uri in targets:
        try:
            if store.exists(uri):
                store.rm(uri, recursive=True)
        except ArtifactStoreError as err:
            failed.append(f"{uri}: {err}")
    return failed
