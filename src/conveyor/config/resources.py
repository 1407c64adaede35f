"""`ResourceSettings` and `StepRetryConfig`: the knobs every step operator must honour."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, field_validator

from conveyor.config.base import BaseSettings
from conveyor.config.units import MEMORY_UNITS, parse_memory

MemoryUnit = Literal["KB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB", "PiB"]


class ResourceSettings(BaseSettings):
    """Resources a step needs; each flavor maps them onto its backend or refuses before submitting."""

    cpu_count: PositiveFloat | None = None
    gpu_count: NonNegativeInt | None = None
    memory: str | None = None

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
    delay: float = Field(default=0.0, ge=0)
    backoff: float = Field(default=1.0, ge=1)

    def delay_for(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1-based)."""
        return self.delay * self.backoff ** max(retry_number - 1, 0)
