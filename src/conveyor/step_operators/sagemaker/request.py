"""The CreateTrainingJob request for one step attempt, as plain data (no boto3).

Pure Python, so `dry_run` and the request tests render exactly what `submit` sends. The limits below are those of
the SageMaker API model (botocore's `sagemaker` service definition): a job name matches
`[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`, `Environment` has at most 100 entries whose keys match
`[a-zA-Z_][a-zA-Z0-9_]*` and are at most 512 characters, values at most 512; `ContainerEntrypoint` and
`ContainerArguments` hold at most 100 items of at most 256 characters each; at most 50 tags.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

from conveyor.config.resources import ResourceSettings
from conveyor.exceptions import ResourceUnavailableError
from conveyor.step_operators.container import PLAIN_ENV as CONTAINER_PLAIN_ENV

JOB_NAME_MAX = 63
ENV_MAX_ENTRIES = 100
ENV_KEY_MAX = 512
ENV_VALUE_MAX = 512
ARG_MAX = 256
ARGS_MAX_ITEMS = 100
TAGS_MAX = 50
#: Secrets Manager's limit on a secret's value
SECRET_MAX_BYTES = 65_536
_ENV_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TAG = re.compile(r"^[\w\s.:/=+\-@]*$")
#: the variables our bootstrap reads inside the container: never moved into the secret
SECRET_ENV = "CONVEYOR_SAGEMAKER_SECRET"
ENDPOINT_ENV = "CONVEYOR_SAGEMAKER_ENDPOINT_URL"
BOOTSTRAP_MODULE = "conveyor.step_operators.sagemaker.bootstrap"
REDACT_ENV = "CONVEYOR_REDACT_ENV"
#: what a training job's Environment shows beside every container flavor's identifiers (container.PLAIN_ENV): the
#: settings its container reads first. The step's own non-secret settings["environment"] and the operator
#: settings' `environment` are plain too. Everything else the launcher hands over (artifact store credentials,
#: values resolved from {{name.key}}) travels in the per-job secret.
SAGEMAKER_PLAIN_ENV = frozenset({"CONVEYOR_STORAGE_OPTIONS", REDACT_ENV, "AWS_DEFAULT_REGION", "AWS_REGION"})
PLAIN_ENV = CONTAINER_PLAIN_ENV | SAGEMAKER_PLAIN_ENV
#: never useful inside a training job (the role gives credentials), and naming a profile that is not there breaks boto
DROPPED_ENV = frozenset({"AWS_PROFILE"})


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: float
    gpus: int = 0
    gpu: str = ""

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)


#: the instance types Conveyor chooses from (a documented subset of SageMaker's training types), in the order
#: tried: fewest GPUs, then fewest vCPUs, then least memory, which is also roughly the order of their price
INSTANCE_TYPES: tuple[InstanceType, ...] = tuple(sorted((
    InstanceType("ml.m5.large", 2, 8), InstanceType("ml.m5.xlarge", 4, 16), InstanceType("ml.m5.2xlarge", 8, 32),
    InstanceType("ml.m5.4xlarge", 16, 64), InstanceType("ml.m5.12xlarge", 48, 192),
    InstanceType("ml.m5.24xlarge", 96, 384),
    InstanceType("ml.c5.xlarge", 4, 8), InstanceType("ml.c5.2xlarge", 8, 16), InstanceType("ml.c5.4xlarge", 16, 32),
    InstanceType("ml.c5.9xlarge", 36, 72), InstanceType("ml.c5.18xlarge", 72, 144),
    InstanceType("ml.r5.large", 2, 16), InstanceType("ml.r5.xlarge", 4, 32), InstanceType("ml.r5.2xlarge", 8, 64),
    InstanceType("ml.r5.4xlarge", 16, 128), InstanceType("ml.r5.8xlarge", 32, 256),
    InstanceType("ml.r5.12xlarge", 48, 384), InstanceType("ml.r5.16xlarge", 64, 512),
    InstanceType("ml.r5.24xlarge", 96, 768),
    InstanceType("ml.g5.xlarge", 4, 16, 1, "A10G"), InstanceType("ml.g5.2xlarge", 8, 32, 1, "A10G"),
    InstanceType("ml.g5.4xlarge", 16, 64, 1, "A10G"), InstanceType("ml.g5.8xlarge", 32, 128, 1, "A10G"),
    InstanceType("ml.g5.16xlarge", 64, 256, 1, "A10G"), InstanceType("ml.g5.12xlarge", 48, 192, 4, "A10G"),
    InstanceType("ml.g5.24xlarge", 96, 384, 4, "A10G"), InstanceType("ml.g5.48xlarge", 192, 768, 8, "A10G"),
    InstanceType("ml.p3.2xlarge", 8, 61, 1, "V100"), InstanceType("ml.p3.8xlarge", 32, 244, 4, "V100"),
    InstanceType("ml.p3.16xlarge", 64, 488, 8, "V100"),
    InstanceType("ml.p4d.24xlarge", 96, 1152, 8, "A100"), InstanceType("ml.p5.48xlarge", 192, 2048, 8, "H100"),
), key=lambda t: (t.gpus, t.vcpus, t.memory_gib)))
BY_NAME = {t.name: t for t in INSTANCE_TYPES}
DEFAULT_INSTANCE_TYPE = "ml.m5.large"


def fits(t: InstanceType, r: ResourceSettings) -> bool:
    return ((r.cpu_count is None or t.vcpus + 1e-9 >= r.cpu_count)
            and (r.memory_bytes is None or t.memory_bytes >= r.memory_bytes)
            and (not r.gpu_count or t.gpus >= r.gpu_count))


def _asks(r: ResourceSettings) -> str:
    asks = []
    if r.cpu_count is not None:
        asks.append(f"cpu_count={r.cpu_count:g}")
    if r.memory is not None:
        asks.append(f"memory={r.memory}")
    if r.gpu_count:
        asks.append(f"gpu_count={r.gpu_count}")
    return ", ".join(asks)


def choose_instance_type(r: ResourceSettings, given: str | None, step: str) -> str:
    """The given type (checked against the request when it is in the table), or the smallest that fits.

    Raises ResourceUnavailableError before anything is submitted when nothing can hold the request.
    """
    if given:
        known = BY_NAME.get(given)
        if known is not None and not fits(known, r):
            raise ResourceUnavailableError(
                f"step {step!r} asks for {_asks(r)}, more than {given} has ({known.vcpus} vCPUs, "
                f"{known.memory_gib:g} GiB, {known.gpus} GPUs): choose a larger instance_type or lower the request")
        return given
    if r.empty:
        return DEFAULT_INSTANCE_TYPE
    for t in INSTANCE_TYPES:
        if fits(t, r):
            return t.name
    big_cpu = max(t.vcpus for t in INSTANCE_TYPES)
    big_mem = max(t.memory_gib for t in INSTANCE_TYPES)
    big_gpu = max(t.gpus for t in INSTANCE_TYPES)
    raise ResourceUnavailableError(
        f"step {step!r} asks for {_asks(r)}: no SageMaker instance type Conveyor knows can hold it (the largest have "
        f"{big_cpu} vCPUs, {big_mem:g} GiB of memory, {big_gpu} GPUs; the table is in docs/step_operators/sagemaker.md). "
        "Lower the request, or name an instance_type in the operator config or the step's 'step_operator.sagemaker' "
        "settings")


def job_name(step: str, step_run_id: str, attempt: int) -> str:
    """Deterministic, unique per attempt (step run id + attempt), at most 63 characters, [a-zA-Z0-9-] only.

    SageMaker keeps job names for good within an account and region, so each attempt needs a new one.
    """
    ident = re.sub(r"[^a-zA-Z0-9]", "", step_run_id)[:16] or hashlib.sha256(step_run_id.encode()).hexdigest()[:16]
    tail = f"-{ident}-{attempt}"
    room = JOB_NAME_MAX - len(tail)
    readable = re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9]+", "-", f"conveyor-{step}")).strip("-")[:room].rstrip("-")
    return f"{readable}{tail}"


def secret_name(name: str) -> str:
    return f"conveyor/{name}"


def _secret_variables(environment: dict[str, str], step_env: dict[str, Any], operator_env: dict[str, str],
                      plain: frozenset[str]) -> set[str]:
    """Names of the variables that must not be plain values: named in CONVEYOR_REDACT_ENV, resolved from a
    {{reference}}, or anything the launcher added that is not a known identifier (the artifact store's
    credentials)."""
    redacted = {n for n in environment.get(REDACT_ENV, "").split(",") if n}
    plain_user = {k for k, v in step_env.items() if "{{" not in str(v)} | set(operator_env)
    return {k for k in environment if k in redacted or (k not in plain and k not in plain_user)}


def split_environment(environment: dict[str, str], step_env: dict[str, Any], operator_env: dict[str, str],
                      reserved: int = 2, plain_names: frozenset[str] = PLAIN_ENV) -> tuple[dict[str, str], dict[str, str]]:
    """(plain Environment, values for the per-job secret), within SageMaker's Environment limits.

    Secrets go to the secret; so do plain variables SageMaker would refuse (a key it does not accept, a value over
    512 characters, entries beyond 100 minus the `reserved` ones the bootstrap needs): the bootstrap exports them
    all the same.
    """
    env = {k: v for k, v in environment.items() if k not in DROPPED_ENV}
    secret_keys = _secret_variables(env, step_env, operator_env, plain_names)
    plain: dict[str, str] = {}
    hidden: dict[str, str] = {}
    for key in sorted(env):
        value = env[key]
        if key in secret_keys or not _ENV_KEY.match(key) or len(key) > ENV_KEY_MAX or len(value) > ENV_VALUE_MAX:
            hidden[key] = value
        else:
            plain[key] = value
    limit = ENV_MAX_ENTRIES - reserved
    if len(plain) > limit:
        # keep Conveyor's identifiers plain (they show in the console), move the rest
        order = sorted(plain, key=lambda k: (k not in plain_names, k))
        for key in order[limit:]:
            hidden[key] = plain.pop(key)
    return plain, hidden


def check_arguments(items: Iterable[str], what: str) -> list[str]:
    items = list(items)
    if len(items) > ARGS_MAX_ITEMS:
        raise ResourceUnavailableError(f"the step's {what} has {len(items)} items; SageMaker takes at most {ARGS_MAX_ITEMS}")
    for item in items:
        if len(item) > ARG_MAX:
            raise ResourceUnavailableError(
                f"the step's {what} has an item of {len(item)} characters ({item[:60]}...); SageMaker takes at most "
                f"{ARG_MAX}: use a shorter artifact store path")
    return items


def tags(pairs: dict[str, str]) -> list[dict[str, str]]:
    """SageMaker's tag list; characters it refuses become '-', and at most 50 tags."""
    out = []
    for key, value in pairs.items():
        key = re.sub(r"[^\w\s.:/=+\-@]", "-", key)[:128]
        value = re.sub(r"[^\w\s.:/=+\-@]", "-", value)[:256]
        if key:
            out.append({"Key": key, "Value": value})
    if len(out) > TAGS_MAX:
        raise ResourceUnavailableError(f"{len(out)} tags for a training job; SageMaker takes at most {TAGS_MAX}")
    return out


def stopping_condition(max_runtime: int | None, timeout: float | None, spot: bool, max_wait: int | None,
                       pending_timeout: float | None) -> dict[str, int]:
    """SageMaker's own time limits: a backstop for when no orchestrator is watching.

    The launcher cancels at the step's timeout; SageMaker stops the job a minute later if nobody did. Spot jobs need
    MaxWaitTimeInSeconds ≥ MaxRuntimeInSeconds: the runtime plus the pending timeout (default an hour).
    """
    runtime = max_runtime or (math.ceil(timeout) + 60 if timeout else None)
    out: dict[str, int] = {}
    if runtime is not None:
        out["MaxRuntimeInSeconds"] = runtime
    if spot:
        base = runtime or 86_400
        out.setdefault("MaxRuntimeInSeconds", base)
        wait = max_wait or base + math.ceil(pending_timeout or 3600)
        if wait < base:
            raise ResourceUnavailableError(
                f"max_wait_time_in_seconds={wait} is less than the job's MaxRuntimeInSeconds ({base}); SageMaker "
                "refuses that for spot jobs")
        out["MaxWaitTimeInSeconds"] = wait
    return out
