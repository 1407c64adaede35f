"""A batch scheduler's command-line client: what a scheduler flavor writes to talk to its scheduler.

Schedulers are driven through their commands (sbatch/squeue, bsub/bjobs, qsub/qstat): their Python bindings
trail the scheduler versions in use. The base finds the commands and runs them; a subclass says which ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import ClassVar

from conveyor.exceptions import InfrastructureError
from conveyor.step_operators.batch.states import JobInfo, QueueEntry

__all__ = ["AccountingUnavailable", "SchedulerCommands"]


class AccountingUnavailable(Exception):
    """The cluster keeps no accounting (Slurm without slurmdbd): a job the controller forgot is gone for good."""


class SchedulerCommands:
    """Runs one scheduler's commands from `bin_dir` (else PATH). Subclasses implement the calls below; each is
    one command, and `query` covers many jobs at once (the operator polls all its jobs with one call)."""

    #: the scheduler's name in error messages
    scheduler: ClassVar[str] = "batch scheduler"
    #: how to make the commands available, said when one is missing
    install_hint: ClassVar[str] = "install the scheduler's client commands or set the step operator's bin dir"

    def __init__(self, bin_dir: str | None = None) -> None:
        self.bin_dir = bin_dir

    def exe(self, name: str) -> str:
        path = os.path.join(self.bin_dir, name) if self.bin_dir else shutil.which(name)
        if not path or not os.path.exists(path):
            raise InfrastructureError(f"`{name}` not found{' in ' + self.bin_dir if self.bin_dir else ' on PATH'}: "
                                      f"{self.install_hint}")
        return path

    def run(self, name: str, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.exe(name), *args], capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and proc.returncode != 0:
            raise InfrastructureError(f"{name} {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    # -- what a scheduler supplies ------------------------------------------------------------------
    def submit_command(self, script: str, args: Sequence[str]) -> list[str]:
        """The submission command line (`dry_run` shows it); its first word is a command name."""
        raise NotImplementedError

    def submit(self, script: str, args: Sequence[str]) -> str:
        """Submit the job script; return the job id (the default: what the submit command prints)."""
        name, *rest = self.submit_command(script, args)
        return self.run(name, *rest).stdout.strip()

    def query(self, job_ids: Sequence[str]) -> dict[str, QueueEntry]:
        """The jobs among `job_ids` the queue still lists, by id, in ONE command; a job missing from the answer
        has left the queue (finished, or forgotten)."""
        raise NotImplementedError

    def job(self, job_id: str) -> JobInfo | None:
        """A job the queue no longer lists, as the controller still remembers it; None once it forgot."""
        return None

    def accounting(self, job_id: str) -> JobInfo | None:
        """A finished job from the scheduler's accounting, asked once the controller forgot it; None when the
        accounting does not know it. Raise AccountingUnavailable when the cluster keeps none."""
        return None

    def cancel(self, job_id: str) -> None:
        raise NotImplementedError
