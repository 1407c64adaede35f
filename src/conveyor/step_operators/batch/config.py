"""Config fields every batch-scheduler flavor has (a flavor adds its queue, account and command options)."""

from __future__ import annotations

from pydantic import Field

from conveyor.step_operators.base import BaseStepOperatorConfig

__all__ = ["BatchSchedulerStepOperatorConfig"]


class BatchSchedulerStepOperatorConfig(BaseStepOperatorConfig):
    python: str | None = Field(default=None, description="interpreter on the cluster; default: the one running Conveyor")
    working_dir: str | None = Field(default=None, description=(
        "directory shared with the cluster for job files; default: the step's attempt folder in a local artifact store"))
    poll_interval: float = Field(default=1.0, gt=0, description=(
        "longest wait between two queue polls, in seconds (one scheduler call per interval for all the jobs)"))
    ship_code: bool = Field(default=False, description=(
        "send the code as a content-hashed archive through the artifact store instead of importing it from a shared "
        "path: the job then runs exactly the code of submission time, even if the tree changes while it is queued"))
