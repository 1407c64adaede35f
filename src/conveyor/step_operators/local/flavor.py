"""The `local` step operator: a subprocess on this machine with ResourceSettings enforced."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from conveyor.config.base import BaseSettings
from conveyor.step_operators.base import BaseStepOperatorConfig, BaseStepOperatorFlavor

if TYPE_CHECKING:
    from conveyor.step_operators.local.operator import LocalStepOperator


class LocalStepOperatorConfig(BaseStepOperatorConfig):
    python: str | None = Field(default=None, description="interpreter for the step; default: the one running Conveyor")
    warm_start: bool = Field(default=True, description=(
        "keep one step process started ahead, with Conveyor's remote side already imported"))
    memory_enforcement: Literal["auto", "cgroup", "rlimit", "none"] = Field(
        default="auto", description="how `memory` is enforced: a cgroup where writable, else RLIMIT_AS")


class LocalStepOperatorSettings(BaseSettings):
    environment: dict[str, str] = Field(default_factory=dict, description="extra environment variables for the step")


class LocalStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs a step in its own process group here, with CPU, memory and GPU limits enforced."""

    name = "local"

    @property
    def config_class(self) -> type[LocalStepOperatorConfig]:
        return LocalStepOperatorConfig

    @property
    def settings_class(self) -> type[LocalStepOperatorSettings]:
        return LocalStepOperatorSettings

    @property
    def implementation_class(self) -> type["LocalStepOperator"]:
        from conveyor.step_operators.local.operator import LocalStepOperator

        return LocalStepOperator
