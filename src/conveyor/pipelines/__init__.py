"""Pipelines. Lazy, so the remote entrypoint can use `conveyor.pipelines.source` without the compiler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Pipeline", "Snapshot", "pipeline"]

if TYPE_CHECKING:
    from conveyor.pipelines.compiler import Snapshot
    from conveyor.pipelines.pipeline import Pipeline, pipeline


def __getattr__(name: str) -> Any:
    if name == "Snapshot":
        from conveyor.pipelines.compiler import Snapshot

        return Snapshot
    if name in ("Pipeline", "pipeline"):
        from conveyor.pipelines import pipeline as module

        return getattr(module, name)
    raise AttributeError(name)
