"""The `modal` step operator: one Modal Sandbox per step attempt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.modal.flavor import (
        ModalStepOperatorConfig,
        ModalStepOperatorFlavor,
        ModalStepOperatorSettings,
    )

__all__ = ["ModalStepOperatorConfig", "ModalStepOperatorFlavor", "ModalStepOperatorSettings"]

# the flavor's Settings, Config and Flavor classes, loaded on first use: importing the package imports no SDK
# (docs/integrations.md)
__getattr__, __dir__ = flavor_exports(__name__, "Modal")
