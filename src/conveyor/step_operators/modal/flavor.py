"""The `modal` step operator flavor: config, per-step settings and flavor (light: never imports the modal SDK)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from conveyor.config.base import BaseSettings
from conveyor.images.settings import DockerSettings
from conveyor.step_operators.base import BaseStepOperatorConfig, BaseStepOperatorFlavor

if TYPE_CHECKING:
    from conveyor.step_operators.modal.operator import ModalStepOperator

#: Modal's longest Sandbox lifetime (24 h)
MAX_TIMEOUT_S = 24 * 3600


def _gpu(value: str | None) -> str | None:
    if value is None:
        return None
    kind, _, count = value.partition(":")
    if not kind or (count and not count.isdigit()):
        raise ValueError(f"gpu {value!r}: write a GPU type such as 'A100', 'H100', 'T4' or 'any', optionally with a "
                         "count ('A100:2')")
    return value


class ModalStepOperatorConfig(BaseStepOperatorConfig):
    app_name: str = Field(default="conveyor-steps", description="Modal App the Sandboxes belong to (created if missing)")
    environment_name: str | None = Field(default=None, description="Modal environment; default: the profile's")
    image: str | None = Field(default=None, description=(
        "registry image (Python with conveyor installed) unless a step has 'docker' settings or its own image"))
    docker_settings: DockerSettings | None = Field(default=None, description=(
        "image defaults under the pipeline's and step's 'docker' settings (field by field)"))
    docker_host: str | None = Field(default=None, description=(
        "Docker Engine that builds step images from 'docker' settings without an `image`; the image is pushed to the "
        "stack's container registry, which Modal must be able to pull from"))
    build_network_mode: str | None = Field(default=None, description="network of image builds, e.g. 'host'")
    registry_secret: str | None = Field(default=None, description=(
        "name of a Modal Secret with REGISTRY_USERNAME/REGISTRY_PASSWORD for a private registry"))
    gpu: str | None = Field(default=None, description=(
        "GPU type of steps that ask for GPUs ('T4', 'A10G', 'A100', 'A100-80GB', 'H100', 'any'); "
        "ResourceSettings.gpu_count sets the count"))
    cpu: float | None = Field(default=None, gt=0, description="CPU cores of steps whose ResourceSettings give none")
    memory: int | None = Field(default=None, gt=0, description="memory in MiB of steps whose ResourceSettings give none")
    timeout: int = Field(default=MAX_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S, description=(
        "Sandbox lifetime in seconds when the step has no timeout (Modal's default of 300 s would kill long steps)"))
    region: str | list[str] | None = Field(default=None, description="region(s) the Sandbox may run in")
    cloud: str | None = Field(default=None, description="cloud provider: 'aws', 'gcp', 'oci' or 'auto'")
    secrets: list[str] = Field(default_factory=list, description=(
        "names of existing Modal Secrets every step gets as environment variables"))
    token_id: str | None = Field(default=None, description=(
        "Modal token id; default: MODAL_TOKEN_ID or ~/.modal.toml (a {{secret.key}} reference keeps it out of the "
        "store)"))
    token_secret: str | None = Field(default=None, description="Modal token secret (use a {{secret.key}} reference)")
    poll_interval: float = Field(default=1.0, gt=0, description="longest wait between two status polls, in seconds")
    stop_timeout: float = Field(default=60.0, gt=0, description="how long cancel() waits for the Sandbox to end")

    @field_validator("gpu")
    @classmethod
    def _gpu_string(cls, value: str | None) -> str | None:
        return _gpu(value)


class ModalStepOperatorSettings(BaseSettings):
    """Per-step overrides under the key "step_operator.modal"."""

    gpu: str | None = Field(default=None, description="GPU type (or 'TYPE:COUNT') of this step")
    cpu: float | None = Field(default=None, gt=0)
    memory: int | None = Field(default=None, gt=0, description="MiB")
    timeout: int | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S)
    region: str | list[str] | None = None
    cloud: str | None = None
    image: str | None = None
    secrets: list[str] = Field(default_factory=list, description="more Modal Secrets, added to the operator's")

    @field_validator("gpu")
    @classmethod
    def _gpu_string(cls, value: str | None) -> str | None:
        return _gpu(value)


class ModalStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs a step in a Modal Sandbox; ResourceSettings become its cpu, memory and gpu."""

    name = "modal"

    @property
    def config_class(self) -> type[ModalStepOperatorConfig]:
        return ModalStepOperatorConfig

    @property
    def settings_class(self) -> type[ModalStepOperatorSettings]:
        return ModalStepOperatorSettings

    @property
    def implementation_class(self) -> type["ModalStepOperator"]:
        from conveyor.step_operators.modal.operator import ModalStepOperator

        return ModalStepOperator
