"""Views of runs, steps and artifacts, the active stack, and the calls that steer runs and manage components.

No business logic lives here: reads build views from the store, and every action (stop, resume, follow logs,
register/update/delete a component) calls the library function that the CLI calls too."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, Callable

from conveyor.enums import ExecutionStatus
from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    import threading

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
class AttemptView:
    """One try of a step (store table `step_attempts`): when each phase began, where it ran and what it used.

    Phases: queued from `submitted` (or `queued`) to `started`, running to `finished`, publishing to `published`.
    An in-process attempt is submitted and started at once and has no backend job id."""

    number: int
    status: ExecutionStatus | str
    failure_kind: str | None = None
    submitted: datetime | None = None  # handed to the step operator (in-process: when it started)
    queued: datetime | None = None  # first seen waiting in the backend's queue
    queue_reason: str | None = None  # the backend's own words (Slurm `Reason=`, a pod's pending reason, ...)
    started: datetime | None = None  # the backend reported it running
    finished: datetime | None = None  # the backend job ended
    published: datetime | None = None  # its outputs were recorded
    backend_job_id: str | None = None  # Slurm job id, pod/job name, cloud job name, Ray submission id, pid, ...
    host: str | None = None  # the machine/node the step's process ran on (from the remote side)
    image_digest: str | None = None
    code_hash: str | None = None
    requested: dict[str, Any] = field(default_factory=dict)  # the ResourceSettings asked for, as recorded
    peak_rss_bytes: int | None = None  # what the step's process used (from the remote side)
    cpu_seconds: float | None = None
    operator: str | None = None  # step operator name (None: in-process)
    operator_flavor: str | None = None
    error: str | None = None
    traceback: str | None = None
    logs_uri: str | None = None

    @property
    def queued_for(self) -> timedelta | None:
        return _duration(self.submitted, self.started)

    @property
    def ran_for(self) -> timedelta | None:
        return _duration(self.started, self.finished)

    @property
    def publishing_for(self) -> timedelta | None:
        return _duration(self.finished, self.published)


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
    #: every attempt, oldest first (empty for a run recorded before attempts were)
    attempts: tuple[AttemptView, ...] = ()
    #: the steps this one waits for (the DAG's edges, from the run's snapshot)
    upstream: tuple[str, ...] = ()

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


#: what a secret config value shows as (the CLI's tables show the same)
SECRET_MASK = "********"


@dataclass(frozen=True)
class ComponentView:
    type: str
    name: str
    flavor: str
    config: dict[str, Any]  # as stored, secrets masked (a `{{name.key}}` reference is shown as written)


@dataclass(frozen=True)
class StackView:
    name: str
    active: bool
    components: tuple[ComponentView, ...]  # step operators in order: the first is the default


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
                           size: int | None = 50, *, stack: str | None = None, operator: str | None = None,
                           offset: int = 0) -> list[PipelineRun]:
        """Runs newest first, without their steps; `operator`: runs with a step on that step operator; `offset`
        with `size` reads one page (the dashboard's runs list)."""
        rows = self.store.list_runs(pipeline_name, status, size, stack=stack, operator=operator, offset=offset)
        return [self._run_view(r, with_steps=False) for r in rows]

    def step_log(self, step: "StepRunView", attempt: int | None = None) -> str:
        """The stored output of one attempt of `step` (its latest when None; '' when that attempt wrote none)."""
        from conveyor.execution.logs import read_log

        if attempt is None or attempt == step.attempt:
            return step.logs()
        uri = next((a.logs_uri for a in step.attempts if a.number == attempt), None)
        return read_log(step._store, uri)

    def list_stacks(self) -> list["StackView"]:
        """Every stack with its components; secret config values masked, secret references (`{{name.key}}`) kept."""
        from conveyor.stack.flavor_description import secret_field_names

        active = self.context.active_stack_name
        views = []
        for name in self.store.list_stacks():
            record = self.store.get_stack(name)
            if record is None:
                continue
            components = []
            for c in record["components"]:
                config = dict(c["config"] or {})
                try:
                    secret = secret_field_names(self.context.registry.get(c["type"], c["flavor"]).config_class)
                except ConveyorError:
                    secret = set()
                components.append(ComponentView(c["type"], c["name"], c["flavor"],
                                                {k: SECRET_MASK if k in secret else v for k, v in config.items()}))
            views.append(StackView(name, name == active, tuple(components)))
        return views

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

    def follow_log_events(self, name_or_id: str, step: str | None = None, *,
                          stop: "threading.Event | None" = None) -> Iterator["LogChunk"]:
        """As `follow_logs`, with the follow's events too: a retry's new attempt, an abandoned run. Setting `stop`
        (from another thread) ends it within a poll even while the step prints nothing."""
        from conveyor.execution.steering import follow_run_logs

        return follow_run_logs(self.context, name_or_id, step, stop=stop)

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
            attempts = self.store.step_attempts(run_id=row["id"])  # one query for the whole run
            upstream = _upstream(self.store, row.get("snapshot_id"))
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
                    run_metadata=step_metadata.get(s["id"], {}),
                    attempts=tuple(_attempt_view(a) for a in attempts.get(s["id"], ())),
                    upstream=upstream.get(s["name"], ()))
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


def _attempt_view(row: dict[str, Any]) -> AttemptView:
    return AttemptView(
        number=row["number"], status=ExecutionStatus.of(row["status"]), failure_kind=row["failure_kind"],
        submitted=row["submitted"], queued=row["queued"], queue_reason=row["queue_reason"], started=row["started"],
        finished=row["finished"], published=row["published"], backend_job_id=row["backend_job_id"], host=row["host"],
        image_digest=row["image_digest"], code_hash=row["code_hash"], requested=row["requested"] or {},
        peak_rss_bytes=row["peak_rss_bytes"], cpu_seconds=row["cpu_seconds"], operator=row["operator"],
        operator_flavor=row["operator_flavor"], error=row["error"], traceback=row["traceback"],
        logs_uri=row["logs_uri"])


def _upstream(store: Any, snapshot_id: str | None) -> dict[str, tuple[str, ...]]:
    """Step name -> the steps it waits for, from the run's snapshot: read once per run, and once only while the
    same store is asked again (a snapshot never changes; a live run page asks every few seconds)."""
    return _snapshot_upstream(store, snapshot_id) if snapshot_id else {}


@lru_cache(maxsize=32)
def _snapshot_upstream(store: Any, snapshot_id: str) -> dict[str, tuple[str, ...]]:
    spec = store.get_snapshot(snapshot_id)["spec"] or {}
    return {name: tuple(step.get("upstream") or ()) for name, step in (spec.get("steps") or {}).items()}


def finished_run_view(finished: "FinishedRun", client: Client | None = None) -> PipelineRun:
    """The view of a run execution has just ended; RunFailedError, carrying that view, when steps failed."""
    from conveyor.exceptions import RunFailedError

    run = (client or Client()).get_pipeline_run(finished.run_id)
    if finished.failures:
        raise RunFailedError(run, finished.failures)
    return run
