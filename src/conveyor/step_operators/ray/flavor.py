"""The `ray` step operator flavor: config, per-step settings and flavor (light: never imports ray)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from conveyor.config.base import BaseSettings
from conveyor.step_operators.base import BaseStepOperatorConfig, BaseStepOperatorFlavor

if TYPE_CHECKING:
    from conveyor.step_operators.ray.operator import RayStepOperator


class RayStepOperatorConfig(BaseStepOperatorConfig):
    address: str = Field(default="http://127.0.0.1:8265", description=(
        "the Ray dashboard / Jobs API address of the cluster, e.g. http://head-node:8265"))
    runtime_env: dict[str, Any] = Field(default_factory=dict, description=(
        "runtime_env defaults for every job (env_vars, pip, py_modules, ...); steps add to it through settings"))
    poll_interval: float = Field(default=1.0, gt=0, description="longest wait between two job status polls, in seconds")
    python: str | None = Field(default=None, description=(
        "interpreter on the Ray nodes; default: the one running Conveyor, or `python` from the job's environment "
        "when runtime_env installs one (pip, uv, conda)"))
    stop_timeout: float = Field(default=30.0, gt=0, description="how long cancel() waits for a stopped job to end")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if "://" not in value:
            value = f"http://{value}"
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"address {value!r}: give the Ray dashboard's HTTP address, e.g. http://127.0.0.1:8265 "
                             "(not a ray:// client address or the GCS port)")
        return value


class RayStepOperatorSettings(BaseSettings):
    runtime_env: dict[str, Any] = Field(default_factory=dict, description=(
        "added to the operator's runtime_env: env_vars are merged, pip packages appended, other keys replace"))
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources (entrypoint_resources)")
    accelerator_type: str | None = Field(default=None, description=(
        "run on a node with this accelerator type, e.g. 'A100' (Ray's accelerator_type:<type> resource)"))


class RayStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs a step as a Ray job (Jobs API); ResourceSettings become entrypoint_num_cpus/num_gpus/memory."""

    name = "ray"

    @property
    def config_class(self) -> type[RayStepOperatorConfig]:
        return RayStepOperatorConfig

    @property
    def settings_class(self) -> type[RayStepOperatorSettings]:
        return RayStepOperatorSettings

    @property
    def implementation_class(self) -> type["RayStepOperator"]:
        from conveyor.step_operators.ray.operator import RayStepOperator

        return RayStepOperator
