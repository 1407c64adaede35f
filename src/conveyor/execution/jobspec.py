"""The job spec the launcher writes and the `result.json` the remote side writes back.

Both are versioned JSON; a malformed or foreign-version file is a clear error, never a hang.
"""

from __future__ import annotations

import errno as _errno
import json
from typing import Any

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


def attempt_dir(store_root_join: Any, run_id: str, step: str, attempt: int) -> str:
    return store_root_join("runs", run_id, "steps", step, f"attempt-{attempt}")


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
    if result["status"] not in ("completed", "failed"):
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
