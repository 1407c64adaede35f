"""The command every step operator runs: `python -m conveyor.entrypoints.step_operator --job URI ...`."""

from __future__ import annotations

import sys
from typing import Any

JOB_OPTION = "job"
STEP_NAME_OPTION = "step_name"
STEP_RUN_ID_OPTION = "step_run_id"
ENTRYPOINT_MODULE = "conveyor.entrypoints.step_operator"


class StepOperatorEntrypointConfiguration:
    """Builds the entrypoint command; subclass to add options for a custom flavor."""

    @classmethod
    def get_entrypoint_options(cls) -> set[str]:
        return {JOB_OPTION, STEP_NAME_OPTION, STEP_RUN_ID_OPTION}

    @classmethod
    def get_entrypoint_command(cls, python: str | None = None) -> list[str]:
        return [python or sys.executable, "-m", ENTRYPOINT_MODULE]

    @classmethod
    def get_entrypoint_arguments(cls, **kwargs: Any) -> list[str]:
        missing = cls.get_entrypoint_options() - kwargs.keys()
        if missing:
            raise ValueError(f"missing entrypoint arguments: {', '.join(sorted(missing))}")
        args: list[str] = []
        for option in sorted(cls.get_entrypoint_options()):
            args += [f"--{option}", str(kwargs[option])]
        return args
