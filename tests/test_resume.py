"""`conveyor run resume`: a run whose orchestrator was SIGKILLed, failed or stopped is finished without redoing work.

The re-attach case (a backend job still running) is in the conformance suite, for every flavor that can show it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from testkit import add_step_operator, assert_nothing_left

from conveyor import Client

SCRIPT = textwrap.dedent('''
    import time
    from pathlib import Path
    from conveyor import pipeline, step

    GATE, COUNTS = {gate!r}, {counts!r}

    def count(name):
        with open(COUNTS, "a") as fh:
            fh.write(name + "\\n")

    @step
    def first() -> int:
        count("first")
        return 2

    @step
    def gated(x: int) -> int:
        count("gated")
        print("gated", flush=True)
        while not Path(GATE).exists():
            time.sleep(0.05)
        if Path(GATE).read_text() == "fail":
            raise RuntimeError("the gate said fail")
        return x * 10

    @step
    def last(y: int) -> int:
        count("last")
        return y + 1

    @pipeline(enable_cache=False)
    def resumable():
        last(gated.with_options(step_operator={operator})(first()))

    if __name__ == "__main__":
        resumable()
''')


def _start(project: Path, tmp_path: Path, operator: str | None) -> tuple[subprocess.Popen, Path, Path]:
    gate, counts = tmp_path / "gate", tmp_path / "counts"
    (project / "resumable.py").write_text(SCRIPT.format(gate=str(gate), counts=str(counts), operator=repr(operator)))
    proc = subprocess.Popen([sys.executable, "resumable.py"], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "CONVEYOR_QUIET": "1"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if counts.exists() and "gated" in counts.read_text():
            runs = Client().list_pipeline_runs()
            if runs and "gated" in Client().get_pipeline_run(runs[0].id).steps["gated"].logs():
                return proc, gate, counts
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the gated step never started")


def _run_id() -> str:
    return Client().list_pipeline_runs()[0].id


def test_an_in_process_step_killed_mid_run_runs_again_and_finished_steps_do_not(project, tmp_path, conveyor_cli):
    proc, gate, counts = _start(project, tmp_path, None)
    proc.kill()
    proc.wait()
    gate.write_text("go")
    conveyor_cli("run", "resume", _run_id())
    run = Client().get_pipeline_run(_run_id())
    assert run.status == "completed"
    assert counts.read_text().splitlines() == ["first", "gated", "gated", "last"]
    assert run.steps["gated"].attempt == 2, "the new attempt gets its own number (and directory)"
    assert run.steps["last"].outputs["output"].load() == 21


def test_a_local_job_that_vanished_with_its_orchestrator_is_submitted_again(project, tmp_path, conveyor_cli):
    add_step_operator("loc", "local")
    proc, gate, counts = _start(project, tmp_path, "loc")
    receipt = Client().get_pipeline_run(_run_id()).steps["gated"].submission
    proc.kill()
    proc.wait()
    os.killpg(int(receipt["data"]["pgid"]), signal.SIGKILL)  # the job dies too, before anyone follows it
    gate.write_text("go")
    out = conveyor_cli("run", "resume", _run_id()).stdout
    run = Client().get_pipeline_run(_run_id())
    assert run.status == "completed", out
    assert counts.read_text().splitlines() == ["first", "gated", "gated", "last"]
    assert run.steps["gated"].attempt == 2 and run.steps["gated"].submission["job_name"].endswith("-2")
    assert_nothing_left(run.steps["gated"])


def test_a_failed_run_resumes_from_its_failed_step(project, tmp_path, conveyor_cli):
    proc, gate, counts = _start(project, tmp_path, None)
    gate.write_text("fail")
    assert proc.wait(timeout=60) != 0
    failed = Client().get_pipeline_run(_run_id())
    assert failed.status == "failed" and failed.steps["last"].status == "skipped"
    gate.write_text("go")
    conveyor_cli("run", "resume", failed.name)
    run = Client().get_pipeline_run(failed.id)
    assert run.status == "completed"
    assert run.steps["gated"].error is None and run.steps["gated"].outputs["output"].load() == 20
    assert run.steps["gated"].inputs["x"].load() == 2, "the failed attempt's links gave way to the new ones"
    assert counts.read_text().splitlines() == ["first", "gated", "gated", "last"]


def test_resume_refuses_a_run_that_is_still_running_or_already_completed(project, tmp_path, conveyor_cli):
    proc, gate, counts = _start(project, tmp_path, None)
    try:
        live = conveyor_cli("run", "resume", _run_id(), check=False)
        assert live.returncode == 1
        assert "is still running" in live.stderr and "conveyor run stop" in live.stderr
    finally:
        gate.write_text("go")
        proc.wait(timeout=60)
    done = conveyor_cli("run", "resume", _run_id(), check=False)
    assert done.returncode == 1 and "already completed: there is nothing to resume" in done.stderr
    missing = conveyor_cli("run", "resume", "no-such-run", check=False)
    assert missing.returncode == 1 and "conveyor run list" in missing.stderr
