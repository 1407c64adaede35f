"""The job spec the launcher writes and the `result.json` the remote side writes back.

Both are versioned JSON; a malformed or foreign-version file is a clear error, never a hang.
"""

from __future__ import annotations

import json
from typing import Any

JOB_SPEC_VERSION = 1
RESULT_VERSION = 1


class JobSpecError(ValueError):
    """The job spec or result file cannot be used."""


REQUIRED_JOB_KEYS = ("version", "run_id", "step_name", "step_run_id", "attempt", "source", "parameters",
                     "inputs", "outputs", "artifact_store", "result_uri")
REQUIRED_RESULT_KEYS = ("version", "status")


def attempt_dir(store_root_join: Any, run_id: str, step: str, attempt: int) -> str:
    return store_root_join("runs", run_id, "steps", step, f"attempt-{attempt}")


def parse_job_spec(text: str, where: str) -> dict[str, Any]:
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
    return spec


def parse_result(text: str, where: str) -> dict[str, Any]:
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
