"""Conveyor: ML pipelines whose steps can be handed to a step operator.

Names are loaded on first use, so `import conveyor` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ExecutionStatus",
    "ResourceSettings",
    "StepRetryConfig",
    "__version__",
    "get_step_context",
    "load_artifact",
    "log_metadata",
    "pipeline",
    "save_artifact",
    "step",
]

_LAZY = {
    "step": "conveyor.steps.step",
    "pipeline": "conveyor.pipelines.pipeline",
    "Client": "conveyor.client",
    "ExecutionStatus": "conveyor.enums",
    "ResourceSettings": "conveyor.config.resources",
    "StepRetryConfig": "conveyor.config.resources",
    "get_step_context": "conveyor.steps.context",
    "log_metadata": "conveyor.metadata",
    "save_artifact": "conveyor.artifacts.by_name",
    "load_artifact": "conveyor.artifacts.by_name",
}

if TYPE_CHECKING:
    from conveyor.client import Client
    from conveyor.config.resources import ResourceSettings, StepRetryConfig
    from conveyor.enums import ExecutionStatus
    from conveyor.artifacts.by_name import load_artifact, save_artifact
    from conveyor.metadata import log_metadata
    from conveyor.pipelines.pipeline import pipeline
    from conveyor.steps.context import get_step_context
    from conveyor.steps.step import step


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
