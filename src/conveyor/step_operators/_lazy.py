"""Each flavor package exports its Settings, Config and Flavor classes by name, loaded on first use.

`from conveyor.step_operators.sagemaker import SageMakerStepOperatorSettings` imports the flavor's light
`flavor.py` (pydantic only), never the SDK; importing the package itself imports nothing at all.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

__all__ = ["flavor_exports"]


def flavor_exports(package: str, prefix: str, aliases: dict[str, str] | None = None,
                   ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for `package`, whose `flavor.py` defines `<prefix>StepOperatorSettings`,
    `...Config` and `...Flavor`; `aliases` maps other spellings (ZenML's) to those names."""
    own = [f"{prefix}StepOperator{kind}" for kind in ("Config", "Flavor", "Settings")]
    aliases = dict(aliases or {})
    names = own + sorted(aliases)

    def __getattr__(name: str) -> Any:
        target = aliases.get(name, name)
        if target not in own:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.flavor"), target)

    def __dir__() -> list[str]:
        return sorted(set(names) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
