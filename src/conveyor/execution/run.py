"""From a compiled snapshot to a finished run: pre-flight checks, records, then the orchestrator."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.execution.launcher import ResolvedStep

if TYPE_CHECKING:
    from conveyor.exceptions import StepFailedError
    from conveyor.pipelines.compiler import Snapshot
    from conveyor.stack.stack import Stack


def resolve_steps(snapshot: "Snapshot", stack: "Stack") -> dict[str, ResolvedStep]:
    """Every check that can fail without running anything runs here, before the store is touched."""
    from conveyor.config.recorded import recorded_resources
    from conveyor.execution.settings_check import StepFlavor, report_misplaced_operator_settings
    from conveyor.integrations import require_flavor_integration
    from conveyor.pipelines.compiler import thaw
    from conveyor.stack.component import ComponentType

    resolved = {}
    where_run: list[StepFlavor] = []
    for name in snapshot.order:
        spec = snapshot.step_spec(name)
        where = f"step {name!r}"
        operator_name = stack.resolve_operator_name(spec["step_operator"])
        resources = recorded_resources(spec["settings"])  # no resources set: {} without pydantic
        flavor_name = op_settings = None
        if operator_name is not None:
            from conveyor.config.settings import operator_settings

            flavor_name = stack.step_operator_flavor(operator_name)
            flavor = stack._registry.get("step_operator", flavor_name)
            require_flavor_integration("step_operator", flavor_name)  # names the pip command to run
            settings = operator_settings(spec["settings"], flavor, where)
            op_settings = settings.model_dump(exclude_unset=True, mode="json") if settings is not None else None
        config = {
            "step_operator": operator_name,
            "step_operator_flavor": flavor_name,
            "resource_settings": resources,
            "operator_settings": op_settings,
            "settings": thaw(spec["settings"]),
            "parameters": thaw(spec["parameters"]),
            "retry": thaw(spec["retry"]),
            "timeout": spec["timeout"],
            "enable_cache": spec["enable_cache"],
        }
        resolved[name] = ResolvedStep(name, operator_name, flavor_name, config)
        where_run.append(StepFlavor(name, operator_name, flavor_name, thaw(spec["settings"])))
    report_misplaced_operator_settings(where_run, thaw(snapshot.spec["settings"]),
                                       lambda: stack._registry.sources(ComponentType.STEP_OPERATOR))
    return resolved


def preflight(snapshot: "Snapshot", stack: "Stack", resolved: dict[str, ResolvedStep]) -> None:
    """Ask each operator whether it can ever honour each step's resources, before anything runs."""
    from conveyor.execution.launcher import build_step_info
    from conveyor.integrations import require_flavor_integration

    require_flavor_integration("artifact_store", stack._artifact_store["flavor"])
    for name, r in resolved.items():
        if r.operator is not None:
            operator = stack.step_operator(r.operator)
            info = build_step_info(stack, snapshot, name, operator, run_id="preflight", run_name="preflight",
                                   step_run_id="preflight", attempt=1, attempt_uri="")
            operator.check_resources(info)
            operator.prepare_step(info, store_root=stack.artifact_store.artifact_store().root,
                                  code_root=snapshot.step_spec(name)["source"].get("code_root"))


def dry_run(snapshot: "Snapshot", step_name: str, stack_name: str | None = None) -> dict[str, Any]:
    """The exact request the step's operator would send, without running anything or touching the store's runs."""
    from conveyor.context import get_context
    from conveyor.artifacts.layout import AttemptLayout
    from conveyor.execution.launcher import build_step_info, entrypoint_request, step_environment

    stack = get_context().load_stack(stack_name)
    resolved = resolve_steps(snapshot, stack)[step_name]
    if resolved.operator is None:
        raise ValueError(f"step {step_name!r} runs in-process: it has no step operator to dry-run")
    operator = stack.step_operator(resolved.operator)
    attempt_uri = AttemptLayout(stack.artifact_store.artifact_store().root, "dry-run", step_name, 1).uri
    info = build_step_info(stack, snapshot, step_name, operator, run_id="dry-run", run_name="dry-run",
                           step_run_id=f"dry-run-{step_name}", attempt=1, attempt_uri=attempt_uri)
    command, environment = entrypoint_request(info, stack.artifact_store, operator.entrypoint_config_class)
    environment.update(step_environment(snapshot.step_spec(step_name)["settings"], resolve=False))
    return operator.dry_run(info, command, environment)


def new_run_name(pipeline: str) -> str:
    return f"{pipeline}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def chosen_run_name(store: Any, pipeline: str, template: str | None) -> str:
    """`with_options(run_name=...)` with {date}/{time} filled in, refused before anything runs when taken."""
    if template is None:
        return new_run_name(pipeline)
    from conveyor.config.run_config import format_run_name
    from conveyor.exceptions import ConfigError

    name = format_run_name(template, datetime.now())
    if store.run_name_taken(name):
        raise ConfigError(f"a run named {name!r} already exists, and run names are unique: choose another "
                          f"run_name, make it unique with placeholders (run_name=\"{template}_{{date}}_{{time}}\"), "
                          f"or delete the old run first (`conveyor run delete {name}`)")
    return name


@dataclass(frozen=True)
class FinishedRun:
    """A run the orchestrator has ended: its id and the steps that failed. Execution stops here; the caller above
    (the pipeline call, `Client.resume_run`) reads the run's view and raises RunFailedError on failures."""

    run_id: str
    failures: list["StepFailedError"] = field(default_factory=list)


def run_snapshot(snapshot: "Snapshot", stack_name: str | None = None, run_name: str | None = None) -> FinishedRun:
    from conveyor.context import get_context
    from conveyor.execution.lease import RunLease
    from conveyor.pipelines.compiler import thaw
    from conveyor.store.store import new_id
    from conveyor.utils.procs import process_start

    ctx = get_context()
    run_name = chosen_run_name(ctx.store, snapshot.pipeline_name, run_name)
    stack = ctx.load_stack(stack_name)
    resolved = resolve_steps(snapshot, stack)
    preflight(snapshot, stack, resolved)
    artifacts = stack.artifact_store.artifact_store()
    artifacts.check_usable()
    store = ctx.store
    pipeline_id, snapshot_id = store.get_or_create_snapshot(snapshot.pipeline_name, snapshot.spec_hash, thaw(snapshot.spec))
    # this process owns the run from before it exists until it has ended (execution/lease.py)
    with RunLease(store, new_id()) as lease:
        run_id, step_ids = store.create_run(
            name=run_name, pipeline_id=pipeline_id, snapshot_id=snapshot_id, stack_name=stack.name,
            host=socket.gethostname(), pid=os.getpid(), pid_start=process_start(os.getpid()), run_id=lease.run_id,
            steps=[(n, resolved[n].config, resolved[n].operator, resolved[n].flavor) for n in snapshot.order])
        failures = stack.orchestrator.run(store=store, artifacts=artifacts, stack=stack, snapshot=snapshot,
                                          run_id=run_id, run_name=run_name, step_ids=step_ids, resolved=resolved)
    return FinishedRun(run_id, list(failures or []))


def where_label(r: ResolvedStep) -> str:
    return "in-process" if r.operator is None else f"{r.operator} ({r.flavor})"


