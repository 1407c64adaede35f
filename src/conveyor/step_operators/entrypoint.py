"""The command every step operator runs: `python -m conveyor.entrypoints.step_operator --job URI ...`."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["BASE_OPTIONS", "ENTRYPOINT_MODULE", "JOB_OPTION", "STEP_NAME_OPTION", "STEP_RUN_ID_OPTION",
           "StepOperatorEntrypointConfiguration"]

JOB_OPTION = "job"
STEP_NAME_OPTION = "step_name"
STEP_RUN_ID_OPTION = "step_run_id"
ENTRYPOINT_MODULE = "conveyor.entrypoints.step_operator"
#: what every step's process needs; the launcher always gives them
BASE_OPTIONS = frozenset({JOB_OPTION, STEP_NAME_OPTION, STEP_RUN_ID_OPTION})


class StepOperatorEntrypointConfiguration:
    """Builds the entrypoint command; subclass to add options for a custom flavor."""

    @classmethod
    def get_entrypoint_options(cls) -> set[str]:
        return set(BASE_OPTIONS)

    @classmethod
    def get_entrypoint_command(cls, python: str | None = None) -> list[str]:
        return [python or sys.executable, "-m", ENTRYPOINT_MODULE]

    @classmethod
    def get_entrypoint_arguments(cls, **kwargs: Any) -> list[str]:
        """`--option value` for each option of `get_entrypoint_options()` that has a value in `kwargs`.

        The launcher passes `job`, `step_name` and `step_run_id`; a subclass that adds an option appends its own
        `--option value` to `super().get_entrypoint_arguments(**kwargs)`, as in ZenML. The step's process accepts
        (and ignores) options it does not know.
        """
        options = cls.get_entrypoint_options()
        missing = (options & BASE_OPTIONS) - kwargs.keys()
        if missing:
            raise ValueError(f"missing entrypoint arguments: {', '.join(sorted(missing))}")
        args: list[str] = []
        for option in sorted(options):
            if option in kwargs:
                args += [f"--{option}", str(kwargs[option])]
        return args
