"""Settings and configuration models."""

from conveyor.config.base import BaseSettings, StrictModel
from conveyor.config.resources import ResourceSettings, StepRetryConfig

__all__ = ["BaseSettings", "ResourceSettings", "StepRetryConfig", "StrictModel"]
