"""The `ray` step operator: a step as a Ray job (Jobs API), and `connect()` for fanning out inside a step.

Importing this package does not import ray: only `operator.py` (used when a component of the flavor is built) and
`connect()` do.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from conveyor.step_operators._lazy import flavor_exports

if TYPE_CHECKING:
    from conveyor.step_operators.ray.flavor import (
        RayStepOperatorConfig,
        RayStepOperatorFlavor,
        RayStepOperatorSettings,
    )

RAY_ADDRESS_ENV = "RAY_ADDRESS"


def connect(address: str | None = None, **init_kwargs: Any) -> Any:
    """Return the `ray` module connected to the cluster this step runs on, so the step can fan work out.

    Inside a step run by the `ray` step operator the step is the driver of a Ray job: Ray sets `RAY_ADDRESS`
    and this joins that cluster (as `ray.init(address="auto")` would). Elsewhere, pass `address` or set
    `RAY_ADDRESS`; with neither, "auto" finds a cluster started on this machine by `ray start`.
    Calling it again returns the same connection. Extra keyword arguments go to `ray.init`.

        from conveyor.step_operators.ray import connect

        @step(step_operator="ray")
        def sweep(grid: list[float]) -> float:
            ray = connect()
            score = ray.remote(train_one)
            return max(ray.get([score.remote(lr) for lr in grid]))
    """
    import ray

    if not ray.is_initialized():
        target = address or os.environ.get(RAY_ADDRESS_ENV) or "auto"
        init_kwargs.setdefault("log_to_driver", True)
        init_kwargs.setdefault("logging_level", "WARNING")
        ray.init(address=target, **init_kwargs)
    return ray


# the flavor's Settings, Config and Flavor classes, loaded on first use (docs/integrations.md)
__getattr__, __dir__ = flavor_exports(__name__, "Ray")
__all__ = ["connect", "RayStepOperatorConfig", "RayStepOperatorFlavor", "RayStepOperatorSettings"]
