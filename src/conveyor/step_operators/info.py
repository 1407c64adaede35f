"""What a step operator is told about the step it runs, and the records it hands back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

from conveyor.config.base import BaseSettings
from conveyor.config.resources import ResourceSettings
from conveyor.images.settings import DockerSettings

State = Literal["queued", "running", "completed", "failed", "preempted", "lost", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "preempted", "lost", "cancelled"})
INFRASTRUCTURE_STATES: frozenset[str] = frozenset({"preempted", "lost"})


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

    Bound by the launcher to the log it holds (a log kept for a remote artifact store is rewritten every
    LIVE_LOG_FLUSH_S; a local one is flushed). Where the step's own process writes its log (a launch()-only
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
    state: State
    message: str = ""
    exit_code: int | None = None
    #: why a failed job failed when the backend knows: "memory", "timeout", "pending" (can never start)
    kind: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES
