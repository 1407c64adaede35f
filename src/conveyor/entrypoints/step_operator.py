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
    file descriptor directly is not covered)."""

    def __init__(self, stream: TextIO, secrets: frozenset[str]) -> None:
        self._stream, self._secrets = stream, secrets

    def write(self, text: str) -> int:
        self._stream.write(redact(text, self._secrets))
        return len(text)

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
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution.jobspec import RESULT_VERSION, parse_job_spec

    started = time.time()
    import json

    options = json.loads(os.environ.get("CONVEYOR_STORAGE_OPTIONS") or "{}")
    bootstrap = ArtifactStore(job_uri.rsplit("/", 1)[0], options or None)
    from conveyor.secrets.envelope import unseal

    unseal(bootstrap)
    spec = parse_job_spec(bootstrap.read_text(job_uri), job_uri)
    store_cfg = spec["artifact_store"]
    store = ArtifactStore(store_cfg["root"], {**(store_cfg.get("storage_options") or {}), **options} or None)
    log_file = None
    if spec.get("log_uri") and store.local_path(spec["log_uri"]):
        path = store.local_path(spec["log_uri"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        log_file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        sys.stdout = _Tee(sys.stdout, log_file)  # type: ignore[assignment]
        sys.stderr = _Tee(sys.stderr, log_file)  # type: ignore[assignment]
    secrets = _secret_values()
    if secrets:
        sys.stdout = _Redacting(sys.stdout, secrets)  # type: ignore[assignment]
        sys.stderr = _Redacting(sys.stderr, secrets)  # type: ignore[assignment]

    result: dict[str, Any] = {"version": RESULT_VERSION, "step_name": spec["step_name"], "attempt": spec["attempt"]}
    try:
        from conveyor.execution.runner import load_inputs, run_function
        from conveyor.pipelines.source import load_step_function

        source = spec["source"]
        if source.get("code_archive"):  # exactly the code as it was at submission, even if the tree changed since
            from conveyor.execution.code_archive import materialize

            source = {**source, "code_root": materialize(source["code_archive"], store)}
        func = load_step_function(source)
        inputs = load_inputs(spec["inputs"], store)
        metas = run_function(func, spec["step_name"], spec["parameters"], inputs, spec["outputs"], store)
        result["status"] = "completed"
        result["outputs"] = {name: meta._asdict() if hasattr(meta, "_asdict") else dict(vars(meta)) for name, meta in metas.items()}
    except MemoryError as err:
        limit = (spec.get("resources") or {}).get("memory")
        result["status"] = "failed"
        result["error"] = _error(err, "memory", f"{MEMORY_ADVICE} (the limit was {limit})" if limit else MEMORY_ADVICE)
    except BaseException as err:  # noqa: BLE001 - everything the step raises is reported
        from conveyor.artifacts.store import ArtifactStoreError

        result["status"] = "failed"
        result["error"] = _error(err, "store" if isinstance(err, ArtifactStoreError) else "user")
        traceback.print_exc()
    if secrets and "error" in result:
        result["error"] = {k: redact(v, secrets) if isinstance(v, str) else v for k, v in result["error"].items()}
    result["timings"] = {"start": started, "end": time.time(), "duration": time.time() - started}
    result["peak_memory_bytes"] = _peak_memory()

    store.write_text(spec["result_uri"], json.dumps(result, default=str))
    sys.stdout.flush()
    sys.stderr.flush()
    return 0 if result["status"] == "completed" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conveyor.entrypoints.step_operator",
                                     description="Run one pipeline step from its job spec.")
    parser.add_argument("--job", required=True, help="URI of the job spec (job.json) in the artifact store")
    parser.add_argument("--step_name")
    parser.add_argument("--step_run_id")
    args, _unknown = parser.parse_known_args(argv)
    try:
        return run_job(args.job)
    except Exception as err:  # noqa: BLE001 - a broken job spec must fail the step, not hang it
        print(f"conveyor: cannot run step {args.step_name or ''}: {err}", file=sys.stderr)
        _report_unrunnable(args.job, err)
        return 2


def _report_unrunnable(job_uri: str, err: Exception) -> None:
    """Tell the orchestrator why through result.json beside the job spec, so the step fails with the reason."""
    import json

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution.jobspec import RESULT_VERSION, JobSpecError

    kind = "job_spec" if isinstance(err, JobSpecError) else "infrastructure"
    result = {"version": RESULT_VERSION, "status": "failed", "error": _error(err, kind)}
    try:
        options = json.loads(os.environ.get("CONVEYOR_STORAGE_OPTIONS") or "{}")
        directory = job_uri.rsplit("/", 1)[0]
        ArtifactStore(directory, options or None).write_text(f"{directory}/result.json", json.dumps(result))
    except Exception as write_err:  # noqa: BLE001 - the store itself is out of reach: the exit code must do
        print(f"conveyor: cannot report the failure either: {write_err}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
