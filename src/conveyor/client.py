"""Read-only views of runs, steps and artifacts, and the active stack. No business logic lives here."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.config.resources import ResourceSettings
    from conveyor.context import Context
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

    def load(self) -> Any:
        from conveyor.artifacts.materializers import load_artifact

        return load_artifact(self.uri, self._store, self.materializer, self.data_type, checksum=self.checksum,
                             label=f"artifact {self.name!r} (id {self.id})")


@dataclass(frozen=True)
class StepConfigView:
    step_operator: str | None
    step_operator_flavor: str | None
    resource_settings: "ResourceSettings"
    settings: dict[str, Any]
    operator_settings: dict[str, Any] | None
    parameters: dict[str, Any]
    retry: dict[str, Any] | None
    timeout: float | None
    enable_cache: bool


@dataclass(frozen=True)
class StepRunView:
    id: str
    name: str
    status: str
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

    @property
    def duration(self) -> timedelta | None:
        return _duration(self.start_time, self.end_time)

    @property
    def operator(self) -> str | None:
        return self.config.step_operator

    def logs(self) -> str:
        """The step's stored output ('' when it produced none or ran from cache)."""
        if not self.logs_uri or not self._store.exists(self.logs_uri):
            return ""
        return self._store.read_text(self.logs_uri)


@dataclass(frozen=True)
class PipelineRun:
    id: str
    name: str
    pipeline_name: str
    status: str
    stack_name: str
    start_time: datetime | None
    end_time: datetime | None
    heartbeat: datetime | None
    host: str | None
    pid: int | None
    error: str | None
    steps: "OrderedDict[str, StepRunView]"
    pid_start: str | None = None  # start time of `pid` (utils.procs.process_start): a reused pid is not the owner

    @property
    def duration(self) -> timedelta | None:
        return _duration(self.start_time, self.end_time)


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
        try:
            return self.context.load_stack(stack_name).artifact_store.artifact_store()
        except ConveyorError:
            return self.active_stack.artifact_store.artifact_store()

    def get_pipeline_run(self, name_or_id: str) -> PipelineRun:
        row = self.store.find_run(name_or_id)
        if row is None:
            raise ConveyorError(f"no pipeline run named or with id {name_or_id!r}: see `conveyor run list`")
        return self._run_view(row)

    def list_pipeline_runs(self, pipeline_name: str | None = None, status: str | None = None,
                           size: int | None = 50) -> list[PipelineRun]:
        return [self._run_view(r, with_steps=False) for r in self.store.list_runs(pipeline_name, status, size)]

    def _run_view(self, row: dict[str, Any], with_steps: bool = True) -> PipelineRun:
        from conveyor.config.resources import ResourceSettings

        steps: OrderedDict[str, StepRunView] = OrderedDict()
        if with_steps:
            store = self._artifact_store(row["stack_name"])
            step_rows = self.store.step_runs(row["id"])
            links: dict[tuple[str, str], dict[str, ArtifactView]] = {}
            for a in self.store.step_run_artifacts([s["id"] for s in step_rows]):
                view = ArtifactView(a["id"], a["name"], a["uri"], a["materializer"], a["data_type"], a["checksum"],
                                    a["size"], store)
                links.setdefault((a["step_run_id"], a["direction"]), {})[a["name"]] = view
            for s in step_rows:
                c = s["config"] or {}
                config = StepConfigView(
                    step_operator=c.get("step_operator"), step_operator_flavor=c.get("step_operator_flavor"),
                    resource_settings=ResourceSettings.model_validate(c.get("resource_settings") or {}),
                    settings=c.get("settings") or {}, operator_settings=c.get("operator_settings"),
                    parameters=c.get("parameters") or {}, retry=c.get("retry"), timeout=c.get("timeout"),
                    enable_cache=c.get("enable_cache", True))
                steps[s["name"]] = StepRunView(
                    id=s["id"], name=s["name"], status=s["status"], start_time=s["start_time"], end_time=s["end_time"],
                    attempt=s["attempt"], config=config, error=s["error"], failure_kind=s["failure_kind"],
                    traceback=s["traceback"], cache_key=s["cache_key"], cached_from=s["cached_from"],
                    submission=s["submission"], logs_uri=s["logs_uri"],
                    inputs=links.get((s["id"], "input"), {}), outputs=links.get((s["id"], "output"), {}), _store=store)
        return PipelineRun(id=row["id"], name=row["name"], pipeline_name=row["pipeline_name"], status=row["status"],
                           stack_name=row["stack_name"], start_time=row["start_time"], end_time=row["end_time"],
                           heartbeat=row["heartbeat"], host=row["host"], pid=row["pid"], error=row["error"], steps=steps,
                           pid_start=row.get("pid_start"))
