"""`get_step_context()`: what a running step knows of itself, the same in-process and on a step operator.

The launcher (in-process, one context per step thread) or the remote entrypoint (from the job spec) sets it for
the duration of the step function and its hooks. What the step records through it (`log_metadata`,
`save_artifact`) is collected in its `StepRecord`, which the launcher writes to the metadata store when the step
ends: the remote side never needs the store. Light: no pydantic, no SQLAlchemy.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore

__all__ = ["MetadataRecord", "PipelineInfo", "PipelineRunInfo", "SavedArtifact", "StepContext", "StepContextError",
           "StepRecord", "StepRunRef", "current_step_context", "get_step_context", "running_step"]


class StepContextError(ConveyorError, RuntimeError):
    """An in-step function called where no step is running."""


@dataclass(frozen=True)
class PipelineInfo:
    name: str


@dataclass(frozen=True)
class PipelineRunInfo:
    id: str
    name: str


@dataclass(frozen=True)
class StepRunRef:
    id: str
    name: str


@dataclass
class MetadataRecord:
    """Metadata a step logged, and what it is for: "step" (this step run), "output" (one of this step's
    outputs), "saved" (an artifact this step saved), or an explicit "run", "step_of_run", "artifact" target that
    the launcher resolves in the store."""

    target: str
    values: dict[str, Any]
    output: str | None = None
    run: str | None = None
    step: str | None = None
    artifact_name: str | None = None
    artifact_version: str | None = None
    artifact_id: str | None = None


@dataclass
class SavedArtifact:
    """An artifact `save_artifact` wrote inside a step; numbered and indexed when the launcher records it."""

    id: str
    name: str
    version: str | None  # the one asked for; None: the next number
    uri: str
    materializer: str
    data_type: str
    checksum: str | None
    size: int | None


@dataclass
class StepRecord:
    """What a step recorded while it ran; travels back in result.json from a step operator."""

    metadata: list[MetadataRecord] = field(default_factory=list)
    saved: list[SavedArtifact] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"metadata": [asdict(m) for m in self.metadata], "saved": [asdict(a) for a in self.saved]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "StepRecord":
        data = data or {}
        return cls([MetadataRecord(**m) for m in data.get("metadata") or []],
                   [SavedArtifact(**a) for a in data.get("saved") or []])

    def __bool__(self) -> bool:
        return bool(self.metadata or self.saved)


class StepContext:
    """ZenML's `StepContext`: `pipeline.name`, `pipeline_run.name/.id`, `step_run.name/.id`, `step_name`, plus
    `attempt` (1 on the first try, counting retries and re-submissions) and the output artifact URIs."""

    def __init__(self, *, pipeline_name: str, run_id: str, run_name: str, step_name: str, step_run_id: str,
                 attempt: int, attempt_uri: str, output_uris: Mapping[str, str], artifact_names: Mapping[str, str],
                 artifact_store: "ArtifactStore") -> None:
        self.pipeline = PipelineInfo(pipeline_name)
        self.pipeline_run = PipelineRunInfo(run_id, run_name)
        self.step_run = StepRunRef(step_run_id, step_name)
        self.step_name = step_name
        self.attempt = attempt
        self.attempt_uri = attempt_uri
        self.artifact_names = dict(artifact_names)  # output name -> artifact name
        self.artifact_store = artifact_store
        self.record = StepRecord()
        self._output_uris = dict(output_uris)

    @property
    def output_artifact_uris(self) -> dict[str, str]:
        """Output name -> the URI its artifact is written to when the step returns."""
        return dict(self._output_uris)

    def get_output_artifact_uri(self, output_name: str | None = None) -> str:
        return self._output_uris[self.output_name(output_name)]

    def add_output_metadata(self, metadata: Mapping[str, Any], output_name: str | None = None) -> None:
        """Attach metadata to one of this step's outputs (ZenML's name; same as `log_metadata(...,
        artifact_name=output)` inside the step)."""
        from conveyor.metadata import checked_values

        self.record.metadata.append(MetadataRecord("output", checked_values(metadata), output=self.output_name(output_name)))

    def output_name(self, name: str | None) -> str:
        """`name` (an output or artifact name of this step) as an output name; None: the only output."""
        outputs = list(self._output_uris)
        if name is None:
            if len(outputs) != 1:
                raise StepContextError(
                    f"step {self.step_name!r} has {len(outputs)} outputs ({', '.join(outputs) or 'none'}): name one "
                    "with output_name=")
            return outputs[0]
        if name in self._output_uris:
            return name
        for output, artifact in self.artifact_names.items():
            if artifact == name:
                return output
        raise StepContextError(f"step {self.step_name!r} has no output {name!r}; its outputs are "
                               f"{', '.join(outputs) or 'none'}")

    def __repr__(self) -> str:
        return (f"StepContext(pipeline={self.pipeline.name!r}, run={self.pipeline_run.name!r}, "
                f"step={self.step_name!r}, attempt={self.attempt})")


_current: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar("conveyor_step_context", default=None)


def current_step_context() -> StepContext | None:
    return _current.get()


def get_step_context() -> StepContext:
    """The running step's context; raises StepContextError outside a step."""
    context = _current.get()
    if context is None:
        raise StepContextError(
            "get_step_context() works only inside a running step; outside one, read runs with "
            "`Client().get_pipeline_run(...)`")
    return context


@contextmanager
def running_step(context: StepContext) -> Iterator[StepContext]:
    """Make `context` the current one in this thread for the `with` block (the step and its hooks)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
