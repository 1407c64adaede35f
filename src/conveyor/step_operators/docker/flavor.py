"""The `docker` step operator flavor: config, per-step settings and flavor (light: never imports the docker SDK)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from conveyor.config.base import BaseSettings
from conveyor.images.settings import DockerSettings
from conveyor.step_operators.base import BaseStepOperatorConfig, BaseStepOperatorFlavor

if TYPE_CHECKING:
    from conveyor.step_operators.docker.operator import DockerStepOperator


def _check_mounts(value: list[str]) -> list[str]:
    for mount in value:
        parts = mount.split(":")
        if not parts[0].startswith(("/", "~")) or len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise ValueError(f"mount {mount!r}: write it as /host/path[:/container/path][:ro]")
    return value


class DockerStepOperatorConfig(BaseStepOperatorConfig):
    docker_settings: DockerSettings | None = Field(default=None, description=(
        "image defaults for every step of this operator (e.g. parent_image); a pipeline's or step's \"docker\" "
        "settings override them field by field"))
    docker_host: str | None = Field(default=None, description=(
        "the Docker Engine API, e.g. unix:///var/run/docker.sock, tcp://host:2376, or the socket of "
        "`podman system service`; default: DOCKER_HOST or the default socket"))
    network_mode: str | None = Field(default=None, description=(
        "the containers' network: 'bridge', 'host' (to reach a service on this machine's loopback), 'none'; "
        "default: the engine's"))
    build_network_mode: str | None = Field(default=None, description=(
        "network of image builds (only with DockerSettings(pip_source='index') or apt_packages)"))
    mounts: list[str] = Field(default_factory=list, description=(
        "bind mounts for every step, /host/path[:/container/path][:ro]; the same path inside when omitted"))
    mount_artifact_store: bool = Field(default=True, description=(
        "bind-mount a local artifact store at the same path inside the container (remote stores are reached "
        "through fsspec with the credentials passed as environment)"))
    ulimits: dict[str, str | int] = Field(default_factory=dict, description=(
        "ulimits for every container, name -> 'soft:hard' or a number, e.g. {'nofile': '1024:4096'} (the "
        "Docker-compatible API of Podman ignores containers.conf's default_ulimits)"))
    user: str | None = Field(default=None, description="user[:group] the step runs as; default: the image's")
    keep_container: bool = Field(default=False, description="keep finished containers (to inspect them) instead of removing them")
    stop_timeout: float = Field(default=10.0, gt=0, description="seconds a stopped container gets before SIGKILL")
    poll_interval: float = Field(default=1.0, gt=0, description="longest wait between two status polls, in seconds")

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, value: list[str]) -> list[str]:
        return _check_mounts(value)


class DockerStepOperatorSettings(BaseSettings):
    network_mode: str | None = Field(default=None, description="overrides the operator's network_mode for this step")
    mounts: list[str] = Field(default_factory=list, description="bind mounts added to the operator's for this step")
    environment: dict[str, str] = Field(default_factory=dict, description="extra environment variables for the step")
    keep_container: bool | None = Field(default=None, description="overrides the operator's keep_container")

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, value: list[str]) -> list[str]:
        return _check_mounts(value)


class DockerStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs a step in a container on a Docker-compatible engine (Docker, or Podman's API socket)."""

    name = "docker"

    @property
    def config_class(self) -> type[DockerStepOperatorConfig]:
        return DockerStepOperatorConfig

    @property
    def settings_class(self) -> type[DockerStepOperatorSettings]:
        return DockerStepOperatorSettings

    @property
    def implementation_class(self) -> type["DockerStepOperator"]:
        from conveyor.step_operators.docker.operator import DockerStepOperator

        return DockerStepOperator
