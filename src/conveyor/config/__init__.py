"""Settings and configuration models (loaded on first use: pydantic is the heaviest import we have)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["BaseSettings", "DockerSettings", "ResourceSettings", "StepRetryConfig", "StrictModel"]

if TYPE_CHECKING:
    from conveyor.config.base import BaseSettings, StrictModel
    from conveyor.config.resources import ResourceSettings, StepRetryConfig
    from conveyor.config.docker_settings import DockerSettings


def __getattr__(name: str) -> Any:
    if name in ("BaseSettings", "StrictModel"):
        from conveyor.config import base

        return getattr(base, name)
    if name in ("ResourceSettings", "StepRetryConfig"):
        from conveyor.config import resources

        return getattr(resources, name)
    if name == "DockerSettings":  # where ZenML users import it from (`zenml.config.DockerSettings`)
        from conveyor.config.docker_settings import DockerSettings

        return DockerSettings
    raise AttributeError(name)
