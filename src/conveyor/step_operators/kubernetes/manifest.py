"""Plain-dict Kubernetes manifests for one step attempt: a batch/v1 Job and the Secret holding its credentials.

Pure Python (no kubernetes client), so `dry_run` and the schema tests render exactly what `submit` sends.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from typing import Any

from conveyor.config.resources import ResourceSettings

#: the one container of a step pod
CONTAINER = "step"
GPU_RESOURCE = "nvidia.com/gpu"
MANAGED_BY = "conveyor"
LABEL_PREFIX = "conveyor.dev/"

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def dns1123_name(name: str, limit: int = 63) -> str:
    """A DNS-1123 label of at most `limit` characters; a shortened name keeps a hash of the full one (stays unique)."""
    clean = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "conveyor"
    if clean == name and len(clean) <= limit:
        return clean
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{clean[:limit - 9].rstrip('-')}-{digest}"


def label_value(value: str) -> str:
    """A valid label value (≤63 characters, alphanumeric at both ends)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63].strip("-_.")
    return clean if _LABEL_VALUE.match(clean) else ""


def cpu_quantity(cpus: float) -> str:
    """"2" for whole CPUs, millicores ("1500m") otherwise, rounded up: never less than asked."""
    if float(cpus).is_integer():
        return str(int(cpus))
    return f"{math.ceil(cpus * 1000)}m"


def memory_quantity(nbytes: int) -> str:
    """The shortest exact quantity: "1Gi", "32G", "200M", or plain bytes (binary wins a tie: "1Gi", not
    "1073741824")."""
    exact = [f"{nbytes // factor}{suffix}"
             for suffix, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10),
                                    ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3))
             if nbytes >= factor and nbytes % factor == 0]
    return min(exact, key=len, default=str(nbytes))


def container_resources(resources: ResourceSettings) -> dict[str, dict[str, str]]:
    """ResourceSettings as requests == limits: the step gets what it asked for, and no more.

    Requests equal to limits make the pod Guaranteed for the resources given; a GPU is an extended resource,
    which Kubernetes accepts in limits (requests then default to the same).
    """
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if resources.cpu_count is not None:
        requests["cpu"] = limits["cpu"] = cpu_quantity(resources.cpu_count)
    if resources.memory_bytes is not None:
        requests["memory"] = limits["memory"] = memory_quantity(resources.memory_bytes)
    if resources.gpu_count:
        limits[GPU_RESOURCE] = str(resources.gpu_count)
    out: dict[str, dict[str, str]] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def secret_name(job_name: str) -> str:
    return dns1123_name(f"{job_name}-env", 253)


def secret_manifest(name: str, namespace: str, labels: dict[str, str], values: dict[str, str],
                    redact: bool = False) -> dict[str, Any]:
    """An Opaque Secret; `redact` keeps the keys and hides the values (dry runs, golden files)."""
    data = {k: ("<redacted>" if redact else base64.b64encode(v.encode()).decode()) for k, v in sorted(values.items())}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)}, "data": data}


def _env_list(plain: dict[str, str], secret_keys: list[str], secret: str | None,
              secret_env: dict[str, str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(plain.items())]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}} for k in sorted(secret_keys)]
    for var, ref in sorted(secret_env.items()):
        name, key = ref.split("/", 1)
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
    return env


def job_manifest(*, name: str, namespace: str, image: str, command: list[str], args: list[str],
                 plain_env: dict[str, str], secret: str | None, secret_keys: list[str], resources: ResourceSettings,
                 labels: dict[str, str], annotations: dict[str, str], pod: Any, deadline: int | None,
                 ttl: int | None, service_account: str | None, image_pull_secrets: list[str],
                 image_pull_policy: str | None, env_from_secrets: list[str],
                 secret_env: dict[str, str]) -> dict[str, Any]:
    """One batch/v1 Job: one pod, never restarted, never retried by Kubernetes (Conveyor owns retries)."""
    container: dict[str, Any] = {"name": CONTAINER, "image": image, "command": command, "args": args,
                                 "env": _env_list(plain_env, secret_keys, secret, secret_env)}
    if image_pull_policy:
        container["imagePullPolicy"] = image_pull_policy
    if env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in env_from_secrets]
    res = container_resources(resources)
    if res:
        container["resources"] = res
    if pod.volume_mounts:
        container["volumeMounts"] = [dict(m) for m in pod.volume_mounts]
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in image_pull_secrets]
    if pod.node_selectors:
        pod_spec["nodeSelector"] = dict(pod.node_selectors)
    if pod.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in pod.tolerations]
    if pod.affinity:
        pod_spec["affinity"] = dict(pod.affinity)
    if pod.volumes:
        pod_spec["volumes"] = [dict(v) for v in pod.volumes]
    spec: dict[str, Any] = {"backoffLimit": 0, "template": {
        "metadata": {"labels": dict(labels), **({"annotations": dict(annotations)} if annotations else {})},
        "spec": pod_spec}}
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def is_dns1123(name: str, limit: int = 63) -> bool:
    return len(name) <= limit and bool(_DNS1123.match(name))
