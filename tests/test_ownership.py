"""One run has one owner, and a job is only ever the job we started.

- A live orchestrator owns its run through a lease (a lock held for the run's life), not a heartbeat's age: one
  suspended with Ctrl-Z past the heartbeat staleness is still the owner, `run resume` from another shell is
  refused naming it, and after it continues every step has run exactly once.
- A pid is always checked with its process's start time: a receipt (or a run's owner) whose pid now belongs to
  an unrelated process is treated as gone, and that process is never signalled by `run stop` or `run resume`.
- Ctrl-C twice in quick succession still ends everything the steps started (children, a child that called
  setsid, a daemonized grandchild), and the run ends `stopped` with no step `running` or `pending`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from testkit import kill_marked, wait_until

from conveyor import Client
from conveyor.utils.procs import alive, boot_id, pids_with_marker


GATED = textwrap.dedent('''
    import sys, time
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

    @step(step_operator="local")
    def side() -> int:
        count("side")
        return 5

    @step(step_operator="local")
    def gated(x: int) -> int:
        count("gated")
        while not Path(GATE).exists():
            time.sleep(0.05)
        return x * 10

    @step
    def last(y: int, z: int) -> int:
        count("last")
        return y + z

    @pipeline(enable_cache=False)
    def owned():
        last(gated(first()), side())

    if __name__ == "__main__":
        owned()
''')


def _start_gated(project: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path, Path, str]:
    gate, counts = tmp_path / "gate", tmp_path / "counts"
    (project / "owned.py").write_text(GATED.format(gate=str(gate), counts=str(counts)))
    proc = subprocess.Popen([sys.executable, "owned.py"], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "CONVEYOR_QUIET": "1"})

    def gated_running() -> bool:
        runs = Client().list_pipeline_runs()
        if not runs or not counts.exists() or "gated" not in counts.read_text():
            return False
        step = Client().get_pipeline_run(runs[0].id).steps["gated"]
        return step.status == "running" and ((step.submission or {}).get("data") or {}).get("pid") is not None

    try:
        wait_until(gated_running, what="the gated step running on `local`")
    except AssertionError:
        proc.kill()
        raise
    return proc, gate, counts, Client().list_pipeline_runs()[0].id


def test_a_suspended_orchestrator_keeps_its_run_and_every_step_runs_once(project, tmp_path, conveyor_cli):
    proc, gate, counts, run_id = _start_gated(project, tmp_path)
    stale = {"CONVEYOR_HEARTBEAT_STALE_S": "1"}  # what 30 s of Ctrl-Z looks like, without waiting 30 s
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        from conveyor.store.store import now

        wait_until(lambda: now() - Client().get_pipeline_run(run_id).heartbeat > timedelta(seconds=1.5),
                   what="the suspended orchestrator's heartbeat going stale")
        resumed = conveyor_cli("run", "resume", run_id, check=False, env=stale)
        assert resumed.returncode == 1, resumed.stdout + resumed.stderr
        assert "is still running" in resumed.stderr and f"pid {proc.pid} on" in resumed.stderr, resumed.stderr
        assert "conveyor run stop" in resumed.stderr
        listed = conveyor_cli("run", "list", env=stale).stdout
        assert "running" in listed and "abandoned" not in listed, listed
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    gate.write_text("go")
    assert proc.wait(timeout=60) == 0
    run = Client().get_pipeline_run(run_id)
    assert run.status == "completed"
    assert sorted(counts.read_text().splitlines()) == ["first", "gated", "last", "side"], "a step ran twice"
    assert run.steps["last"].outputs["output"].load() == 25
    assert all(s.attempt == 1 for s in run.steps.values())
    assert not (project / ".conveyor" / "locks" / f"{run_id}.lock").exists(), "the lease is given back at the end"


def _crashed_run_with_reused_pids(project: Path, tmp_path: Path) -> tuple[str, subprocess.Popen, Path]:
    """A run whose orchestrator and job were SIGKILLed, and whose recorded pids (the run's owner, the job's
    process group) now belong to an unrelated process that leads its own group: what a reused pid looks like."""
    proc, gate, counts, run_id = _start_gated(project, tmp_path)
    receipt = Client().get_pipeline_run(run_id).steps["gated"].submission
    proc.kill()
    proc.wait()
    os.killpg(int(receipt["data"]["pgid"]), signal.SIGKILL)
    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)  # pgid == pid, as a step's own group
    from conveyor.context import get_context
    from conveyor.store.store import now

    store = get_context().store
    forged = {**receipt, "data": {**receipt["data"], "pid": bystander.pid, "pgid": bystander.pid,
                                  "process_start": f"{boot_id()}:1"}}
    store.update_step_run(Client().get_pipeline_run(run_id).steps["gated"].id, submission=forged)
    store.update_run(run_id, pid=bystander.pid, pid_start=f"{boot_id()}:1", heartbeat=now())
    # no lease to ask (as for a run recorded before leases): the pid and its start time have to decide
    (project / ".conveyor" / "locks" / f"{run_id}.lock").unlink()
    gate.write_text("go")
    return run_id, bystander, counts


def test_run_stop_never_signals_a_process_that_reused_a_recorded_pid(project, tmp_path, conveyor_cli):
    run_id, bystander, _ = _crashed_run_with_reused_pids(project, tmp_path)
    try:
        assert "abandoned" in conveyor_cli("run", "list").stdout
        out = conveyor_cli("run", "stop", run_id, "--wait", "5").stdout
        assert "orchestrator was gone" in out, out
        assert alive(bystander.pid), "`conveyor run stop` killed an unrelated process"
        run = Client().get_pipeline_run(run_id)
        assert run.status == "stopped" and run.steps["gated"].status == "stopped"
    finally:
        bystander.kill()
        bystander.wait()


def test_resume_never_follows_or_signals_a_process_that_reused_a_recorded_pid(project, tmp_path, conveyor_cli):
    run_id, bystander, counts = _crashed_run_with_reused_pids(project, tmp_path)
    try:
        out = conveyor_cli("run", "resume", run_id, timeout=90).stdout
        assert alive(bystander.pid), "`conveyor run resume` killed an unrelated process"
        run = Client().get_pipeline_run(run_id)
        assert run.status == "completed", out
        assert run.steps["gated"].attempt == 2, "the job is gone: it runs again, not followed through the pid"
        assert counts.read_text().splitlines().count("gated") == 2
    finally:
        bystander.kill()
        bystander.wait()


SPAWNER = textwrap.dedent('''
    import os, subprocess, sys, time
    from pathlib import Path
    from conveyor import pipeline, step

    MARK, READY = os.environ["OWNERSHIP_MARK"], os.environ["OWNERSHIP_READY"]  # the step process has other argv
    SLEEP = "import time; time.sleep(600)"
    SETSID = "import os, time; os.setsid(); time.sleep(600)"
    DAEMON = "import os, time\\nif os.fork() == 0:\\n    os.setsid(); time.sleep(600)\\nelse:\\n    os._exit(0)"

    @step(step_operator="local")
    def spawner(i: int) -> int:
        for code in (SLEEP, SETSID, DAEMON):  # a child, one that left the group, a daemonized grandchild
            subprocess.Popen([sys.executable, "-c", code, MARK])
        Path(READY, str(i)).touch()
        time.sleep(600)
        return i

    @step
    def after(a: int, b: int) -> int:
        return a + b

    @pipeline(enable_cache=False)
    def spawning():
        after(spawner(1), spawner(2))

    if __name__ == "__main__":
        spawning()
''')


def test_ctrl_c_twice_in_quick_succession_ends_everything_the_steps_started(project, tmp_path):
    (project / "spawning.py").write_text(SPAWNER)
    for trial in range(5):
        marker = f"conveyor-ownership-{uuid.uuid4().hex}"
        ready = tmp_path / f"ready-{trial}"
        ready.mkdir()
        proc = subprocess.Popen([sys.executable, "spawning.py", marker], cwd=project,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "CONVEYOR_QUIET": "1", "OWNERSHIP_MARK": marker,
                                     "OWNERSHIP_READY": str(ready)})
        try:
            # both steps' three descendants (the daemon's parent has exited) and the script itself
            wait_until(lambda: len(list(ready.iterdir())) == 2 and len(pids_with_marker(marker)) >= 7,
                       what=f"trial {trial}: both steps and their children running")
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            assert "already stopping" in err or proc.returncode != 0
            wait_until(lambda: not pids_with_marker(marker), what=f"trial {trial}: every process the steps started ended",
                      timeout=10)
            run = Client().list_pipeline_runs()[0]
            run = Client().get_pipeline_run(run.id)
            assert run.status == "stopped", f"trial {trial}: {run.status}"
            left = {n: s.status for n, s in run.steps.items() if s.status in ("running", "pending")}
            assert not left, f"trial {trial}: the run is stopped but steps still say {left}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            kill_marked(marker)


def test_heartbeat_interval_is_bounded_with_an_error_naming_the_limit(conveyor_cli):
    out = conveyor_cli("orchestrator", "update", "default", "--heartbeat_interval=60", check=False)
    assert out.returncode != 0
    assert "heartbeat_interval" in out.stderr and "at most 10s" in out.stderr, out.stderr
    conveyor_cli("orchestrator", "update", "default", "--heartbeat_interval=10")


def test_the_lease_on_postgresql_is_an_advisory_lock_held_for_the_run(postgres_db_url):
    from conveyor.execution.lease import LeaseHeldError, RunLease, lease_held
    from conveyor.store.store import MetadataStore

    store = MetadataStore(postgres_db_url)
    store.ensure_schema()
    try:
        assert lease_held(store, "run-a") is False
        with RunLease(store, "run-a"):
            assert lease_held(store, "run-a") is True
            assert lease_held(store, "run-b") is False
            with pytest.raises(LeaseHeldError):
                RunLease(store, "run-a").acquire()
        assert lease_held(store, "run-a") is False, "given back when the run ends"
        with RunLease(store, "run-a"):  # and a new owner (a resume) may take it
            assert lease_held(store, "run-a") is True
    finally:
        store.dispose()


def test_the_ssh_job_scripts_take_a_reused_pid_for_a_gone_job(tmp_path):
    """The shell the ssh flavor runs on its host, run here on a job dir whose recorded launcher pid now belongs
    to an unrelated process (another start time)."""
    from conveyor.step_operators.ssh.operator import _cancel_script, _status_script
    from conveyor.utils.procs import start_ticks

    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        (tmp_path / "pid").write_text(str(bystander.pid))
        (tmp_path / "boot").write_text(boot_id())
        (tmp_path / "start").write_text(str(start_ticks(bystander.pid)))
        status = subprocess.run(["sh", "-c", _status_script(str(tmp_path))], capture_output=True, text=True).stdout
        assert "alive=1" in status, "the recorded process itself is alive"
        (tmp_path / "start").write_text(str(start_ticks(bystander.pid) - 1))
        status = subprocess.run(["sh", "-c", _status_script(str(tmp_path))], capture_output=True, text=True).stdout
        assert "alive=0" in status, status
        subprocess.run(["sh", "-c", _cancel_script(str(tmp_path), bystander.pid)], check=True, timeout=30)
        assert alive(bystander.pid), "the ssh cancel signalled a process that reused the job's pid"
    finally:
        bystander.kill()
        bystander.wait()
