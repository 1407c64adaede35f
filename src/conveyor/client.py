"""Views of runs, steps and artifacts, the active stack, and the calls that steer runs and manage components.

No business logic lives here: reads build views from the store, and every action (stop, resume, follow logs,
register/update/delete a component) calls the library function that the CLI calls too."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable

from conveyor.enums import ExecutionStatus
from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.config.resources import ResourceSettings
    from conveyor.context import Context
    from conveyor.execution.run import FinishedRun
    from conveyor.execution.run_deletion import RunDeletion
    from conveyor.execution.steering import LogChunk, RunStop
    from conveyor.stack.lifecycle import ComponentCopy, ComponentRename, ComponentSaved
    from conveyor.stack.stack import Stack


def _duration(start: datetime | None, end: datetime | None) -> timedelta | None:
    return end - start if start and end else None


@dataclass(frozen=True)
class ArtifactView:
    id: str
    name: str
    uri: str
    materializer: str
    data_type: str
    checksum: str | None
    size: int | None
    _store: "ArtifactStore" = field(repr=False, compare=False)
    #: the artifact's version ("1", "2", ...; None for an artifact recorded before versions existed); `name` is the
    #: artifact's name (ZenML's), `output_name` the step output it came from (conveyor.artifacts.registry)
    version: str | None = None
    output_name: str | None = None
    run_metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    producer_step_run_id: str | None = None
    producer_step_name: str | None = None
    producer_run_id: str | None = None
    producer_run_name: str | None = None
    created: datetime | None = None

    def load(self) -> Any:
        from conveyor.artifacts.materializers import load_artifact

        # a step's output is named as the step names it; an artifact version by its name and version
        label = (f"artifact {self.output_name!r}" if self.output_name
                 else f"artifact {self.name!r}" + (f" version {self.version}" if self.version else "")) + f" (id {self.id})"
        return load_artifact(self.uri, self._store, self.materializer, self.data_type, checksum=self.checksum,
                             label=label)


@dataclass(frozen=True)
class StepConfigView:
    step_operator: str | None
    step_operator_flavor: str | None
    #: as recorded (a dict); `resource_settings` validates it when asked, so reading a run loads no pydantic
    resource_settings_json: dict[str, Any]
    settings: dict[str, Any]
    operator_settings: dict[str, Any] | None
    parameters: dict[str, Any]
    retry: dict[str, Any] | None
    timeout: float | None
    enable_cache: bool

    @property
    def resource_settings(self) -> "ResourceSettings":
        from conveyor.config.resources import ResourceSettings

        return ResourceSettings.model_validate(self.resource_settings_json)


@dataclass(frozen=True)
class StepRunView:
    id: str
    name: str
    status: ExecutionStatus | str
    start_time: datetime | None
    end_time: datetime | None
    attempt: int
    config: StepConfigView
    error: str | None
    failure_kind: str | None
    traceback: str | None
    cache_key: str | None
    cached_from: str | None
    submission: dict[str, Any] | None
    logs_uri: str | None
    inputs: dict[str, ArtifactView]
    outputs: dict[str, ArtifactView]
    _store: "ArtifactStore" = field(repr=False, compare=False)
    run_metadata: dict[str, Any] = field(default_factory=dict, compare=False)  # what `log_metadata` attached

    @property
    def duration(self) -> timedelta | None:
        return _duration(self.start_time, self.end_time)

    @property
    def operator(self) -> str | None:
        return self.config.step_operator

    def logs(self) -> str:
        """The step's stored output ('' when it produced none or ran from cache), so far while it runs."""
        from conveyor.execution.logs import read_log

        return read_log(self._store, self.logs_uri)


@dataclass(frozen=True)
class PipelineRun:
    id: str
    name: str
    pipeline_name: str
    status: ExecutionStatus | str
    stack_name: str
    start_time: datetime | None
    end_time: datetime | None
    heartbeat: datetime | None
    host: str | None
    pid: int | None
    error: str | None
    steps: "OrderedDict[str, StepRunView]"
    pid_start: str | None = None  # start time of `pid` (utils.procs.process_start): a reused pid is not the owner
    #: what `log_metadata(..., run_id_name_or_prefix=...)` attached to the run itself (read with its steps)
    run_metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def duration(self) -> timedelta | None:
        return _duration(self.start_time, self.end_time)


@dataclass(frozen=True)
class PipelineView:
    """A pipeline and its runs (ZenML's `PipelineResponse`): `.runs` newest first, `.last_run`,
    `.last_successful_run`; the runs are read when asked for."""

    id: str
    name: str
    created: datetime | None
    run_count: int
    last_run_id: str | None
    _client: "Client" = field(repr=False, compare=False)

    @property
    def runs(self) -> list[PipelineRun]:
        return self._client.list_pipeline_runs(self.name, size=None)

    @property
    def last_run(self) -> PipelineRun | None:
        return self._client.get_pipeline_run(self.last_run_id) if self.last_run_id else None

    @property
    def last_successful_run(self) -> PipelineRun | None:
        done = self._client.list_pipeline_runs(self.name, "completed", size=1)
        return self._client.get_pipeline_run(done[0].id) if done else None


class Client:
    """`Client().get_pipeline_run(name_or_id)`, `list_pipeline_runs()`, `active_stack`."""

    def __init__(self, context: "Context | None" = None) -> None:
        from conveyor.context import get_context

        self.context = context or get_context()

    @property
    def store(self) -> Any:
        return self.context.store

    @cached_property
    def active_stack(self) -> "Stack":
        return self.context.load_stack()

    def _artifact_store(self, stack_name: str) -> "ArtifactStore":
        from conveyor.execution.steering import run_artifact_store

        return run_artifact_store(self.context, stack_name)

    def get_pipeline_run(self, name_id_or_prefix: str, run_name: str | bool | None = None, *,
                         allow_name_prefix_match: bool = True, hydrate: bool = True) -> PipelineRun:
        """A run by name, id or unique prefix of either; or, as in ZenML's docs, by pipeline name and run name:
        `get_pipeline_run("training_pipeline", "run_name")`. A bool second argument is ZenML's
        `allow_name_prefix_match`. An ambiguous prefix is an error that lists the candidates."""
        from conveyor.store.run_lookup import find_pipeline_run

        if isinstance(run_name, bool):
            allow_name_prefix_match, run_name = run_name, None
        row = find_pipeline_run(self.store, name_id_or_prefix, run_name, allow_name_prefix_match)
        return self._run_view(row)  # `hydrate` is accepted for ZenML's signature: a run always has its steps

    def list_pipeline_runs(self, pipeline_name: str | None = None, status: str | None = None,
                           size: int | None = 50) -> list[PipelineRun]:
        return [self._run_view(r, with_steps=False) for r in self.store.list_runs(pipeline_name, status, size)]

    def list_pipelines(self) -> list[PipelineView]:
        """Every pipeline that has been run, by name."""
        return [self._pipeline_view(p) for p in self.store.pipeline_summaries()]

    def get_pipeline(self, name: str) -> PipelineView:
        rows = self.store.pipeline_summaries(name)
        if not rows:
            known = ", ".join(p["name"] for p in self.store.pipeline_summaries()) or "(none yet)"
            raise ConveyorError(f"no pipeline named {name!r}; pipelines: {known} (see `conveyor pipeline list`)")
        return self._pipeline_view(rows[0])

    def delete_pipeline_run(self, name_or_id: str, *, delete_artifacts: bool = False) -> "RunDeletion":
        """Delete a finished run's records (and with `delete_artifacts` the artifacts only it uses)."""
        from conveyor.execution.run_deletion import delete_pipeline_run

        return delete_pipeline_run(self.context, name_or_id, delete_artifacts=delete_artifacts)

    # -- steering runs (conveyor.execution.steering) -------------------------------------------------------------
    def stop_run(self, name_or_id: str, *, wait_s: float = 15.0,
                 on_message: Callable[[str], None] | None = None) -> "RunStop":
        """Stop a run, from any process: as `conveyor run stop`. `.requested` is False when it had already ended;
        `on_message` hears each backend job cancelled. Raises when a live orchestrator has not stopped the run
        within `wait_s`, naming what to check."""
        from conveyor.execution.steering import stop_run

        return stop_run(self.context, name_or_id, wait_s=wait_s, on_message=on_message)

    def resume_run(self, name_or_id: str) -> PipelineRun:
        """Finish a run whose orchestrator died, or that failed or was stopped, in this process: as
        `conveyor run resume`. Raises RunFailedError (with the run's view) when steps fail again."""
        from conveyor.execution.resume import resume_run

        return finished_run_view(resume_run(name_or_id, self.context), self)

    def follow_logs(self, name_or_id: str, step: str | None = None) -> Iterator[str]:
        """The stored output of `step` of a run as it is written, until the step ends (all steps, as `[step] `
        lines, when None): `for text in Client().follow_logs(run, "train"): print(text, end="")`."""
        for chunk in self.follow_log_events(name_or_id, step):
            if chunk.text:
                yield chunk.text

    def follow_log_events(self, name_or_id: str, step: str | None = None) -> Iterator["LogChunk"]:
        """As `follow_logs`, with the follow's events too: a retry's new attempt, an abandoned run."""
        from conveyor.execution.steering import follow_run_logs

        return follow_run_logs(self.context, name_or_id, step)

    # -- components (conveyor.stack.lifecycle) ---------------------------------------------------------------------
    def register_component(self, component_type: str, name: str, flavor: str, /,
                           **config: Any) -> "ComponentSaved":
        """Register a stack component: `register_component("step_operator", "gpu", "local", pending_timeout="10m")`,
        validated as `conveyor step-operator register` validates it."""
        from conveyor.stack.lifecycle import register_component

        return register_component(self.store, self.context.registry, component_type, name, flavor, config)

    def update_component(self, component_type: str, name: str, /, **changes: Any) -> "ComponentSaved":
        """Merge `changes` into a component's config; the result is validated before it is saved."""
        from conveyor.stack.lifecycle import update_component

        return update_component(self.store, self.context.registry, component_type, name, changes)

    def delete_component(self, component_type: str, name: str) -> None:
        """Delete a component; refused while a stack holds it."""
        from conveyor.stack.lifecycle import delete_component

        delete_component(self.store, component_type, name)

    def rename_component(self, component_type: str, name: str, new_name: str) -> "ComponentRename":
        from conveyor.config.names import check_name
        from conveyor.stack.lifecycle import get_component, rename_component

        check_name(component_type.replace("_", " "), new_name)
        get_component(self.store, component_type, name)
        return rename_component(self.store, component_type, name, new_name)

    def copy_component(self, component_type: str, source: str, target: str) -> "ComponentCopy":
        from conveyor.config.names import check_name
        from conveyor.stack.lifecycle import copy_component, get_component

        check_name(component_type.replace("_", " "), target)
        get_component(self.store, component_type, source)
        return copy_component(self.store, component_type, source, target)

    def _pipeline_view(self, row: dict[str, Any]) -> PipelineView:
        last = row.get("last_run")
        return PipelineView(id=row["id"], name=row["name"], created=row.get("created"), run_count=row["run_count"],
                            last_run_id=last["id"] if last else None, _client=self)

    def _run_view(self, row: dict[str, Any], with_steps: bool = True) -> PipelineRun:
        steps: OrderedDict[str, StepRunView] = OrderedDict()
        if with_steps:
            store = self._artifact_store(row["stack_name"])
            step_rows = self.store.step_runs(row["id"])
            links: dict[tuple[str, str], dict[str, ArtifactView]] = {}
            artifact_rows = self.store.step_run_artifacts([s["id"] for s in step_rows])
            artifact_metadata = self.store.metadata_of("artifact_id", sorted({a["id"] for a in artifact_rows}))
            step_metadata = self.store.metadata_of("step_run_id", [s["id"] for s in step_rows])
            for a in artifact_rows:
                view = ArtifactView(a["id"], a.get("artifact_name") or a["name"], a["uri"], a["materializer"],
                                    a["data_type"], a["checksum"], a["size"], store, version=a.get("version"),
                                    output_name=a["name"], run_metadata=artifact_metadata.get(a["id"], {}),
                                    producer_step_run_id=a.get("producer_step_run_id"), created=a.get("created"))
                links.setdefault((a["step_run_id"], a["direction"]), {})[a["name"]] = view
            for s in step_rows:
                c = s["config"] or {}
                config = StepConfigView(
                    step_operator=c.get("step_operator"), step_operator_flavor=c.get("step_operator_flavor"),
                    resource_settings_json=c.get("resource_settings") or {},
                    settings=c.get("settings") or {}, operator_settings=c.get("operator_settings"),
                    parameters=c.get("parameters") or {}, retry=c.get("retry"), timeout=c.get("timeout"),
                    enable_cache=c.get("enable_cache", True))
                steps[s["name"]] = StepRunView(
                    id=s["id"], name=s["name"], status=ExecutionStatus.of(s["status"]), start_time=s["start_time"],
                    end_time=s["end_time"],
                    attempt=s["attempt"], config=config, error=s["error"], failure_kind=s["failure_kind"],
                    traceback=s["traceback"], cache_key=s["cache_key"], cached_from=s["cached_from"],
                    submission=s["submission"], logs_uri=s["logs_uri"],
                    inputs=links.get((s["id"], "input"), {}), outputs=links.get((s["id"], "output"), {}), _store=store,
                    run_metadata=step_metadata.get(s["id"], {}))
        return PipelineRun(id=row["id"], name=row["name"], pipeline_name=row["pipeline_name"],
                           status=ExecutionStatus.of(row["status"]),
                           stack_name=row["stack_name"], start_time=row["start_time"], end_time=row["end_time"],
                           heartbeat=row["heartbeat"], host=row["host"], pid=row["pid"], error=row["error"], steps=steps,
                           pid_start=row.get("pid_start"),
                           run_metadata=self.store.metadata_of("run_id", [row["id"]]).get(row["id"], {}) if with_steps else {})

    # -- artifacts by name and version (conveyor.artifacts.registry) ---------------------------------------------
    def get_artifact_version(self, name_id_or_prefix: str, version: str | int | None = None) -> ArtifactView:
        """An artifact version by name and version, by name alone (the newest), or by id (ZenML's signature)."""
        row = self.store.find_artifact_version(name_id_or_prefix, version)
        if row is None:
            which = (f"version {version} of artifact {name_id_or_prefix!r}" if version is not None
                     else f"artifact named or with id {name_id_or_prefix!r}")
            raise ConveyorError(f"no {which}: see `conveyor artifact list`")
        return self._artifact_version_view(row)

    def list_artifact_versions(self, name: str | None = None) -> list[ArtifactView]:
        """The versions of artifact `name`, oldest first (every named artifact's when None)."""
        rows = self.store.list_artifact_versions(name)
        metadata = self.store.metadata_of("artifact_id", [r["id"] for r in rows])
        return [self._artifact_version_view(r, metadata.get(r["id"], {})) for r in rows]

    def _artifact_version_view(self, row: dict[str, Any], metadata: dict[str, Any] | None = None) -> ArtifactView:
        store = (self._artifact_store(row["stack_name"]) if row.get("stack_name")
                 else self.active_stack.artifact_store.artifact_store())
        if metadata is None:
            metadata = self.store.metadata_of("artifact_id", [row["id"]]).get(row["id"], {})
        return ArtifactView(row["id"], row["name"] or row["id"], row["uri"], row["materializer"], row["data_type"],
                            row["checksum"], row["size"], store, version=row["version"], run_metadata=metadata,
                            producer_step_run_id=row["producer_step_run_id"],
                            producer_step_name=row.get("producer_step_name"), producer_run_id=row.get("producer_run_id"),
                            producer_run_name=row.get("producer_run_name"), created=row["created"])


def finished_run_view(finished: "FinishedRun", client: Client | None = None) -> PipelineRun:
    """The view of a run execution has just ended; RunFailedError, carrying that view, when steps failed."""
    from conveyor.exceptions import RunFailedError

    run = (client or Client()).get_pipeline_run(finished.run_id)
    if finished.failures:
        raise RunFailedError(run, finished.failures)
    return run
