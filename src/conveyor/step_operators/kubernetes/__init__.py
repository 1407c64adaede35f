"""The `kubernetes` step operator: a step as a batch/v1 Job. Importing this package imports no kubernetes client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.kubernetes.flavor import (
        KubernetesStepOperatorConfig,
        KubernetesStepOperatorFlavor,
        KubernetesStepOperatorSettings,
    )

__all__ = ["KubernetesStepOperatorConfig", "KubernetesStepOperatorFlavor", "KubernetesStepOperatorSettings"]

# the flavor's Settings, Config and Flavor classes, loaded on first use: importing the package imports no SDK
# (docs/integrations.md)
__getattr__, __dir__ = flavor_exports(__name__, "Kubernetes")
