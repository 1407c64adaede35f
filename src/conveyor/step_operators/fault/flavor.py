"""The `fault` step operator: `local`, plus failures on demand, for testing pipelines and Conveyor itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from conveyor.config.base import BaseSettings
from conveyor.step_operators.base import BaseStepOperatorFlavor
from conveyor.step_operators.local.flavor import LocalStepOperatorConfig

if TYPE_CHECKING:
    from conveyor.step_operators.fault.operator import FaultStepOperator

FaultMode = Literal["none", "submit", "mid_run", "lose", "preempt", "exit_code", "hang", "stuck_pending",
                    "truncated_job_spec", "foreign_job_spec", "binary_job_spec", "truncated_result", "foreign_result",
                    "moved_result"]


class FaultFields(BaseSettings):
    fault: FaultMode = Field(default="none", description=(
        "submit: refuse the submission; mid_run: kill the job after `fault_after` s; lose: the job vanishes; "
        "preempt: the backend preempts it; exit_code: exit with `exit_code` without running the step; "
        "hang: run forever; stuck_pending: never leave the queue; truncated_job_spec / foreign_job_spec: the step "
        "finds its job spec cut short / of another version; binary_job_spec: not UTF-8 at all; truncated_result / "
        "foreign_result: the same for the result.json the step writes back; moved_result: that result.json is moved "
        "away once the step has ended"))
    fault_after: float = Field(default=0.5, ge=0, description="seconds into the run before mid_run/lose/preempt strike")
    exit_code: int = Field(default=3, description="exit code for fault=exit_code")
    fault_attempts: int | None = Field(default=None, ge=1, description="inject only on the first N attempts")


class FaultStepOperatorConfig(LocalStepOperatorConfig, FaultFields):
    pass


class FaultStepOperatorSettings(FaultFields):
    fault: FaultMode | None = None  # type: ignore[assignment]
    fault_after: float | None = None  # type: ignore[assignment]
    exit_code: int | None = None  # type: ignore[assignment]


class FaultStepOperatorFlavor(BaseStepOperatorFlavor):
    """Like `local`, but injects configured failures: at submit, mid-run, lost job, exit code, hang."""

    name = "fault"

    @property
    def config_class(self) -> type[FaultStepOperatorConfig]:
        return FaultStepOperatorConfig

    @property
    def settings_class(self) -> type[FaultStepOperatorSettings]:
        return FaultStepOperatorSettings

    @property
    def implementation_class(self) -> type["FaultStepOperator"]:
        from conveyor.step_operators.fault.operator import FaultStepOperator

        return FaultStepOperator
