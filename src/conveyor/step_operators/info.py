"""What a step operator is told about the step it runs, and the records it hands back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Callable

from conveyor.config.base import BaseSettings
from conveyor.config.resources import ResourceSettings
from conveyor.enums import FailureKind
from conveyor.images.settings import DockerSettings


class JobState(StrEnum):
    """A backend job's state as a step operator reports it (`StatusReport.state`); members are plain strings too,
    so a flavor may return "running" or JobState.RUNNING alike."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PREEMPTED = "preempted"  # the backend took the node back: submitted again (infrastructure_retries)
    LOST = "lost"  # the job vanished, or its node died: submitted again (infrastructure_retries)
    CANCELLED = "cancelled"  # someone cancelled it outside Conveyor


#: the earlier name (a Literal of the same values), kept for custom flavors that import it
State = JobState
TERMINAL_STATES: frozenset[JobState] = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.PREEMPTED,
                                                  JobState.LOST, JobState.CANCELLED})
INFRASTRUCTURE_STATES: frozenset[JobState] = frozenset({JobState.PREEMPTED, JobState.LOST})


@dataclass(frozen=True)
class StepConfig:
    """The step's resolved configuration (`info.config` in the reference docs)."""

    name: str
    step_operator: str | None
    resource_settings: ResourceSettings
    settings: dict[str, Any]
    operator_settings: BaseSettings | None = None
    timeout: float | None = None
    enable_cache: bool = True


@dataclass(frozen=True)
class PipelineConfig:
    """`info.pipeline` in the reference docs."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: the step's image settings: the pipeline's "docker" settings under the step's (what ZenML's docs tell a
    #: custom flavor to build its environment from)
    docker_settings: DockerSettings = field(default_factory=DockerSettings)


class LogWriter:
    """`info.force_write_logs()`: stores the step's log now rather than at the next periodic write.

    Bound by the launcher to the log it holds (execution/logs.StepLog: for a remote artifact store what is new
    is stored as the next chunk every LIVE_LOG_FLUSH_S; a local one is flushed). Where the step's own process writes its log (a launch()-only
    operator), every line is written as it is printed and there is nothing held back: calling it does nothing.
    """

    def __init__(self) -> None:
        self._write: Callable[[], None] | None = None

    def bind(self, write: Callable[[], None] | None) -> None:
        self._write = write

    def __call__(self) -> None:
        if self._write is not None:
            self._write()

    def __deepcopy__(self, memo: dict[int, Any]) -> "LogWriter":
        return self  # a copy of the info (dataclasses.asdict) still writes this step's log

    def __getstate__(self) -> dict[str, Any]:
        return {"_write": None}  # in another process there is no log held here to write


@dataclass(frozen=True)
class StepRunInfo:
    config: StepConfig
    pipeline: PipelineConfig
    run_name: str
    pipeline_step_name: str
    run_id: str
    step_run_id: str
    attempt: int = 1
    job_name: str = ""
    job_uri: str = ""
    attempt_uri: str = ""
    force_write_logs: Callable[[], None] = field(default_factory=LogWriter, compare=False, repr=False)

    @property
    def resources(self) -> ResourceSettings:
        return self.config.resource_settings


@dataclass
class Submission:
    """The receipt of a submitted job: enough for another process to follow or cancel it."""

    flavor: str
    job_name: str
    backend_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any] | str) -> "Submission":
        if isinstance(value, str):
            value = json.loads(value)
        known = {"flavor", "job_name", "backend_id", "data"}
        extra = {k: v for k, v in value.items() if k not in known}
        return cls(**{k: v for k, v in value.items() if k in known and k != "data"},
                   data={**(value.get("data") or {}), **extra})


@dataclass(frozen=True)
class StatusReport:
    state: JobState
    message: str = ""
    exit_code: int | None = None
    #: why a failed job failed when the backend knows: MEMORY, TIMEOUT, PENDING (can never start)
    kind: FailureKind | None = None

    def __post_init__(self) -> None:
        # a flavor's plain strings become the members (an unknown value stays as given, and never ends the wait)
        if not isinstance(self.state, JobState) and self.state in JobState._value2member_map_:
            object.__setattr__(self, "state", JobState(self.state))
        if self.kind is not None and not isinstance(self.kind, FailureKind):
            object.__setattr__(self, "kind", FailureKind.of(self.kind))

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES
