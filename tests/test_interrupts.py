"""Ctrl-C and SIGTERM of the orchestrating process leave nothing running and the run marked stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conveyor import Client
from testkit import assert_nothing_left

from conveyor.utils.procs import alive

SCRIPT = textwrap.dedent('''
    import time
    from conveyor import step, pipeline

    @step(step_operator="local")
    def long_train() -> int:
        print("training started", flush=True)
        time.sleep(120)
        return 1

    @step
    def long_in_process() -> int:
        time.sleep(120)
        return 2

    @pipeline
    def interrupted():
        long_train()
        long_in_process()

    if __name__ == "__main__":
        interrupted()
''')


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_to_orchestrator_cancels_every_step(project: Path, sig: signal.Signals) -> None:
    (project / "interrupted_pipeline.py").write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, "interrupted_pipeline.py"], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "CONVEYOR_QUIET": "1"})
    client = Client()

    def step_running() -> bool:
        runs = client.list_pipeline_runs()
        if not runs:
            return False
        steps = client.get_pipeline_run(runs[0].id).steps
        return steps["long_train"].submission is not None and steps["long_train"].submission["data"].get("pid") is not None

    _wait_for(step_running)
    run = client.list_pipeline_runs()[0]
    pid = client.get_pipeline_run(run.id).steps["long_train"].submission["data"]["pid"]
    assert alive(pid)
    time.sleep(0.5)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    final = client.get_pipeline_run(run.id)
    assert_nothing_left(final.steps["long_train"])
    assert final.status == "stopped"
    assert final.steps["long_train"].status == "stopped"
    assert final.steps["long_in_process"].status == "stopped"
