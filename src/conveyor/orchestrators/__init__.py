"""Orchestrators run a pipeline's DAG."""

from conveyor.orchestrators.base import BaseOrchestrator, BaseOrchestratorConfig, BaseOrchestratorFlavor

__all__ = ["BaseOrchestrator", "BaseOrchestratorConfig", "BaseOrchestratorFlavor"]
