"""The `vertex` step operator flavor: config, per-step settings and flavor (light: never imports the SDK)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, Field, field_validator

from conveyor.config.base import BaseSettings
from conveyor.images.settings import DockerSettings
from conveyor.step_operators.base import BaseStepOperatorConfig, BaseStepOperatorFlavor

if TYPE_CHECKING:
    from conveyor.step_operators.vertex.operator import VertexStepOperator

#: Google Cloud label rules: keys start with a lowercase letter; both ≤63 of lowercase letters, digits, _ and -
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
BOOT_DISK_TYPES = ("pd-ssd", "pd-standard", "hyperdisk-balanced")


def _check_labels(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(val):
            raise ValueError(f"label {key}={val!r}: Google Cloud labels are lowercase letters, digits, '_' and '-' "
                             "(≤63 characters; a key starts with a letter)")
    return value


def _check_accelerator(value: str | None) -> str | None:
    from conveyor.step_operators.vertex.machines import ACCELERATOR_TYPES

    if value is not None and value not in ACCELERATOR_TYPES:
        raise ValueError(f"unknown accelerator_type {value!r}; use one of {', '.join(sorted(ACCELERATOR_TYPES))}")
    return value


class VertexStepOperatorConfig(BaseStepOperatorConfig):
    project: str = Field(description="Google Cloud project of the CustomJobs (and of the per-job secrets)")
    location: str = Field(default="us-central1", description="Vertex AI region, e.g. us-central1 or europe-west4")
    machine_type: str | None = Field(default=None, description=(
        "machine type of every step unless its settings name one; default: chosen from the step's ResourceSettings "
        "(n1-standard-4 when it asks for nothing)"))
    accelerator_type: str | None = Field(default=None, description=(
        "GPU type, e.g. NVIDIA_TESLA_T4 (default for a gpu_count: the machine family's: T4 on n1, A100 on a2, L4 on "
        "g2)"))
    accelerator_count: int = Field(default=0, ge=0, description="GPUs per step unless ResourceSettings asks for more")
    use_preemptible: bool = Field(default=False, description=(
        "run on Spot VMs (scheduling strategy SPOT): cheaper, may be preempted; a preempted step is re-submitted "
        "under infrastructure_retries"))
    service_account: str | None = Field(default=None, description=(
        "service account the job runs as (needs read access to the artifact store and "
        "roles/secretmanager.secretAccessor); default: Vertex AI's custom code service agent"))
    network: str | None = Field(default=None, description=(
        "VPC network to peer the job with: projects/<project number>/global/networks/<name>"))
    staging_bucket: str | None = Field(default=None, description=(
        "gs:// prefix of the jobs' base output directory (Vertex sets AIP_MODEL_DIR etc. under <prefix>/<job>)"))
    boot_disk_type: str = Field(default="pd-ssd", description="boot disk of the worker: pd-ssd or pd-standard")
    boot_disk_size_gb: int = Field(default=100, ge=100, le=64000, description="boot disk size (Vertex's minimum: 100)")
    labels: dict[str, str] = Field(default_factory=dict, description="labels on every CustomJob and per-job secret")
    image: str | None = Field(default=None, description=(
        "prebuilt image (Python with conveyor installed, pushed where Vertex can pull it) of every step unless a "
        "step has 'docker' settings or its own image"))
    docker_settings: DockerSettings | None = Field(default=None, description=(
        "image defaults under the pipeline's and step's 'docker' settings (field by field)"))
    docker_host: str | None = Field(default=None, description=(
        "Docker Engine that builds step images (default: DOCKER_HOST); the image is pushed to the stack's container "
        "registry (Artifact Registry: the gcp flavor) and Vertex pulls it by digest"))
    build_network_mode: str | None = Field(default=None, description="network of image builds, e.g. 'host'")
    service_account_path: str | None = Field(default=None, description=(
        "service account key file Conveyor uses to call Google Cloud; default: Application Default Credentials"))
    api_endpoint: str | None = Field(default=None, description=(
        "Vertex AI API endpoint; default <location>-aiplatform.googleapis.com. An http:// URL (a local emulator) "
        "is called without credentials"))
    secret_manager_api_endpoint: str | None = Field(default=None, description=(
        "Secret Manager endpoint (default secretmanager.googleapis.com); also handed to the step's bootstrap"))
    logging_api_endpoint: str | None = Field(default=None, description=(
        "Cloud Logging endpoint (default https://logging.googleapis.com)"))
    transport: Literal["rest", "grpc"] = Field(default="rest", description=(
        "how the SDK talks to Vertex AI and Secret Manager (the tests use rest)"))
    poll_interval: float = Field(default=2.0, gt=0, description="longest wait between two status polls, in seconds")
    stop_timeout: float = Field(default=300.0, gt=0, description=(
        "how long cancel() waits for Vertex to report the job CANCELLED"))
    log_lag: float = Field(default=4.0, ge=0, description=(
        "how long to keep reading Cloud Logging after the job ended (entries arrive a few seconds late; the "
        "launcher waits at most 5 s for the log stream once a step has ended)"))
    secret_ttl: float = Field(default=8 * 86400.0, gt=0, description=(
        "Secret Manager deletes a per-job secret this long after it was created, should Conveyor not have removed "
        "it (default: 8 days, beyond Vertex's 7-day job limit)"))

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value)

    @field_validator("accelerator_type")
    @classmethod
    def _accelerator(cls, value: str | None) -> str | None:
        return _check_accelerator(value)

    @field_validator("staging_bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("gs://"):
            raise ValueError(f"staging_bucket {value!r} must be a gs:// URI")
        return value.rstrip("/") if value else value

    @field_validator("boot_disk_type")
    @classmethod
    def _disk(cls, value: str) -> str:
        if value not in BOOT_DISK_TYPES:
            raise ValueError(f"boot_disk_type {value!r}: use one of {', '.join(BOOT_DISK_TYPES)}")
        return value

    @field_validator("stop_timeout", "secret_ttl", "log_lag", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        from conveyor.config.units import parse_duration

        return parse_duration(value) if isinstance(value, str) else value


class VertexStepOperatorSettings(BaseSettings):
    """Per-step overrides under the key "step_operator.vertex"."""

    machine_type: str | None = Field(default=None, description="this step's machine type")
    accelerator_type: str | None = None
    accelerator_count: int | None = Field(default=None, ge=0)
    use_preemptible: bool | None = Field(default=None, description="Spot VMs for this step")
    boot_disk_type: str | None = None
    boot_disk_size_gb: int | None = Field(default=None, ge=100, le=64000,
                                          validation_alias=AliasChoices("boot_disk_size_gb", "disk_size_gb"))
    labels: dict[str, str] = Field(default_factory=dict, description="added to the operator's labels")
    image: str | None = Field(default=None, description="this step's image")
    service_account: str | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value)

    @field_validator("accelerator_type")
    @classmethod
    def _accelerator(cls, value: str | None) -> str | None:
        return _check_accelerator(value)

    @field_validator("boot_disk_type")
    @classmethod
    def _disk(cls, value: str | None) -> str | None:
        if value is not None and value not in BOOT_DISK_TYPES:
            raise ValueError(f"boot_disk_type {value!r}: use one of {', '.join(BOOT_DISK_TYPES)}")
        return value


class VertexStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs a step as a Vertex AI CustomJob; ResourceSettings choose the machine type and its GPUs."""

    name = "vertex"

    @property
    def config_class(self) -> type[VertexStepOperatorConfig]:
        return VertexStepOperatorConfig

    @property
    def settings_class(self) -> type[VertexStepOperatorSettings]:
        return VertexStepOperatorSettings

    @property
    def implementation_class(self) -> type["VertexStepOperator"]:
        from conveyor.step_operators.vertex.operator import VertexStepOperator

        return VertexStepOperator
