"""The `slurm` step operator: a step as a Slurm batch job (sbatch, squeue/scontrol/sacct, scancel)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from conveyor.config.base import BaseSettings
from conveyor.step_operators.base import BaseStepOperatorFlavor
from conveyor.step_operators.batch.config import BatchSchedulerStepOperatorConfig

if TYPE_CHECKING:
    from conveyor.step_operators.slurm.operator import SlurmStepOperator


class SlurmStepOperatorConfig(BatchSchedulerStepOperatorConfig):
    partition: str | None = Field(default=None, description="default partition (sbatch --partition)")
    account: str | None = Field(default=None, description="sbatch --account")
    qos: str | None = Field(default=None, description="sbatch --qos")
    sbatch_args: list[str] = Field(default_factory=list, description="extra sbatch arguments for every job")
    slurm_bin_dir: str | None = Field(default=None, description=(
        "where sbatch/squeue/scontrol/sacct/scancel live; default: PATH"))


class SlurmStepOperatorSettings(BaseSettings):
    partition: str | None = None
    time_limit: str | None = Field(default=None, description="sbatch --time, e.g. '2:00:00' or '90' (minutes)")
    gres: str | None = Field(default=None, description="GPU type for --gres, e.g. 'gpu:a100' (the count comes from gpu_count)")
    constraint: str | None = None
    exclusive: bool = False
    nodes: int | None = Field(default=None, ge=1)
    extra_args: list[str] = Field(default_factory=list)

    @field_validator("gres")
    @classmethod
    def _gres(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("gpu") or value.count(":") > 1 or value.split(":")[-1].isdigit()):
            raise ValueError(f"gres {value!r}: give the GPU type only, e.g. 'gpu:a100' or 'gpu'; "
                             "the count comes from ResourceSettings(gpu_count=...)")
        return value


class SlurmStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs a step as a Slurm batch job; ResourceSettings become --cpus-per-task, --mem and --gres."""

    name = "slurm"

    @property
    def config_class(self) -> type[SlurmStepOperatorConfig]:
        return SlurmStepOperatorConfig

    @property
    def settings_class(self) -> type[SlurmStepOperatorSettings]:
        return SlurmStepOperatorSettings

    @property
    def implementation_class(self) -> type["SlurmStepOperator"]:
        from conveyor.step_operators.slurm.operator import SlurmStepOperator

        return SlurmStepOperator
