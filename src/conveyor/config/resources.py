"""`ResourceSettings` and `StepRetryConfig`: the knobs every step operator must honour."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, ValidationInfo, field_validator

from conveyor.config.base import BaseSettings
from conveyor.config.units import MEMORY_UNITS, parse_memory

MemoryUnit = Literal["KB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB", "PiB"]


class ResourceSettings(BaseSettings):
    """Resources a step needs; each flavor maps them onto its backend or refuses before submitting."""

    cpu_count: PositiveFloat | None = None
    gpu_count: NonNegativeInt | None = None
    memory: str | None = None

    @field_validator("cpu_count", "gpu_count", mode="before")
    @classmethod
    def _check_finite(cls, value: object, info: ValidationInfo) -> object:
        """`inf` would pass `> 0` and then mean "every CPU there is" or overflow a scheduler: refuse it by name."""
        if isinstance(value, float) and not math.isfinite(value):
            what = "CPUs (e.g. 2 or 0.5)" if info.field_name == "cpu_count" else "GPUs (e.g. 1)"
            raise ValueError(f"{info.field_name} must be a finite number of {what}, got {value}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"{info.field_name} must not be negative, got {value}")
        return value

    @field_validator("memory")
    @classmethod
    def _check_memory(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory(value)
        return value

    @property
    def empty(self) -> bool:
        return self.cpu_count is None and self.gpu_count is None and self.memory is None

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_memory(self.memory)

    def get_memory(self, unit: MemoryUnit | str = "GB") -> float | None:
        """Memory in `unit` (decimal KB/MB/GB or binary KiB/MiB/GiB), or None if unset."""
        if self.memory is None:
            return None
        factor = MEMORY_UNITS.get(unit.upper())
        if factor is None:
            raise ValueError(f"unknown memory unit {unit!r}; use one of {', '.join(MemoryUnit.__args__)}")
        return parse_memory(self.memory) / factor


class StepRetryConfig(BaseSettings):
    """Retries of user-code failures; infrastructure failures have their own budget."""

    max_retries: NonNegativeInt = 0
    delay: float = Field(default=0.0, ge=0, allow_inf_nan=False)  # an infinite delay would wait forever
    backoff: float = Field(default=1.0, ge=1, allow_inf_nan=False)

    def delay_for(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1-based)."""
        return self.delay * self.backoff ** max(retry_number - 1, 0)
