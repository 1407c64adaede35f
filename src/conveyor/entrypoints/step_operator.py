"""Remote side of a step: needs only Python, conveyor, the code and the artifact store. No database, no server.

    python -m conveyor.entrypoints.step_operator --job URI --step_name NAME --step_run_id ID
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from typing import Any, TextIO

from conveyor.exceptions import MEMORY_ADVICE
from conveyor.secrets.references import redact
from conveyor.secrets.runtime import REDACT_ENV


class _Tee:
    """Copies writes to a log file; the original stream keeps working."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.write(text)
        self._log.flush()
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()
        self._log.flush()

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
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _error(err: BaseException, kind: str, message: str | None = None) -> dict[str, Any]:
    return {"type": type(err).__name__, "message": message or str(err), "kind": kind,
            "traceback": "".join(traceback.format_exception(err))}


def run_job(job_uri: str) -> int:
    from conveyor.pipelines.run_guard import mark_step_process

    # before any user code is imported: a module-level pipeline call in the step's script (or in anything the
    # step's children import) must not run the pipeline again from in here
    mark_step_process()
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution.jobspec import RESULT_VERSION, parse_job_spec

    started = time.time()
    import json

    options = json.loads(os.environ.get("CONVEYOR_STORAGE_OPTIONS") or "{}")
    bootstrap = ArtifactStore(job_uri.rsplit("/", 1)[0], options or None)
    from conveyor.secrets.envelope import unseal

    unseal(bootstrap)
    spec = parse_job_spec(bootstrap.read_bytes(job_uri), job_uri)  # bytes: a spec that is not UTF-8 is a JobSpecError
    store_cfg = spec["artifact_store"]
    store = ArtifactStore(store_cfg["root"], {**(store_cfg.get("storage_options") or {}), **options} or None)
    log_file = None
    if spec.get("log_uri") and store.local_path(spec["log_uri"]):
        path = store.local_path(spec["log_uri"])
        from conveyor.utils.private import private_makedirs, private_opener

        private_makedirs(os.path.dirname(path))
        log_file = open(path, "a", buffering=1, encoding="utf-8",  # noqa: SIM115 - lives as long as the process
                        opener=private_opener)
        sys.stdout = _Tee(sys.stdout, log_file)  # type: ignore[assignment]
        sys.stderr = _Tee(sys.stderr, log_file)  # type: ignore[assignment]
    secrets = _secret_values()
    if secrets:
        sys.stdout = _Redacting(sys.stdout, secrets)  # type: ignore[assignment]
        sys.stderr = _Redacting(sys.stderr, secrets)  # type: ignore[assignment]

    result: dict[str, Any] = {"version": RESULT_VERSION, "step_name": spec["step_name"], "attempt": spec["attempt"]}
    context = None
    try:
        from conveyor.execution.runner import context_from_job, load_inputs, run_function
        from conveyor.pipelines.source import load_step_function
        from conveyor.steps.hooks import load_hooks

        source = spec["source"]
        if source.get("code_archive"):  # exactly the code as it was at submission, even if the tree changed since
            from conveyor.execution.code_archive import materialize

            source = {**source, "code_root": materialize(source["code_archive"], store)}
        func = load_step_function(source)
        archived = source.get("code_archive")  # hooks then come from the step's code as archived too
        hooks = load_hooks({kind: {**hook, "code_root": source["code_root"]} if archived else hook
                            for kind, hook in (spec.get("hooks") or {}).items()})
        inputs = load_inputs(spec["inputs"], store)
        context = context_from_job(spec, store)
        metas = run_function(func, spec["step_name"], spec["parameters"], inputs, spec["outputs"], store,
                             context=context, hooks=hooks)
        result["status"] = "completed"
        result["outputs"] = {name: meta._asdict() if hasattr(meta, "_asdict") else dict(vars(meta)) for name, meta in metas.items()}
    except MemoryError as err:
        limit = (spec.get("resources") or {}).get("memory")
        result["status"] = "failed"
        result["error"] = _error(err, "memory", f"{MEMORY_ADVICE} (the limit was {limit})" if limit else MEMORY_ADVICE)
    except BaseException as err:  # noqa: BLE001 - everything the step raises is reported
        from conveyor.artifacts.store import ArtifactStoreError

        result["status"] = "failed"
        from conveyor.execution.jobspec import sys_exit_message

        said = sys_exit_message(err.code) if isinstance(err, SystemExit) else None  # exit(0) too: no outputs
        result["error"] = _error(err, "store" if isinstance(err, ArtifactStoreError) else "user", said)
        _quietly(traceback.print_exc)  # stderr may be a log on the disk that just filled
    if secrets and "error" in result:
        result["error"] = {k: redact(v, secrets) if isinstance(v, str) else v for k, v in result["error"].items()}
    if context is not None and context.record:  # what the step logged and saved: the launcher records it
        result["recorded"] = context.record.to_json()
    result["timings"] = {"start": started, "end": time.time(), "duration": time.time() - started}
    result["peak_memory_bytes"] = _peak_memory()

    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _Redacting):
            stream.finish()
    store.write_text(spec["result_uri"], json.dumps(result, default=str))  # failing: main() exits EXIT_STORE_*
    _quietly(sys.stdout.flush)  # the result is written: a full log must not turn it into a failure
    _quietly(sys.stderr.flush)
    return 0 if result["status"] == "completed" else 1


def _quietly(write: Any) -> bool:
    """Call a write to stdout/stderr (the step's log, perhaps on a full disk); False if it failed."""
    try:
        write()
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conveyor.entrypoints.step_operator",
                                     description="Run one pipeline step from its job spec.")
    parser.add_argument("--job", required=True, help="URI of the job spec (job.json) in the artifact store")
    parser.add_argument("--step_name")
    parser.add_argument("--step_run_id")
    args, _unknown = parser.parse_known_args(argv)
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
        if reaper:  # what the step left running ends with it
            end_descendants()


def _is_store_error(err: BaseException) -> bool:
    from conveyor.artifacts.store import ArtifactStoreError

    return isinstance(err, ArtifactStoreError)


def _report_unrunnable(job_uri: str, err: Exception) -> bool:
    """Tell the orchestrator why through result.json beside the job spec, so the step fails with the reason;
    False if that could not be written either."""
    import json

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution.jobspec import RESULT_VERSION, JobSpecError

    kind = "job_spec" if isinstance(err, JobSpecError) else "store" if _is_store_error(err) else "infrastructure"
    result = {"version": RESULT_VERSION, "status": "failed", "error": _error(err, kind)}
    try:
        options = json.loads(os.environ.get("CONVEYOR_STORAGE_OPTIONS") or "{}")
        directory = job_uri.rsplit("/", 1)[0]
        ArtifactStore(directory, options or None).write_text(f"{directory}/result.json", json.dumps(result))
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
