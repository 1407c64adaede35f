"""The `docker` step operator: a step in a container on a Docker-compatible engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.docker.flavor import (
        DockerStepOperatorConfig,
        DockerStepOperatorFlavor,
        DockerStepOperatorSettings,
    )

__all__ = ["DockerStepOperatorConfig", "DockerStepOperatorFlavor", "DockerStepOperatorSettings"]

# the flavor's Settings, Config and Flavor classes, loaded on first use: importing the package imports no SDK
# (docs/integrations.md)
__getattr__, __dir__ = flavor_exports(__name__, "Docker")
