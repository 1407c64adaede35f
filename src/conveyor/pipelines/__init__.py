"""Pipelines."""

from conveyor.pipelines.compiler import Snapshot
from conveyor.pipelines.pipeline import Pipeline, pipeline

__all__ = ["Pipeline", "Snapshot", "pipeline"]
