"""The `ssh` step operator: a step on a machine reached over SSH (light module: config, settings, flavor)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from conveyor.config.base import BaseSettings
from conveyor.step_operators.base import BaseStepOperatorConfig, BaseStepOperatorFlavor

if TYPE_CHECKING:
    from conveyor.step_operators.ssh.operator import SSHStepOperator


class SSHStepOperatorConfig(BaseStepOperatorConfig):
    hostname: str = Field(description="host to log in to")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port")
    username: str | None = Field(default=None, description="login user; default: the local user name")
    key_file: str | None = Field(default=None, description=(
        "path of the private key to log in with (its contents are never stored); default: the SSH agent and "
        "the user's default keys"))
    known_hosts: str | None = Field(default=None, description=(
        "known_hosts file to verify the host key against; default: ~/.ssh/known_hosts. Host keys are always checked"))
    python: str = Field(default="python3", description="interpreter on the remote host; it must import conveyor")
    remote_dir: str = Field(default="~/.conveyor", description=(
        "remote working directory (job files, a mirror of the artifact store, the GPU allocation table)"))
    gpu_indices: list[int] = Field(default_factory=list, description="the GPUs (nvidia-smi indices) this operator may hand out")
    connect_timeout: float = Field(default=15.0, gt=0, description="seconds to wait for the SSH connection")
    poll_interval: float = Field(default=1.0, gt=0, description="longest wait between two status polls, in seconds")
    lost_after: float = Field(default=300.0, gt=0, description=(
        "seconds without reaching the host before a running step is reported lost (retried as infrastructure)"))
    memory_enforcement: Literal["auto", "cgroup", "rlimit", "none"] = Field(
        default="auto", description="how `memory` is enforced on the host: a cgroup where writable, else RLIMIT_AS")

    @field_validator("gpu_indices")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(i < 0 for i in value):
            raise ValueError(f"gpu_indices {value}: give distinct, non-negative GPU indices")
        return value

    @field_validator("key_file")
    @classmethod
    def _key_is_a_path(cls, value: str | None) -> str | None:
        if value is not None and "PRIVATE KEY" in value:
            raise ValueError("key_file takes the path of a private key, not its contents (which are never stored)")
        return value


class SSHStepOperatorSettings(BaseSettings):
    environment: dict[str, str] = Field(default_factory=dict, description=(
        "extra environment variables for the step (written to a 0600 file on the host, never on a command line)"))


class SSHStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs a step on a machine reached over SSH, detached from the connection, with CPU, memory and GPU limits."""

    name = "ssh"

    @property
    def config_class(self) -> type[SSHStepOperatorConfig]:
        return SSHStepOperatorConfig

    @property
    def settings_class(self) -> type[SSHStepOperatorSettings]:
        return SSHStepOperatorSettings

    @property
    def implementation_class(self) -> type["SSHStepOperator"]:
        from conveyor.step_operators.ssh.operator import SSHStepOperator

        return SSHStepOperator
