"""The base of the batch-scheduler step operators (`slurm`; a new scheduler writes its commands, state table and
submit options against it: docs/step_operators/custom.md, "A batch-scheduler flavor")."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.step_operators.batch.base import BatchSchedulerStepOperator, NodeSize
    from conveyor.step_operators.batch.commands import AccountingUnavailable, SchedulerCommands
    from conveyor.step_operators.batch.config import BatchSchedulerStepOperatorConfig
    from conveyor.step_operators.batch.poller import JobPoller
    from conveyor.step_operators.batch.states import Ending, JobInfo, QueueEntry, StateTable

#: each name's module, loaded on first use: a flavor's light `flavor.py` imports only `batch.config`
_HOMES = {"BatchSchedulerStepOperator": "base", "NodeSize": "base", "AccountingUnavailable": "commands",
          "SchedulerCommands": "commands", "BatchSchedulerStepOperatorConfig": "config", "JobPoller": "poller",
          "Ending": "states", "JobInfo": "states", "QueueEntry": "states", "StateTable": "states"}
__all__ = ["AccountingUnavailable", "BatchSchedulerStepOperator", "BatchSchedulerStepOperatorConfig", "Ending",
           "JobInfo", "JobPoller", "NodeSize", "QueueEntry", "SchedulerCommands", "StateTable"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
