"""Injects the failure a config or step settings ask for, on top of the local step operator."""

from __future__ import annotations

import sys
import time
from typing import Any

from conveyor.artifacts.layout import AttemptLayout
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission
from conveyor.step_operators.local.operator import LocalStepOperator
from conveyor.utils.procs import kill_tree


class FaultInjected(RuntimeError):
    pass


def _spoil(uri: str, how: str) -> None:
    """Cut a JSON file in half, give it a version no Conveyor reads, make it bytes that are not UTF-8, or move it
    away (as something else writing to the store might)."""
    import json

    from conveyor.artifacts.store import ArtifactStore

    store = ArtifactStore(uri.rsplit("/", 1)[0])
    if how == "binary":
        store.write_bytes(uri, b"\xff\xfe\x00not json" + bytes(range(128, 256)))
        return
    if how == "moved":
        store.write_bytes(f"{uri}.moved", store.read_bytes(uri))
        store.rm(uri)
        return
    text = store.read_text(uri)
    if how == "truncated":
        store.write_text(uri, text[: len(text) // 2])
    else:
        store.write_text(uri, json.dumps({**json.loads(text), "version": 99}))


class FaultStepOperator(LocalStepOperator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._faults: dict[str, tuple[str, float, int]] = {}
        self._started: dict[str, float] = {}
        self._struck: dict[str, str] = {}
        self._spoiled: set[str] = set()

    def _fault(self, info: StepRunInfo) -> tuple[str, float, int]:
        cfg = self.config
        s = info.config.operator_settings
        mode = getattr(s, "fault", None) or cfg.fault  # type: ignore[attr-defined]
        after = getattr(s, "fault_after", None)
        code = getattr(s, "exit_code", None)
        attempts = getattr(s, "fault_attempts", None) or cfg.fault_attempts  # type: ignore[attr-defined]
        if attempts is not None and info.attempt > attempts:
            mode = "none"
        return (mode, cfg.fault_after if after is None else after,  # type: ignore[attr-defined]
                cfg.exit_code if code is None else code)  # type: ignore[attr-defined]

    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        mode, after, code = self._fault(info)
        if mode == "submit":
            raise FaultInjected("fault injected: the backend refused the submission")
        command = list(entrypoint_command)
        if mode == "exit_code":
            command = [sys.executable, "-c", f"import sys; print('fault injected: exiting with {code}'); sys.exit({code})"]
        elif mode in ("mid_run", "lose", "preempt"):
            # hold the step back so the fault always strikes while it is still running
            hold = "import os, sys, time; time.sleep(float(sys.argv[1])); os.execv(sys.argv[2], sys.argv[2:])"
            command = [sys.executable, "-c", hold, str(after + 30), *command]
        elif mode == "hang":
            command = [sys.executable, "-c", "import time\nprint('fault injected: hanging', flush=True)\nwhile True: time.sleep(1)"]
        self._faults[info.job_name] = (mode, after, code)
        if mode.endswith("_job_spec"):
            _spoil(info.job_uri, mode.split("_")[0])
        if mode == "stuck_pending":
            return Submission(flavor=self.flavor, job_name=info.job_name, data={"state": "queued", "fault": mode})
        submission = super().submit(info, command, environment)
        submission.data["fault"] = mode
        submission.data["result_uri"] = AttemptLayout.of(info).result
        self._started[info.job_name] = time.monotonic()
        return submission

    def get_status(self, submission: Submission) -> StatusReport:
        name = submission.job_name
        mode, after, _ = self._faults.get(name, ("none", 0.0, 0))
        if name in self._struck:
            return StatusReport(self._struck[name], f"fault injected: job {self._struck[name]}")  # type: ignore[arg-type]
        if mode == "stuck_pending":
            return StatusReport("queued", "fault injected: PartitionConfig (the job can never be scheduled)")
        if mode in ("mid_run", "lose", "preempt") and time.monotonic() - self._started.get(name, 0) >= after:
            pid = submission.data.get("pgid")
            if pid:
                kill_tree(int(pid), submission.data.get("process_start"), grace=0.2)
            self._struck[name] = {"mid_run": "failed", "lose": "lost", "preempt": "preempted"}[mode]
            return self.get_status(submission)
        report = super().get_status(submission)
        if mode.endswith("_result") and report.terminal and name not in self._spoiled:
            self._spoiled.add(name)
            _spoil(submission.data["result_uri"], mode.split("_")[0])
        return report

    def cancel(self, submission: Submission) -> None:
        if self._faults.get(submission.job_name, ("none",))[0] == "stuck_pending":
            self._struck[submission.job_name] = "cancelled"
            return
        super().cancel(submission)

    def cleanup(self, submission: Submission) -> None:
        self._faults.pop(submission.job_name, None)
        self._started.pop(submission.job_name, None)
        self._struck.pop(submission.job_name, None)
        self._spoiled.discard(submission.job_name)
        super().cleanup(submission)
