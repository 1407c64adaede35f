"""The local step operator: one process group per step, limits enforced, output streamed and stored."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

from conveyor.config.units import format_bytes
from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError
from conveyor.step_operators.base import BaseStepOperator
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission
from conveyor.step_operators.local.flavor import LocalStepOperatorConfig
from conveyor.step_operators.local.limits import CPUS, GPUS, MemoryLimit, make_preexec, memory_limit, rlimit_notice
from conveyor.step_operators.local.spares import SPARES, ForkedWorker
from conveyor.utils.private import private_opener
from conveyor.utils.procs import kill_tree, process_start, same_process
from conveyor.utils.reaper import SUBREAPER_ENV



@dataclass
class _Job:
    info: StepRunInfo
    command: list[str]
    env: dict[str, str]
    log_path: str
    process: "subprocess.Popen[bytes] | ForkedWorker | None" = None  # started cold, or forked ahead (spares.py)
    cpus: list[int] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)
    memory: MemoryLimit | None = None
    start: str | None = None  # procs.process_start of the step process: its pid alone could be reused
    cancelled: bool = False
    released: bool = False


class LocalStepOperator(BaseStepOperator):
    streams_logs: ClassVar[bool] = True
    stores_logs: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    @property
    def config(self) -> LocalStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    # -- checks -----------------------------------------------------------------------------------
    def check_resources(self, info: StepRunInfo) -> None:
        r = info.config.resource_settings
        step = info.pipeline_step_name
        if r.cpu_count is not None and math.ceil(r.cpu_count) > len(CPUS.available):
            raise ResourceUnavailableError(
                f"step {step!r} asks for cpu_count={r.cpu_count:g} but this machine lets Conveyor use "
                f"{len(CPUS.available)} CPU(s): lower cpu_count or use a step operator with bigger machines")
        if r.gpu_count:
            total, reason = GPUS.total()
            if r.gpu_count > total:
                why = f" ({reason})" if reason else ""
                raise ResourceUnavailableError(
                    f"step {step!r} asks for gpu_count={r.gpu_count} but this machine has {total} GPU(s){why}: "
                    "run it on a step operator with GPUs (e.g. `conveyor step-operator register gpu --flavor=slurm`) "
                    "or lower gpu_count")
        if r.memory is not None:
            total_mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            if r.memory_bytes and r.memory_bytes > total_mem:
                raise ResourceUnavailableError(
                    f"step {step!r} asks for memory={r.memory} but this machine has {format_bytes(total_mem)}: "
                    "lower it or use a step operator with bigger machines")

    def _environment(self, info: StepRunInfo, env: dict[str, str], cpus: list[int], gpus: list[int]) -> dict[str, str]:
        """The process environment (never an in-process step's variables, whichever thread asks) and the step's."""
        from conveyor.execution.step_environ import real_environ

        r = info.config.resource_settings
        merged = {**real_environ(), **env, "PYTHONUNBUFFERED": "1"}
        if r.cpu_count is not None:
            threads = str(max(1, math.ceil(r.cpu_count)))
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
                merged[var] = threads
        if r.gpu_count is not None:
            merged["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # nvidia-smi's numbering, which is what we chose from
            merged["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        settings = info.config.operator_settings
        if settings is not None:
            merged.update(getattr(settings, "environment", {}) or {})
        return merged

    # -- full contract ----------------------------------------------------------------------------
    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        from conveyor.execution.logs import process_log_path

        self.check_resources(info)
        command = list(entrypoint_command)
        if self.config.python:
            command[0] = self.config.python
        # the stored log itself on a local store; on a remote one a file here that the launcher stores
        log_path = process_log_path(info.attempt_uri, info.job_name)
        job = _Job(info, command, environment, log_path)
        with self._lock:
            self._jobs[info.job_name] = job
        submission = Submission(flavor=self.flavor, job_name=info.job_name,
                                data={"host": socket.gethostname(), "log_path": log_path, "state": "queued"})
        self._try_start(job, submission)
        return submission

    def _try_start(self, job: _Job, submission: Submission) -> bool:
        r = job.info.config.resource_settings
        if r.gpu_count:
            gpus = GPUS.acquire(r.gpu_count)
            if gpus is None:
                return False
            job.gpus = gpus
        job.cpus = CPUS.acquire(r.cpu_count) if r.cpu_count is not None else []
        try:
            if r.memory_bytes is not None:
                job.memory = memory_limit(r.memory_bytes, self.config.memory_enforcement)
        except OSError:
            self._release(job)
            raise
        notice = rlimit_notice(job.memory, self.config.memory_enforcement)
        if notice:  # said where the user looks when a step with children is killed or not killed for memory
            try:
                with open(job.log_path, "a", encoding="utf-8", opener=private_opener) as log:
                    log.write(notice + "\n")
            except OSError:
                pass
        env = self._environment(job.info, job.env, job.cpus, job.gpus)
        env[SUBREAPER_ENV] = "1"  # the step keeps its daemonized descendants in its tree (utils/reaper.py)
        worker = SPARES.take(job.command) if self.config.warm_start else None
        if worker is not None:
            job.process = worker
            worker.hand_over(job.command, env, job.log_path, job.cpus, job.memory)
        else:
            job.process = self._cold_start(job, env)
        submission.backend_id = str(job.process.pid)
        job.start = process_start(job.process.pid)
        submission.data.update(pid=job.process.pid, pgid=job.process.pid, process_start=job.start, state="running",
                               cpus=job.cpus, gpus=job.gpus,
                               memory=job.memory.mechanism if job.memory else None, warm=worker is not None)
        if self.config.warm_start:
            SPARES.replenish(job.command)
        return True

    def _cold_start(self, job: _Job, env: dict[str, str]) -> "subprocess.Popen[bytes]":
        with open(job.log_path, "ab", opener=private_opener) as log:
            return subprocess.Popen(  # noqa: S603 - our own entrypoint
                job.command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
                # without limits to apply, no preexec: CPython can then vfork, which is much faster
                preexec_fn=make_preexec(job.cpus, job.memory) if job.cpus or job.memory else None)

    def get_status(self, submission: Submission) -> StatusReport:
        job = self._jobs.get(submission.job_name)
        if job is None:
            return self._status_elsewhere(submission)
        if job.process is None:
            if job.cancelled:
                return StatusReport("cancelled")
            if not self._try_start(job, submission):
                return StatusReport("queued", f"waiting for {job.info.config.resource_settings.gpu_count} free GPU(s)")
        assert job.process is not None
        code = job.process.poll()
        if code is None:
            return StatusReport("running")
        self._release(job)
        if job.cancelled:
            return StatusReport("cancelled", exit_code=code)
        if job.memory is not None and (job.memory.oom_killed() or (code in (-9, 137) and job.memory.mechanism == "rlimit")):
            limit = job.info.config.resource_settings.memory
            return StatusReport("failed", f"{MEMORY_ADVICE} (the limit was {limit})", exit_code=137, kind="memory")
        if code == 0:
            return StatusReport("completed", exit_code=0)
        if code < 0:
            return StatusReport("failed", f"the step's process was killed by signal {-code}", exit_code=128 - code)
        return StatusReport("failed", f"the step's process exited with code {code}", exit_code=code)

    def wait_for_change(self, submission: Submission, timeout: float) -> bool:
        """Returns as soon as the step's process exits, so a finished step is noticed at once."""
        job = self._jobs.get(submission.job_name)
        if job is not None and job.process is not None:
            try:
                job.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        else:
            time.sleep(timeout)
        return True

    def _status_elsewhere(self, submission: Submission) -> StatusReport:
        """Another process submitted it (resume, `conveyor run stop`): follow it by pid and start time (a pid
        now held by another process is the step gone, never followed)."""
        pid = submission.data.get("pid")
        if submission.data.get("host") != socket.gethostname() or pid is None:
            return StatusReport("lost", "the job was started on another host or never started")
        if same_process(int(pid), submission.data.get("process_start")):
            return StatusReport("running")
        return StatusReport("completed")

    def cancel(self, submission: Submission) -> None:
        job = self._jobs.get(submission.job_name)
        if job is not None:
            job.cancelled = True
            if job.process is not None:
                kill_tree(job.process.pid, job.start)
                job.process.wait()
            if job.memory is not None:  # what escaped the tree is still in the step's cgroup
                job.memory.kill_all()
            self._release(job)
            return
        pgid = submission.data.get("pgid")
        if pgid and submission.data.get("host") == socket.gethostname():
            # only the process the receipt names: a pid reused by another process is never signalled
            kill_tree(int(pgid), submission.data.get("process_start"))

    def _release(self, job: _Job) -> None:
        with self._lock:
            if job.released:
                return
            job.released = True
        CPUS.release(job.cpus)
        GPUS.release(job.gpus)

    def cleanup(self, submission: Submission) -> None:
        job = self._jobs.pop(submission.job_name, None)
        if job is not None:
            self._release(job)
            if job.memory is not None:
                job.memory.kill_all()  # the step has ended: nothing of it may outlive it (a daemon it started)
                job.memory.remove()

    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        """Tail the step's output file; with `follow`, until the process has ended and the file is drained."""
        from conveyor.utils.tail import tail_file

        path = submission.data.get("log_path")
        if path:
            yield from tail_file(path, follow, lambda: self._finished(submission),
                                 lambda: self.wait_for_change(submission, 0.05))

    def _finished(self, submission: Submission) -> bool:
        job = self._jobs.get(submission.job_name)
        if job is None:
            pid = submission.data.get("pid")
            return pid is None or not same_process(int(pid), submission.data.get("process_start"))
        return job.cancelled or (job.process is not None and job.process.poll() is not None)

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        r = info.config.resource_settings
        out = super().dry_run(info, entrypoint_command, environment)
        out["limits"] = {
            "cpu_affinity": None if r.cpu_count is None else f"{max(1, math.ceil(r.cpu_count))} CPU(s)",
            "memory_bytes": r.memory_bytes,
            "memory_enforcement": self.config.memory_enforcement,
            "gpus": r.gpu_count,
        }
        return out
