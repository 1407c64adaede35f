"""The CustomJob request for one step attempt, as a plain dict (no SDK), so `dry_run` and the golden file show
exactly what `submit` sends: `aiplatform_v1.CustomJob.from_json(json.dumps(job))` turns it into the message.

No secret value ever enters it. Only identifiers travel as plain environment; every other variable (the artifact
store's credentials, `{{secret.key}}` values, anything named in CONVEYOR_REDACT_ENV) goes into a per-job Secret
Manager secret, whose version name is the one thing the request carries. The container then starts through
`conveyor.step_operators.vertex.bootstrap`, which reads that version with the job's service account and execs the
entrypoint with the values in its environment.
"""

from __future__ import annotations

import math
import re
from typing import Any

from conveyor.step_operators.vertex.machines import MachineChoice

#: the Secret Manager version holding the step's secret variables (JSON), read by the bootstrap
SECRET_ENV = "CONVEYOR_VERTEX_SECRET"
#: where the bootstrap reaches Secret Manager when it is not secretmanager.googleapis.com
SECRET_ENDPOINT_ENV = "CONVEYOR_VERTEX_SECRET_ENDPOINT"
BOOTSTRAP_MODULE = "conveyor.step_operators.vertex.bootstrap"
MANAGED_BY = "conveyor"
STEP_RUN_LABEL = "conveyor-step-run-id"
ATTEMPT_LABEL = "conveyor-attempt"
#: the one worker's task name: Vertex labels its log entries with it
TASK = "workerpool0-0"


def gcp_label(value: str) -> str:
    """A valid Google Cloud label value: lowercase letters, digits, '_' and '-', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]+", "-", value.lower())[:63]


def secret_id(display_name: str) -> str:
    """The per-job secret's id (letters, digits, '_' and '-', ≤255), deterministic per step run and attempt."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{display_name}-env")[:255]


def job_labels(*, run_id: str, step_run_id: str, step: str, attempt: int, extra: dict[str, str]) -> dict[str, str]:
    ours = {"managed-by": MANAGED_BY, "conveyor-run-id": gcp_label(run_id), STEP_RUN_LABEL: gcp_label(step_run_id),
            "conveyor-step": gcp_label(step), ATTEMPT_LABEL: str(attempt)}
    return {**extra, **{k: v for k, v in ours.items() if v}}


def container_command(full: list[str], bootstrap: bool) -> tuple[list[str], list[str]]:
    """(command, args) of the container: the entrypoint, behind the bootstrap when there are secrets."""
    if bootstrap:
        return [full[0], "-m", BOOTSTRAP_MODULE], list(full)
    split = 3 if full[1:2] == ["-m"] else 1
    return full[:split], full[split:]


def custom_job(*, display_name: str, image: str, command: list[str], args: list[str], env: dict[str, str],
               machine: MachineChoice, boot_disk_type: str, boot_disk_size_gb: int, spot: bool,
               timeout: float | None, service_account: str | None, network: str | None,
               staging_bucket: str | None, labels: dict[str, str]) -> dict[str, Any]:
    """One CustomJob, one worker pool of one replica, never retried by Vertex (Conveyor owns retries)."""
    machine_spec: dict[str, Any] = {"machine_type": machine.machine_type}
    if machine.accelerator_type and machine.accelerator_count:
        machine_spec["accelerator_type"] = machine.accelerator_type
        machine_spec["accelerator_count"] = machine.accelerator_count
    pool = {"replica_count": 1, "machine_spec": machine_spec,
            "disk_spec": {"boot_disk_type": boot_disk_type, "boot_disk_size_gb": boot_disk_size_gb},
            "container_spec": {"image_uri": image, "command": command, "args": args,
                               "env": [{"name": k, "value": v} for k, v in sorted(env.items())]}}
    scheduling: dict[str, Any] = {"disable_retries": True}
    if timeout:
        scheduling["timeout"] = f"{math.ceil(timeout)}s"
    if spot:
        scheduling["strategy"] = "SPOT"
    spec: dict[str, Any] = {"worker_pool_specs": [pool], "scheduling": scheduling}
    if service_account:
        spec["service_account"] = service_account
    if network:
        spec["network"] = network
    if staging_bucket:
        spec["base_output_directory"] = {"output_uri_prefix": f"{staging_bucket}/{display_name}"}
    return {"display_name": display_name, "labels": dict(labels), "job_spec": spec}


def secret_request(*, labels: dict[str, str], ttl: float) -> dict[str, Any]:
    """The per-job secret (its value is added as a version, never shown here)."""
    return {"replication": {"automatic": {}}, "labels": dict(labels), "ttl": f"{math.ceil(ttl)}s"}
