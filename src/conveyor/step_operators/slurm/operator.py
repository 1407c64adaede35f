"""The Slurm step operator: sbatch a generated script, follow all jobs with one squeue per poll interval, read a
finished job from scontrol (or sacct once scontrol forgot it), stream its output file."""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from conveyor.enums import FailureKind
from conveyor.step_operators.batch.base import BatchSchedulerStepOperator, NodeSize
from conveyor.step_operators.batch.states import Ending, JobInfo, StateTable
from conveyor.step_operators.info import JobState, StepRunInfo
from conveyor.step_operators.slurm.commands import Slurm
from conveyor.step_operators.slurm.flavor import SlurmStepOperatorConfig, SlurmStepOperatorSettings
from conveyor.step_operators.slurm.script import sbatch_arguments

__all__ = ["NEVER_CLEAR", "QUEUED", "RUNNING", "SLURM_STATES", "SlurmStepOperator"]

#: Pending reasons that no amount of waiting clears: the request does not fit the partition, account or QOS.
NEVER_CLEAR = frozenset({
    "PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidAccount", "InvalidQOS",
    "AccountNotAllowed", "QOSNotAllowed", "ReqNodeNotAvail, UnavailableNodes:",
})
QUEUED = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
                    "SIGNALING"})
RUNNING = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT"})

SLURM_STATES = StateTable(
    scheduler="Slurm", queued=QUEUED, running=RUNNING, completed=frozenset({"COMPLETED"}), never_clear=NEVER_CLEAR,
    memory_states=frozenset({"OUT_OF_MEMORY"}),
    endings={
        **dict.fromkeys(("TIMEOUT", "DEADLINE"), Ending(
            JobState.FAILED, "{scheduler} job {job_id} hit its time limit ({TimeLimit}): raise the step's timeout or "
            "settings time_limit", FailureKind.TIMEOUT)),
        **dict.fromkeys(("NODE_FAIL", "BOOT_FAIL"), Ending(
            JobState.LOST, "{scheduler} job {job_id}: {state} on {NodeList}", with_exit_code=False)),
        "PREEMPTED": Ending(JobState.PREEMPTED, "{scheduler} job {job_id} was preempted", with_exit_code=False),
        "CANCELLED": Ending(JobState.CANCELLED, "{scheduler} job {job_id} was cancelled"),
    },
    memory=Ending(JobState.FAILED, "{advice} ({scheduler} job {job_id} ran out of its --mem)", FailureKind.MEMORY),
    never_starts=Ending(JobState.FAILED, "{scheduler} job {job_id} can never start: pending with reason {reason} "
                        "(the request does not fit the partition, account or QOS)", FailureKind.PENDING),
)


class SlurmStepOperator(BatchSchedulerStepOperator):
    states: ClassVar[StateTable] = SLURM_STATES
    output_file: ClassVar[str] = "slurm-output.log"
    queue_word: ClassVar[str] = "partition"
    nodes_hint: ClassVar[str] = " (see `sinfo`)"

    commands: Slurm

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._nodes: tuple[float, list[dict[str, str]]] | None = None

    @property
    def config(self) -> SlurmStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    def make_commands(self) -> Slurm:
        return Slurm(self.config.slurm_bin_dir)

    @staticmethod
    def _settings(info: StepRunInfo) -> SlurmStepOperatorSettings | None:
        return info.config.operator_settings  # type: ignore[return-value]

    def submit_arguments(self, info: StepRunInfo, output: str) -> list[str]:
        return sbatch_arguments(info, self.config, self._settings(info), output)

    def queue_nodes(self, info: StepRunInfo) -> tuple[str, list[NodeSize]]:
        """The partition's nodes from `sinfo` (read at most once a minute)."""
        if self._nodes is None or time.monotonic() - self._nodes[0] > 60:
            self._nodes = (time.monotonic(), self.commands.nodes())
        settings = self._settings(info)
        partition = (settings.partition if settings else None) or self.config.partition
        rows = self._nodes[1]
        if partition is None:
            default = [r for r in rows if r["partition"].endswith("*")]
            partition = default[0]["partition"].rstrip("*") if default else (rows[0]["partition"] if rows else "")
        return partition, [NodeSize(int(r["cpus"]), int(r["memory_mb"].rstrip("+")), _gpus(r["gres"]))
                           for r in rows if r["partition"].rstrip("*") == partition]

    @classmethod
    def killed_for_memory(cls, info: JobInfo, output: str | None) -> bool:
        """OverMemoryKill may be reported as FAILED by signal 9 before the state settles on OUT_OF_MEMORY."""
        if super().killed_for_memory(info, output):
            return True
        if info.state in ("FAILED", "CANCELLED") and output and os.path.exists(output):
            with open(output, errors="replace") as fh:
                fh.seek(max(0, os.path.getsize(output) - 65536))
                return "Exceeded job memory limit" in fh.read()
        return False


def _gpus(gres: str) -> int:
    """GPUs in a sinfo Gres column: `gpu:2`, `gpu:a100:4(S:0-1)`, `gpu:a100:2,gpu:v100:1`."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total
