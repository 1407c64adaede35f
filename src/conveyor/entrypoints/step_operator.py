"""Remote side of a step: needs only Python, conveyor, the code and the artifact store. No database, no server.

    python -m conveyor.entrypoints.step_operator --job URI --step_name NAME --step_run_id ID
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, TextIO

from conveyor.enums import FailureKind, StepStatus
from conveyor.exceptions import MEMORY_ADVICE
from conveyor.secrets.references import redact
from conveyor.secrets.runtime import REDACT_ENV

if TYPE_CHECKING:
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution.jobspec import JobSpec, StepError, StepResult
    from conveyor.execution.logs import StepLog


class _Tee:
    """Copies writes to the step's stored log (execution/logs.py); the original stream keeps working."""

    def __init__(self, stream: TextIO, log: "StepLog") -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.append(text)  # stored at once: every append reaches the file
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Redacting:
    """Replaces the step's secret values in what it prints (Python-level writes; a subprocess writing to the
    file descriptor directly is not covered), also a value written in pieces: a tail that may be the start of
    one waits for the next write, and `finish()` writes what is still held when the step ends."""

    def __init__(self, stream: TextIO, secrets: frozenset[str]) -> None:
        from conveyor.secrets.stream_redaction import StreamRedactor

        self._stream, self._redactor = stream, StreamRedactor(lambda: secrets)

    def write(self, text: str) -> int:
        self._stream.write(self._redactor.feed(text))
        return len(text)

    def finish(self) -> None:
        self._stream.write(self._redactor.finish())
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _secret_values() -> frozenset[str]:
    """The values of the variables the orchestrator named in CONVEYOR_REDACT_ENV (names only travel)."""
    names = [n for n in os.environ.get(REDACT_ENV, "").split(",") if n]
    return frozenset(v for n in names if (v := os.environ.get(n)))


def _peak_memory() -> int:
    """Peak resident memory of the step's process or of the largest child it waited for, in bytes (Linux
    reports `ru_maxrss` in KiB)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return max(own.ru_maxrss, children.ru_maxrss) * 1024


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of the children it waited for, so far."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _error(err: BaseException, kind: FailureKind, message: str | None = None) -> "StepError":
    from conveyor.execution.jobspec import StepError

    return StepError(type=type(err).__name__, message=message or str(err), kind=kind,
                     traceback="".join(traceback.format_exception(err)))


def run_job(job_uri: str) -> int:
    from conveyor.pipelines.run_guard import mark_step_process

    # before any user code is imported: a module-level pipeline call in the step's script (or in anything the
    # step's children import) must not run the pipeline again from in here
    mark_step_process()
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution.jobspec import JobSpec

    started, cpu_before = time.time(), _cpu_seconds()  # a warm process used some CPU before its job arrived
    import json

    options = json.loads(os.environ.get("CONVEYOR_STORAGE_OPTIONS") or "{}")
    bootstrap = ArtifactStore(job_uri.rsplit("/", 1)[0], options or None)
    from conveyor.secrets.envelope import unseal

    unseal(bootstrap)
    spec = JobSpec.parse(bootstrap.read_bytes(job_uri), job_uri)  # bytes: a spec that is not UTF-8 is a JobSpecError
    store = ArtifactStore(spec.artifact_store_root, {**spec.storage_options, **options} or None)
    if spec.log_uri and store.is_local:  # where the step runs the store is a path: append to the log
        from conveyor.execution.logs import StepLog

        log = StepLog(store, spec.log_uri)  # lives as long as the process; each append is flushed
        sys.stdout = _Tee(sys.stdout, log)  # type: ignore[assignment]
        sys.stderr = _Tee(sys.stderr, log)  # type: ignore[assignment]
    secrets = _secret_values()
    if secrets:
        sys.stdout = _Redacting(sys.stdout, secrets)  # type: ignore[assignment]
        sys.stderr = _Redacting(sys.stderr, secrets)  # type: ignore[assignment]

    result = _run_step(spec, store, secrets, started, cpu_before)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _Redacting):
            stream.finish()
    store.write_text(spec.result_uri, json.dumps(result.to_json(), default=str))  # failing: main() exits EXIT_STORE_*
    _quietly(sys.stdout.flush)  # the result is written: a full log must not turn it into a failure
    _quietly(sys.stderr.flush)
    return 0 if result.status == StepStatus.COMPLETED else 1


def _run_step(spec: "JobSpec", store: "ArtifactStore", secrets: frozenset[str], started: float,
              cpu_before: float = 0.0) -> "StepResult":
    """Run the step the job spec describes; what it returned or why it failed, for result.json, with where it
    ran and what it used (the attempt's record: host, peak RSS, CPU seconds)."""
    import socket

    from dataclasses import replace

    from conveyor.execution.jobspec import ArtifactRef, StepResult

    outputs: dict[str, ArtifactRef] = {}
    error: StepError | None = None
    context = None
    try:
        from conveyor.execution.runner import context_from_job, load_inputs, run_function
        from conveyor.pipelines.source import load_step_function
        from conveyor.steps.hooks import load_hooks

        source = spec.source
        if source.get("code_archive"):  # exactly the code as it was at submission, even if the tree changed since
            from conveyor.artifacts.code_archive import materialize

            source = {**source, "code_root": materialize(source["code_archive"], store)}
        func = load_step_function(source)
        archived = source.get("code_archive")  # hooks then come from the step's code as archived too
        hooks = load_hooks({kind: {**hook, "code_root": source["code_root"]} if archived else hook
                            for kind, hook in spec.hooks.items()})
        inputs = load_inputs(spec.inputs, store)
        context = context_from_job(spec, store)
        metas = run_function(func, spec.step_name, spec.parameters, inputs, spec.outputs, store,
                             context=context, hooks=hooks)
        outputs = {name: ArtifactRef.saved(spec.outputs[name].uri, meta) for name, meta in metas.items()}
    except MemoryError as err:
        limit = spec.resources.get("memory")
        error = _error(err, FailureKind.MEMORY, f"{MEMORY_ADVICE} (the limit was {limit})" if limit else MEMORY_ADVICE)
    except BaseException as err:  # noqa: BLE001 - everything the step raises is reported
        from conveyor.artifacts.store import ArtifactStoreError
        from conveyor.execution.jobspec import sys_exit_message

        said = sys_exit_message(err.code) if isinstance(err, SystemExit) else None  # exit(0) too: no outputs
        error = _error(err, FailureKind.STORE if isinstance(err, ArtifactStoreError) else FailureKind.USER, said)
        _quietly(traceback.print_exc)  # stderr may be a log on the disk that just filled
    if secrets and error is not None:
        error = replace(error, type=redact(error.type, secrets), message=redact(error.message, secrets),
                        traceback=redact(error.traceback, secrets) if error.traceback is not None else None)
    end = time.time()
    return StepResult(status=StepStatus.FAILED if error is not None else StepStatus.COMPLETED, outputs=outputs,
                      error=error, step_name=spec.step_name, attempt=spec.attempt,
                      # what the step logged and saved: the launcher records it
                      recorded=context.record.to_json() if context is not None and context.record else None,
                      timings={"start": started, "end": end, "duration": end - started},
                      peak_memory_bytes=_peak_memory(), host=socket.gethostname(),
                      cpu_seconds=round(max(0.0, _cpu_seconds() - cpu_before), 6))


def _quietly(write: Any) -> bool:
    """Call a write to stdout/stderr (the step's log, perhaps on a full disk); False if it failed."""
    try:
        write()
    except OSError:
        return False
    except Exception as err:  # the stored log's write failing is the store's error (execution/logs.py)
        if _is_store_error(err):
            return False
        raise
    return True


@functools.cache
def parser() -> argparse.ArgumentParser:
    """The command line's parser, built once: a warm step process (step_operators/local/worker.py) builds it
    before its job arrives (building it looks up translations on the disk)."""
    built = argparse.ArgumentParser(prog="python -m conveyor.entrypoints.step_operator",
                                    description="Run one pipeline step from its job spec.")
    built.add_argument("--job", required=True, help="URI of the job spec (job.json) in the artifact store")
    built.add_argument("--step_name")
    built.add_argument("--step_run_id")
    return built


def _may_have_descendants() -> bool:
    """Whether this process has children, as /proc/self/task/*/children lists them; True where it cannot tell.

    For a subreaper that is whether anything it started still runs: a descendant whose parent ended was
    re-parented to it, one whose parent runs is below one of its children. Saves `end_descendants` its pass over
    every process on the machine when the step left nothing behind (the usual case)."""
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children", "rb") as listing:
                if listing.read().strip():
                    return True
    except OSError:
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    args, _unknown = parser().parse_known_args(argv)
    from conveyor.utils.reaper import SUBREAPER_ENV, become_subreaper, end_descendants

    reaper = os.environ.get(SUBREAPER_ENV) == "1" and become_subreaper()
    try:
        return run_job(args.job)
    except Exception as err:  # noqa: BLE001 - a broken job spec must fail the step, not hang it
        reason = f"conveyor: cannot run step {args.step_name or ''}: {err}"
        _quietly(lambda: print(reason, file=sys.stderr))
        if _report_unrunnable(args.job, err):
            return 2
        # not even a result.json could be written: the exit code tells the orchestrator that the store failed
        from conveyor.execution.jobspec import store_exit_code

        return store_exit_code(getattr(err, "errno", None)) if isinstance(err, OSError) or _is_store_error(err) else 2
    finally:
        if reaper and _may_have_descendants():  # what the step left running ends with it
            end_descendants()


def _is_store_error(err: BaseException) -> bool:
    from conveyor.artifacts.store import ArtifactStoreError

    return isinstance(err, ArtifactStoreError)


def _report_unrunnable(job_uri: str, err: Exception) -> bool:
    """Tell the orchestrator why through result.json beside the job spec, so the step fails with the reason;
    False if that could not be written either."""
    import json

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.artifacts.layout import AttemptLayout
    from conveyor.execution.jobspec import JobSpecError, StepResult

    kind = (FailureKind.JOB_SPEC if isinstance(err, JobSpecError) else FailureKind.STORE if _is_store_error(err)
            else FailureKind.INFRASTRUCTURE)
    result = StepResult(status=StepStatus.FAILED, error=_error(err, kind))
    try:
        options = json.loads(os.environ.get("CONVEYOR_STORAGE_OPTIONS") or "{}")
        directory = job_uri.rsplit("/", 1)[0]
        layout = AttemptLayout.parse(directory)  # the job spec sits in its attempt folder; result.json beside it
        result_uri = layout.result if layout is not None else f"{directory}/result.json"
        ArtifactStore(directory, options or None).write_text(result_uri, json.dumps(result.to_json()))
    except Exception as write_err:  # noqa: BLE001 - the store itself is out of reach: the exit code must do
        reason = f"conveyor: cannot report the failure either: {write_err}"
        _quietly(lambda: print(reason, file=sys.stderr))
        return False
    return True


def exit_with(code: int) -> None:
    """sys.exit(code), but output that cannot be flushed (a log on a full disk) must not turn the exit code into
    Python's 120 at shutdown: the orchestrator reads EXIT_STORE_* from it."""
    if not (_quietly(sys.stdout.flush) and _quietly(sys.stderr.flush)):
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    exit_with(main())
