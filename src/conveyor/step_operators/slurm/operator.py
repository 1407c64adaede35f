"""The Slurm step operator: sbatch a generated script, follow it with squeue/scontrol, stream its output file."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, ClassVar, Iterator

from conveyor.artifacts.layout import AttemptLayout
from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError
from conveyor.step_operators.base import BaseStepOperator
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission
from conveyor.step_operators.slurm.commands import JobInfo, Slurm
from conveyor.step_operators.slurm.flavor import SlurmStepOperatorConfig, SlurmStepOperatorSettings
from conveyor.step_operators.slurm.script import batch_script, env_file_text, sbatch_arguments

#: Pending reasons that no amount of waiting clears: the request does not fit the partition, account or QOS.
NEVER_CLEAR = frozenset({
    "PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidAccount", "InvalidQOS",
    "AccountNotAllowed", "QOSNotAllowed", "ReqNodeNotAvail, UnavailableNodes:", "PartitionNodeLimit",
})
QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "SIGNALING"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT"}


def _pending(reason: str) -> str:
    return "pending in the Slurm queue" + (f" ({reason})" if reason and reason != "None" else "")


class SlurmStepOperator(BaseStepOperator):
    streams_logs: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slurm = Slurm(self.config.slurm_bin_dir)
        self._nodes: tuple[float, list[dict[str, str]]] | None = None
        self._done: set[str] = set()

    @property
    def config(self) -> SlurmStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    @property
    def needs_code_archive(self) -> bool:  # type: ignore[override]
        return self.config.ship_code

    @staticmethod
    def _settings(info: StepRunInfo) -> SlurmStepOperatorSettings | None:
        return info.config.operator_settings  # type: ignore[return-value]

    def _job_dir(self, info: StepRunInfo) -> str:
        if self.config.working_dir:
            return AttemptLayout.of(info).under(self.config.working_dir)
        if "://" in info.attempt_uri:
            raise ResourceUnavailableError(
                "the slurm step operator needs a directory shared with the cluster for its job files: set working_dir "
                "(conveyor step-operator update NAME --working_dir=/shared/path)")
        return info.attempt_uri

    def _command(self, command: list[str]) -> list[str]:
        command = list(command)
        command[0] = self.config.python or sys.executable
        return command

    # -- checks -----------------------------------------------------------------------------------
    def _partition_nodes(self, info: StepRunInfo) -> tuple[str, list[dict[str, str]]]:
        if self._nodes is None or time.monotonic() - self._nodes[0] > 60:
            self._nodes = (time.monotonic(), self.slurm.nodes())
        settings = self._settings(info)
        partition = (settings.partition if settings else None) or self.config.partition
        rows = self._nodes[1]
        if partition is None:
            default = [r for r in rows if r["partition"].endswith("*")]
            partition = default[0]["partition"].rstrip("*") if default else (rows[0]["partition"] if rows else "")
        return partition, [r for r in rows if r["partition"].rstrip("*") == partition]

    def check_resources(self, info: StepRunInfo) -> None:
        r = info.config.resource_settings
        if r.empty:
            return
        partition, nodes = self._partition_nodes(info)
        step = info.pipeline_step_name
        if not nodes:
            raise ResourceUnavailableError(f"step {step!r}: Slurm partition {partition!r} has no nodes (see `sinfo`)")

        def gpus(gres: str) -> int:
            total = 0
            for item in gres.split(","):
                parts = item.split("(")[0].split(":")
                if parts[0] == "gpu" and parts[-1].isdigit():
                    total += int(parts[-1])
            return total

        biggest = {"cpus": max(int(n["cpus"]) for n in nodes), "memory": max(int(n["memory_mb"].rstrip("+")) for n in nodes),
                   "gpus": max(gpus(n["gres"]) for n in nodes)}
        wants = []
        if r.cpu_count is not None and math.ceil(r.cpu_count) > biggest["cpus"]:
            wants.append(f"cpu_count={r.cpu_count:g} (largest node: {biggest['cpus']} CPUs)")
        if r.memory_bytes is not None and math.ceil(r.memory_bytes / 2**20) > biggest["memory"]:
            wants.append(f"memory={r.memory} (largest node: {biggest['memory']} MB)")
        if r.gpu_count and r.gpu_count > biggest["gpus"]:
            wants.append(f"gpu_count={r.gpu_count} (largest node: {biggest['gpus']} GPUs)")
        if wants:
            raise ResourceUnavailableError(
                f"step {step!r} asks for {', '.join(wants)}, more than any node of Slurm partition {partition!r} has: "
                "lower the request or pick another partition (settings={'step_operator.slurm': {'partition': ...}})")

    # -- full contract ----------------------------------------------------------------------------
    def render(self, info: StepRunInfo, entrypoint_command: list[str]) -> tuple[str, list[str], str]:
        job_dir = self._job_dir(info)
        output = os.path.join(job_dir, "slurm-output.log")
        args = sbatch_arguments(info, self.config, self._settings(info), output)
        script = batch_script(self._command(entrypoint_command), os.path.join(job_dir, "env.sh"), os.getcwd())
        return job_dir, args, script

    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        self.check_resources(info)
        job_dir, args, script = self.render(info, entrypoint_command)
        os.makedirs(job_dir, exist_ok=True)
        env_path = os.path.join(job_dir, "env.sh")
        fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(env_file_text(environment))
        script_path = os.path.join(job_dir, "job.sh")
        with open(script_path, "w") as fh:
            fh.write(script)
        job_id = self.slurm.submit(script_path, args)
        return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=job_id,
                          data={"job_id": job_id, "job_dir": job_dir, "output": os.path.join(job_dir, "slurm-output.log"),
                                "env_file": env_path})

    def get_status(self, submission: Submission) -> StatusReport:
        job_id = submission.data["job_id"]
        queued = self.slurm.queue_state(job_id)
        if queued is None or queued[0] not in QUEUED | RUNNING:
            self._done.add(job_id)  # lets the log tailer stop without asking Slurm again
        if queued is not None and queued[0] in QUEUED | RUNNING:
            state, reason = queued
            if state in RUNNING:
                return StatusReport("running")
            if reason in NEVER_CLEAR:
                self.cancel(submission)
                return StatusReport("failed", f"Slurm job {job_id} can never start: pending with reason {reason} "
                                    "(the request does not fit the partition, account or QOS)", kind="pending")
            return StatusReport("queued", _pending(reason))
        info = self.slurm.job(job_id)
        if info is None:
            return StatusReport("lost", f"Slurm no longer knows job {job_id}")
        return self._finished(job_id, info, submission.data.get("output"))

    @staticmethod
    def _killed_for_memory(info: JobInfo, output: str | None) -> bool:
        """OverMemoryKill may be reported as FAILED by signal 9 before the state settles on OUT_OF_MEMORY."""
        if info.state == "OUT_OF_MEMORY" or "memory" in info.reason.lower():
            return True
        if info.state in ("FAILED", "CANCELLED") and output and os.path.exists(output):
            with open(output, errors="replace") as fh:
                fh.seek(max(0, os.path.getsize(output) - 65536))
                return "Exceeded job memory limit" in fh.read()
        return False

    @classmethod
    def _finished(cls, job_id: str, info: JobInfo, output: str | None = None) -> StatusReport:
        state, code = info.state, info.exit_code
        if state in QUEUED:
            return StatusReport("queued", _pending(info.reason))
        if state in RUNNING:
            return StatusReport("running")
        if state == "COMPLETED":
            return StatusReport("completed", exit_code=code)
        if cls._killed_for_memory(info, output):
            return StatusReport("failed", f"{MEMORY_ADVICE} (Slurm job {job_id} ran out of its --mem)",
                                exit_code=code, kind="memory")
        if state in ("TIMEOUT", "DEADLINE"):
            return StatusReport("failed", f"Slurm job {job_id} hit its time limit ({info.fields.get('TimeLimit', '?')}): "
                                "raise the step's timeout or settings time_limit", exit_code=code, kind="timeout")
        if state in ("NODE_FAIL", "BOOT_FAIL"):
            return StatusReport("lost", f"Slurm job {job_id}: {state} on {info.fields.get('NodeList', '?')}")
        if state == "PREEMPTED":
            return StatusReport("preempted", f"Slurm job {job_id} was preempted")
        if state == "CANCELLED":
            return StatusReport("cancelled", f"Slurm job {job_id} was cancelled", exit_code=code)
        detail = f"exit code {code}" if not info.signal else f"signal {info.signal}"
        return StatusReport("failed", f"Slurm job {job_id} ended {state} ({detail})", exit_code=code)

    def cancel(self, submission: Submission) -> None:
        job_id = submission.data.get("job_id")
        if job_id:
            self.slurm.cancel(job_id)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                q = self.slurm.queue_state(job_id)
                if q is None or q[0] not in QUEUED | RUNNING:
                    break
                time.sleep(0.2)

    def cleanup(self, submission: Submission) -> None:
        env_file = submission.data.get("env_file")
        if env_file:
            try:
                os.remove(env_file)
            except OSError:
                pass

    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        from conveyor.utils.tail import tail_file

        job_id = submission.data["job_id"]
        asked = [time.monotonic()]

        def finished() -> bool:
            """The status poll usually knows first; ask Slurm ourselves only now and then (e.g. another process)."""
            if job_id in self._done:
                return True
            if time.monotonic() - asked[0] > 1.0:
                asked[0] = time.monotonic()
                q = self.slurm.queue_state(job_id)
                return q is None or q[0] not in QUEUED | RUNNING
            return False

        yield from tail_file(submission.data["output"], follow, finished, lambda: time.sleep(0.05))

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        job_dir, args, script = self.render(info, entrypoint_command)
        return {"flavor": self.flavor, "job_name": info.job_name, "sbatch": ["sbatch", "--parsable", *args,
                                                                             os.path.join(job_dir, "job.sh")],
                "script": script, "environment_file": sorted(environment)}
