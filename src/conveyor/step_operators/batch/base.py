"""The middle floor of the batch-scheduler flavors (Slurm; LSF, PBS or HTCondor would stand here too).

A batch scheduler takes a job script, queues it, runs it on some node with its output in a file the orchestrating
machine can read (a shared directory), and answers questions about it through commands. Everything a step needs
around that is the same whatever the scheduler: the job folder, the script that sources a 0600 environment file,
one queue query per poll interval for all the jobs (`JobPoller`), the controller's and then the accounting's memory
of a finished job, the state table that turns all this into a `StatusReport`, cancelling and waiting for the job to
leave the queue, and tailing the output file. A scheduler flavor supplies its commands (`make_commands`), its
`states`, its submission options (`submit_arguments`, or `script_header` directives) and, to refuse requests
too big for any node, `queue_nodes`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from conveyor.artifacts.layout import AttemptLayout
from conveyor.exceptions import ResourceUnavailableError
from conveyor.step_operators.base import BaseStepOperator
from conveyor.step_operators.batch.commands import AccountingUnavailable, SchedulerCommands
from conveyor.step_operators.batch.poller import JobPoller
from conveyor.step_operators.batch.script import batch_script, env_file_text
from conveyor.step_operators.batch.states import JobInfo, StateTable
from conveyor.step_operators.info import JobState, StatusReport, StepRunInfo, Submission

if TYPE_CHECKING:
    from conveyor.step_operators.batch.config import BatchSchedulerStepOperatorConfig

__all__ = ["BatchSchedulerStepOperator", "NodeSize"]


@dataclass(frozen=True)
class NodeSize:
    """What one node of a queue offers, for refusing a request no node can satisfy before it waits forever."""

    cpus: int
    memory_mb: int
    gpus: int


class BatchSchedulerStepOperator(BaseStepOperator):
    """A step as one batch job. Subclasses set `states` and implement `make_commands` (and usually
    `submit_arguments` and `queue_nodes`); the full step-operator contract is written here."""

    streams_logs: ClassVar[bool] = True
    #: the scheduler's states and messages
    states: ClassVar[StateTable]
    #: the file the job writes its output to, in its job folder
    output_file: ClassVar[str] = "output.log"
    #: what the scheduler calls a queue (Slurm: partition), and where to see its nodes: in resource errors
    queue_word: ClassVar[str] = "queue"
    nodes_hint: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = self.make_commands()
        self._poller = JobPoller(self.commands.query, lambda: self.poll_interval)
        self._accounting = True  # until the cluster says it keeps none
        self._done: set[str] = set()  # jobs seen leaving the queue: their log tailers stop without asking again

    @property
    def config(self) -> BatchSchedulerStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    @property
    def needs_code_archive(self) -> bool:  # type: ignore[override]
        return self.config.ship_code

    # -- what a scheduler flavor supplies ---------------------------------------------------------
    def make_commands(self) -> SchedulerCommands:
        """The scheduler's command-line client, built from this operator's config."""
        raise NotImplementedError

    def submit_arguments(self, info: StepRunInfo, output: str) -> list[str]:
        """Options for the submit command: job name, output file, resources, time limit, queue."""
        return []

    def script_header(self, info: StepRunInfo, output: str) -> list[str]:
        """Directive lines for the top of the job script, for schedulers that read options from there."""
        return []

    def queue_nodes(self, info: StepRunInfo) -> tuple[str, list[NodeSize]] | None:
        """(queue name, its nodes) the step would run on; None when the scheduler cannot tell (no check)."""
        return None

    @classmethod
    def killed_for_memory(cls, info: JobInfo, output: str | None) -> bool:
        """Whether a finished job was killed at its memory limit; a flavor may also read the job's output."""
        return info.state in cls.states.memory_states or "memory" in info.reason.lower()

    # -- the job folder and script ----------------------------------------------------------------
    def _job_dir(self, info: StepRunInfo) -> str:
        if self.config.working_dir:
            return AttemptLayout.of(info).under(self.config.working_dir)
        if "://" in info.attempt_uri:
            raise ResourceUnavailableError(
                f"the {self.flavor} step operator needs a directory shared with the cluster for its job files: set "
                "working_dir (conveyor step-operator update NAME --working_dir=/shared/path)")
        return info.attempt_uri

    def _command(self, command: list[str]) -> list[str]:
        command = list(command)
        command[0] = self.config.python or sys.executable
        return command

    def render(self, info: StepRunInfo, entrypoint_command: list[str]) -> tuple[str, list[str], str]:
        """(job folder, submit options, job script) of one attempt."""
        job_dir = self._job_dir(info)
        output = os.path.join(job_dir, self.output_file)
        script = batch_script(self._command(entrypoint_command), os.path.join(job_dir, "env.sh"), os.getcwd(),
                              self.script_header(info, output))
        return job_dir, self.submit_arguments(info, output), script

    # -- checks -----------------------------------------------------------------------------------
    def check_resources(self, info: StepRunInfo) -> None:
        r = info.config.resource_settings
        if r.empty or (found := self.queue_nodes(info)) is None:
            return
        queue, nodes = found
        step, where = info.pipeline_step_name, f"{self.states.scheduler} {self.queue_word} {queue!r}"
        if not nodes:
            raise ResourceUnavailableError(f"step {step!r}: {where} has no nodes{self.nodes_hint}")
        cpus, memory, gpus = (max(n.cpus for n in nodes), max(n.memory_mb for n in nodes), max(n.gpus for n in nodes))
        wants = []
        if r.cpu_count is not None and math.ceil(r.cpu_count) > cpus:
            wants.append(f"cpu_count={r.cpu_count:g} (largest node: {cpus} CPUs)")
        if r.memory_bytes is not None and math.ceil(r.memory_bytes / 2**20) > memory:
            wants.append(f"memory={r.memory} (largest node: {memory} MB)")
        if r.gpu_count and r.gpu_count > gpus:
            wants.append(f"gpu_count={r.gpu_count} (largest node: {gpus} GPUs)")
        if wants:
            raise ResourceUnavailableError(
                f"step {step!r} asks for {', '.join(wants)}, more than any node of {where} has: lower the request or "
                f"pick another {self.queue_word} (settings={{'step_operator.{self.flavor}': {{'{self.queue_word}': ...}}}})")

    # -- full contract ----------------------------------------------------------------------------
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
        job_id = self.commands.submit(script_path, args)
        return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=job_id,
                          data={"job_id": job_id, "job_dir": job_dir, "output": os.path.join(job_dir, self.output_file),
                                "env_file": env_path})

    def get_status(self, submission: Submission) -> StatusReport:
        job_id = submission.data["job_id"]
        table = self.states
        entry = self._poller.state(job_id)
        if entry is not None and table.active(entry.state):
            if entry.state in table.running:
                return StatusReport(JobState.RUNNING)
            if entry.reason in table.never_clear:
                self.cancel(submission)
                return table.render(table.never_starts, job_id, JobInfo(entry.state, entry.reason, None, None))
            return table.queued_report(entry.reason)
        info = self._remembered(job_id)
        if info is not None and table.active(info.state):
            self._poller.forget(job_id)  # the queue did not list it (its command failed): ask about it again
        else:
            self._done.add(job_id)  # lets the log tailer stop without asking the scheduler again
        if info is None:
            return StatusReport(JobState.LOST, f"{table.scheduler} no longer knows job {job_id}")
        return self._finished(job_id, info, submission.data.get("output"))

    def _remembered(self, job_id: str) -> JobInfo | None:
        """A job the queue no longer lists: from the controller while it remembers it (Slurm: MinJobAge), else
        from the accounting, unless the cluster keeps none."""
        info = self.commands.job(job_id)
        if info is None and self._accounting:
            try:
                info = self.commands.accounting(job_id)
            except AccountingUnavailable:
                self._accounting = False
        return info

    @classmethod
    def _finished(cls, job_id: str, info: JobInfo, output: str | None = None) -> StatusReport:
        finished = not cls.states.active(info.state) and info.state not in cls.states.completed
        return cls.states.report(job_id, info, finished and cls.killed_for_memory(info, output))

    def cancel(self, submission: Submission) -> None:
        """Cancel, then wait (at most 30 s) until the queue no longer lists the job as waiting or running, so that
        the status asked right after is the final one."""
        job_id = submission.data.get("job_id")
        if job_id:
            self.commands.cancel(job_id)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                entry = self._poller.state(job_id, fresh=True)
                if entry is None or not self.states.active(entry.state):
                    break
                time.sleep(0.2)

    def cleanup(self, submission: Submission) -> None:
        job_id = submission.data.get("job_id")
        if job_id:
            self._poller.forget(job_id)
            self._done.discard(job_id)
        env_file = submission.data.get("env_file")
        if env_file:
            try:
                os.remove(env_file)
            except OSError:
                pass

    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        from conveyor.utils.tail import tail_file

        job_id = submission.data["job_id"]

        def finished() -> bool:
            """The status poll usually knows first; else the shared queue answer (e.g. another process)."""
            if job_id in self._done:
                return True
            entry = self._poller.state(job_id)
            return entry is None or not self.states.active(entry.state)

        yield from tail_file(submission.data["output"], follow, finished, lambda: time.sleep(0.05))

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        job_dir, args, script = self.render(info, entrypoint_command)
        command = self.commands.submit_command(os.path.join(job_dir, "job.sh"), args)
        return {"flavor": self.flavor, "job_name": info.job_name, command[0]: command, "script": script,
                "environment_file": sorted(environment)}


BatchSchedulerStepOperator._abstract = True  # type: ignore[attr-defined]
