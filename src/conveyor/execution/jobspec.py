"""The job spec the launcher writes and the `result.json` the remote side writes back, as typed values.

Both are versioned JSON; a malformed or foreign-version file is a clear error, never a hang. `JobSpec`,
`StepResult` and `ArtifactRef` are what both sides pass around; `to_json`/`from_json` keep the files' keys, so a
file written by the previous version is still read. The remote side imports this module: no pydantic here.
"""

from __future__ import annotations

import errno as _errno
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from conveyor.enums import FailureKind, StepStatus

__all__ = ["EXIT_STORE_FAILED", "EXIT_STORE_FULL", "JOB_SPEC_VERSION", "RESULT_VERSION", "ArtifactRef", "JobSpec",
           "JobSpecError", "OutputSlot", "StepError", "StepResult", "parse_job_spec", "parse_result",
           "store_exit_code", "store_exit_message", "sys_exit_message"]

JOB_SPEC_VERSION = 1
RESULT_VERSION = 1

#: exit codes of the step's process when it could not write its result.json because the artifact store failed:
#: then the exit code is all the orchestrator learns (the log may sit on the same full disk)
EXIT_STORE_FULL = 75
EXIT_STORE_FAILED = 74
_QUOTA_ERRNOS = frozenset(getattr(_errno, n) for n in ("ENOSPC", "EDQUOT") if hasattr(_errno, n))


class JobSpecError(ValueError):
    """The job spec or result file cannot be used."""


REQUIRED_JOB_KEYS = ("version", "run_id", "step_name", "step_run_id", "attempt", "source", "parameters",
                     "inputs", "outputs", "artifact_store", "result_uri")
REQUIRED_RESULT_KEYS = ("version", "status")


#: the type each required job spec key must have, so a damaged spec fails here rather than in the step's code
_JOB_KEY_TYPES: dict[str, type | tuple[type, ...]] = {
    "run_id": str, "step_name": str, "step_run_id": str, "attempt": int, "source": dict, "parameters": dict,
    "inputs": dict, "outputs": dict, "artifact_store": dict, "result_uri": str}


def _decode(data: str | bytes, what: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JobSpecError(f"{what} is not UTF-8 text ({err.reason} at byte {err.start}): it was damaged or "
                           "overwritten in the artifact store") from None


def parse_job_spec(text: str | bytes, where: str) -> dict[str, Any]:
    """The job spec at `where`, or JobSpecError: the step then fails as `job_spec`, never re-submitted."""
    text = _decode(text, f"job spec {where}")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise JobSpecError(f"job spec {where} is not valid JSON ({err}); it may be truncated: re-run the step") from None
    if not isinstance(spec, dict):
        raise JobSpecError(f"job spec {where} is not a JSON object")
    if spec.get("version") != JOB_SPEC_VERSION:
        raise JobSpecError(f"job spec {where} has version {spec.get('version')!r}, this Conveyor reads version "
                           f"{JOB_SPEC_VERSION}: install the same Conveyor version on both sides")
    missing = [k for k in REQUIRED_JOB_KEYS if k not in spec]
    if missing:
        raise JobSpecError(f"job spec {where} lacks {', '.join(missing)}")
    wrong = [f"{k} ({type(spec[k]).__name__}, not {_type_name(t)})" for k, t in _JOB_KEY_TYPES.items()
             if not isinstance(spec[k], t) or isinstance(spec[k], bool)]
    if not wrong and not isinstance(spec["artifact_store"].get("root"), str):
        wrong.append("artifact_store.root (missing or not a string)")
    if wrong:
        raise JobSpecError(f"job spec {where} has values of the wrong type: {', '.join(wrong)}")
    return spec


def _type_name(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def parse_result(text: str | bytes, where: str) -> dict[str, Any]:
    text = _decode(text, f"step result {where}")
    try:
        result = json.loads(text)
    except json.JSONDecodeError as err:
        raise JobSpecError(f"step result {where} is not valid JSON ({err}); the step was probably killed while writing it") from None
    if not isinstance(result, dict) or result.get("version") != RESULT_VERSION:
        raise JobSpecError(f"step result {where} has an unknown format or version {result.get('version') if isinstance(result, dict) else None!r}")
    missing = [k for k in REQUIRED_RESULT_KEYS if k not in result]
    if missing:
        raise JobSpecError(f"step result {where} lacks {', '.join(missing)}")
    if result["status"] not in (StepStatus.COMPLETED, StepStatus.FAILED):
        raise JobSpecError(f"step result {where} has unknown status {result['status']!r}")
    return result


def store_exit_code(err_no: int | None) -> int:
    """The step process's exit code when its result could not be written to the artifact store."""
    return EXIT_STORE_FULL if err_no in _QUOTA_ERRNOS else EXIT_STORE_FAILED


def store_exit_message(code: int | None, store_root: str, result_uri: str) -> str | None:
    """What a store exit code means, for the orchestrator (None for any other code)."""
    if code == EXIT_STORE_FULL:
        return (f"artifact store at {store_root} is out of space or quota: the step could not write its result "
                f"{result_uri} (exit code {code}); free space there or point the artifact store at a bigger disk "
                "(conveyor artifact-store update <name> --path=<writable path>)")
    if code == EXIT_STORE_FAILED:
        return (f"the step could not write its result {result_uri} to the artifact store at {store_root} "
                f"(exit code {code}): check that the store is reachable and writable; the step's log may say more")
    return None


def sys_exit_message(code: object) -> str:
    """Why a step that called sys.exit failed, whatever the code: it returned no outputs."""
    return (f"the step called sys.exit({code!r}): a step ends by returning its outputs, so this counts as a failure "
            f"{'even with code 0 (no outputs were returned)' if code in (0, None) else 'with that exit code'}; "
            "return from the step function instead, or raise an exception that says what went wrong")


# -- typed values -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArtifactRef:
    """One artifact as every layer passes it: what saving an output produced (the remote side's return, before
    `id` and `name`), the launcher's record of it, the store's row, a cache hit, the next step's input."""

    uri: str
    materializer: str
    data_type: str
    checksum: str | None = None
    size: int | None = None
    #: given when the launcher records it
    id: str | None = None
    #: the artifact's name (the step's `artifact_names`), versioned by the store; None for an unnamed output
    name: str | None = None

    @classmethod
    def saved(cls, uri: str, meta: Any) -> "ArtifactRef":
        """The artifact `save_artifact` wrote at `uri` (its ArtifactMeta: materializer, data_type, size, checksum)."""
        return cls(uri, meta.materializer, meta.data_type, meta.checksum, meta.size)

    def recorded(self, id: str, name: str | None, uri: str | None = None) -> "ArtifactRef":
        """This artifact as the launcher records it: with its id and name, at the URI the launcher knows it by
        (the remote side may have written it elsewhere and had it copied back)."""
        return replace(self, id=id, name=name, uri=self.uri if uri is None else uri)

    def to_json(self) -> dict[str, Any]:
        """Every field: the store's artifact row."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def as_input(self) -> dict[str, Any]:
        """The job spec's entry for an input: where it is, how to load it, and the checksum that catches a swapped
        folder."""
        return {"uri": self.uri, "materializer": self.materializer, "data_type": self.data_type,
                "checksum": self.checksum}

    def as_output(self) -> dict[str, Any]:
        """result.json's entry for a saved output."""
        return {"materializer": self.materializer, "data_type": self.data_type, "size": self.size,
                "checksum": self.checksum, "uri": self.uri}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> "ArtifactRef":
        """From any of the dict shapes (job spec input, result output, store row with more columns)."""
        known = {f.name for f in fields(cls)}
        return cls(**{"uri": "", **{k: v for k, v in row.items() if k in known}})


@dataclass(frozen=True)
class OutputSlot:
    """Where an output goes and the type it was declared with (an import path, "typing:Any" when undeclared)."""

    uri: str
    type: str

    def to_json(self) -> dict[str, str]:
        return {"uri": self.uri, "type": self.type}


@dataclass(frozen=True)
class JobSpec:
    """What the remote side needs to run one attempt of one step: no database, no server."""

    run_id: str
    step_name: str
    step_run_id: str
    attempt: int
    source: dict[str, Any]
    parameters: dict[str, Any]
    inputs: dict[str, ArtifactRef]
    outputs: dict[str, OutputSlot]
    artifact_store_root: str
    result_uri: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    run_name: str = ""
    pipeline: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    #: output name -> artifact name, for get_step_context()
    artifact_names: dict[str, str] = field(default_factory=dict)
    #: output name -> the URI its artifact is recorded at, for get_step_context(): the same as `outputs` unless an
    #: operator rewrote where the step writes (ssh writes to a mirror of the store on its host, then copies back)
    artifact_uris: dict[str, str] = field(default_factory=dict)
    #: the hooks to run there (conveyor.steps.hooks)
    hooks: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    #: where the step's process writes its log; None when the operator streams it to the launcher
    log_uri: str | None = None
    version: int = JOB_SPEC_VERSION

    @property
    def attempt_uri(self) -> str:
        return self.result_uri.rsplit("/", 1)[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "run_id": self.run_id, "run_name": self.run_name, "pipeline": self.pipeline,
            "step_name": self.step_name, "step_run_id": self.step_run_id, "attempt": self.attempt,
            "source": self.source, "parameters": self.parameters,
            "inputs": {arg: ref.as_input() for arg, ref in self.inputs.items()},
            "outputs": {name: slot.to_json() for name, slot in self.outputs.items()}, "settings": self.settings,
            "artifact_names": self.artifact_names, "hooks": self.hooks, "resources": self.resources,
            "artifact_store": {"root": self.artifact_store_root, "storage_options": self.storage_options},
            "result_uri": self.result_uri, "log_uri": self.log_uri,
            **({"artifact_uris": self.artifact_uris} if self.artifact_uris else {}),
        }

    @classmethod
    def from_json(cls, spec: Mapping[str, Any], where: str = "job spec") -> "JobSpec":
        """From a dict `parse_job_spec` checked; an input or output entry of the wrong shape is a JobSpecError."""
        try:
            inputs = {arg: ArtifactRef(a["uri"], a["materializer"], a["data_type"], a.get("checksum"))
                      for arg, a in spec["inputs"].items()}
            outputs = {name: OutputSlot(o["uri"], o.get("type") or "typing:Any") for name, o in spec["outputs"].items()}
        except (KeyError, TypeError, AttributeError) as err:
            raise JobSpecError(f"{where} has a damaged input or output entry ({type(err).__name__}: {err})") from None
        store = spec["artifact_store"]
        return cls(run_id=spec["run_id"], step_name=spec["step_name"], step_run_id=spec["step_run_id"],
                   attempt=spec["attempt"], source=spec["source"], parameters=spec["parameters"], inputs=inputs,
                   outputs=outputs, artifact_store_root=store["root"],
                   storage_options=store.get("storage_options") or {}, result_uri=spec["result_uri"],
                   run_name=spec.get("run_name") or "", pipeline=spec.get("pipeline") or "",
                   settings=spec.get("settings") or {}, artifact_names=spec.get("artifact_names") or {},
                   artifact_uris=spec.get("artifact_uris") or {},
                   hooks=spec.get("hooks") or {}, resources=spec.get("resources") or {},
                   log_uri=spec.get("log_uri"), version=spec["version"])

    @classmethod
    def parse(cls, text: str | bytes, where: str) -> "JobSpec":
        """The job spec at `where`, or JobSpecError (see `parse_job_spec`)."""
        return cls.from_json(parse_job_spec(text, where), f"job spec {where}")


@dataclass(frozen=True)
class StepError:
    """Why the remote side's step failed."""

    type: str
    message: str
    kind: FailureKind | str = FailureKind.USER
    traceback: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "kind": str(self.kind), "traceback": self.traceback}

    @classmethod
    def from_json(cls, error: Mapping[str, Any]) -> "StepError":
        return cls(type=str(error.get("type", "Error")), message=str(error.get("message", "")),
                   kind=FailureKind.of(str(error.get("kind") or FailureKind.USER)), traceback=error.get("traceback"))


@dataclass(frozen=True)
class StepResult:
    """What the remote side writes back: the outputs it saved, or why it failed; what the step recorded
    (log_metadata, save_artifact) travels here too, for the launcher to record."""

    status: StepStatus  # COMPLETED or FAILED
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    error: StepError | None = None
    step_name: str | None = None
    attempt: int | None = None
    #: StepRecord.to_json() of what the step logged and saved
    recorded: dict[str, Any] | None = None
    timings: dict[str, float] | None = None
    peak_memory_bytes: int | None = None
    #: where the step's process ran (socket.gethostname() there) and the CPU it used (user + system seconds of
    #: the process and its children, while the step ran): the attempt's record (store table step_attempts)
    host: str | None = None
    cpu_seconds: float | None = None
    version: int = RESULT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The keys of result.json; those without a value are left out, as the remote side always did."""
        out: dict[str, Any] = {"version": self.version}
        if self.step_name is not None:
            out["step_name"] = self.step_name
        if self.attempt is not None:
            out["attempt"] = self.attempt
        out["status"] = str(self.status)
        if self.status == StepStatus.COMPLETED:
            out["outputs"] = {name: ref.as_output() for name, ref in self.outputs.items()}
        if self.error is not None:
            out["error"] = self.error.to_json()
        for key in ("recorded", "timings", "peak_memory_bytes", "host", "cpu_seconds"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_json(cls, result: Mapping[str, Any], where: str = "step result") -> "StepResult":
        """From a dict `parse_result` checked; an output entry of the wrong shape is a JobSpecError."""
        try:
            outputs = {name: ArtifactRef(str(o.get("uri") or ""), o["materializer"], o["data_type"], o.get("checksum"),
                                         o.get("size")) for name, o in (result.get("outputs") or {}).items()}
        except (KeyError, TypeError, AttributeError) as err:
            raise JobSpecError(f"{where} has a damaged output entry ({type(err).__name__}: {err})") from None
        error = result.get("error")
        return cls(status=StepStatus(result["status"]), outputs=outputs,
                   error=StepError.from_json(error if isinstance(error, Mapping) else {}) if error is not None
                   or result["status"] == StepStatus.FAILED else None,
                   step_name=result.get("step_name"), attempt=result.get("attempt"), recorded=result.get("recorded"),
                   timings=result.get("timings"), peak_memory_bytes=result.get("peak_memory_bytes"),
                   host=result.get("host"), cpu_seconds=result.get("cpu_seconds"), version=result["version"])

    @classmethod
    def parse(cls, text: str | bytes, where: str) -> "StepResult":
        """The step result at `where`, or JobSpecError (see `parse_result`)."""
        return cls.from_json(parse_result(text, where), f"step result {where}")
