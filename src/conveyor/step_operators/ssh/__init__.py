"""The `ssh` step operator: a step on a machine reached over SSH."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.ssh.flavor import (
        SSHStepOperatorConfig,
        SSHStepOperatorFlavor,
        SSHStepOperatorSettings,
    )

__all__ = ["SSHStepOperatorConfig", "SSHStepOperatorFlavor", "SSHStepOperatorSettings"]

# the flavor's Settings, Config and Flavor classes, loaded on first use: importing the package imports no SDK
# (docs/integrations.md)
__getattr__, __dir__ = flavor_exports(__name__, "SSH")
