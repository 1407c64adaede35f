"""A step handed to the `local` step operator: another process, inputs in, outputs out, limits enforced."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from steps_lib import affinity, double, explode, hog_memory, make_numbers, remote_sum

from conveyor import Client, pipeline, step
from conveyor.config import ResourceSettings
from conveyor.exceptions import ResourceUnavailableError, RunFailedError
from testkit import assert_nothing_left


@pipeline
def sum_pipeline(n: int = 5):
    total, _pid = remote_sum(make_numbers(n))
    double(total)


def test_step_runs_in_another_process_and_feeds_the_next_step() -> None:
    run = sum_pipeline(n=5)
    assert run.status == "completed"
    assert list(run.steps) == ["make_numbers", "remote_sum", "double"]
    remote = run.steps["remote_sum"]
    assert remote.config.step_operator == "local"
    assert remote.outputs["total"].load() == 10
    assert remote.outputs["pid"].load() != os.getpid()
    assert run.steps["double"].outputs["output"].load() == 20
    assert remote.submission["flavor"] == "local"
    assert "summing 5 numbers" in remote.logs()
    assert run.steps["make_numbers"].config.step_operator is None


def test_output_streams_to_the_terminal_prefixed_with_the_step(capfd: pytest.CaptureFixture[str]) -> None:
    sum_pipeline(n=3)
    out = capfd.readouterr().out
    assert "[remote_sum] summing 3 numbers" in out


def test_failing_remote_step_fails_the_run_with_the_remote_traceback() -> None:
    @pipeline
    def failing():
        explode(make_numbers(4))

    with pytest.raises(RunFailedError) as info:
        failing()
    text = str(info.value)
    assert "TrainingDiverged: loss became NaN after 4 epochs" in text
    assert "Traceback" in text and "raise TrainingDiverged" in text
    step_run = info.value.run.steps["explode"]
    assert step_run.status == "failed"
    assert "raise TrainingDiverged" in step_run.traceback
    assert info.value.run.status == "failed"


def test_cpu_count_one_gives_a_one_cpu_affinity() -> None:
    @pipeline
    def p():
        affinity()

    run = p()
    cpus = run.steps["affinity"].outputs["cpus"].load()
    assert len(cpus) == 1 and cpus[0] in os.sched_getaffinity(0)
    assert run.steps["affinity"].outputs["omp"].load() == "1"


def test_step_past_its_memory_is_killed_and_reported() -> None:
    @pipeline
    def p():
        hog_memory()

    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["hog_memory"]
    assert step_run.status == "failed"
    assert step_run.failure_kind == "memory"
    assert "killed for memory: raise ResourceSettings(memory=...)" in step_run.error
    assert "200MB" in step_run.error


def _gpus_here() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True)
    return len([ln for ln in out.stdout.splitlines() if ln.strip()])


def test_more_gpus_than_the_machine_has_is_refused_before_anything_runs(tmp_path) -> None:
    marker = tmp_path / "ran"
    wanted = _gpus_here() + 1

    @step(step_operator="local", settings={"resources": ResourceSettings(gpu_count=wanted)})
    def needs_gpu() -> int:
        marker.write_text("ran")
        return 1

    @step
    def before() -> int:
        marker.write_text("ran")
        return 0

    @pipeline
    def p():
        before()
        needs_gpu()

    with pytest.raises(ResourceUnavailableError) as info:
        p()
    assert f"gpu_count={wanted}" in str(info.value)
    assert "GPU" in str(info.value) and "step operator" in str(info.value)
    assert not marker.exists()
    assert Client().list_pipeline_runs() == []


def test_timeout_stops_the_step_and_leaves_no_process() -> None:
    @step(step_operator="local", timeout=1.5)
    def slow() -> int:
        import time

        time.sleep(60)
        return 1

    @pipeline
    def p():
        slow()

    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["slow"]
    assert step_run.failure_kind == "timeout"
    assert "timed out after 1.5s" in step_run.error
    assert step_run.duration.total_seconds() < 10
    assert_nothing_left(step_run)


def test_memory_limit_through_rlimit_when_no_cgroup_is_used(step_operator) -> None:
    step_operator("rlimited", "local", memory_enforcement="rlimit")

    @pipeline
    def p():
        hog_memory.with_options(step_operator="rlimited")()

    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["hog_memory"]
    assert step_run.failure_kind == "memory"
    assert "killed for memory" in step_run.error


def test_a_steps_memory_cgroup_ends_what_left_its_process_tree() -> None:
    """A daemon started with setsid whose parent is gone is out of the step's group and tree, but still in the
    step's memory cgroup: killing the cgroup's members ends it (`cgroup.kill`, or each of `cgroup.procs`)."""
    import time

    from fixtures.engines import require_or_skip

    from conveyor.step_operators.local.limits import make_preexec, memory_limit
    from conveyor.utils.procs import alive, pids_with_marker

    try:
        memory = memory_limit(512 * 1024 * 1024, "cgroup")
    except OSError as err:
        require_or_skip(f"no writable memory cgroup here: {err}")
    marker = f"sleep 98{os.getpid() % 10}.{os.getpid()}"
    proc = subprocess.Popen(["sh", "-c", f"setsid sh -c '{marker}' </dev/null >/dev/null 2>&1 & exec sleep 300"],
                            preexec_fn=make_preexec([], memory), start_new_session=True)
    def settled_daemon() -> int | None:
        """The daemon once it is `sleep` itself: before, the marker is also in the command lines of the shells
        that exec into it (the outer one execs `sleep 300`), and a command line read mid-exec is empty."""
        for pid in pids_with_marker(marker):
            try:
                if open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").strip() == marker.encode():
                    return pid
            except OSError:
                continue
        return None

    try:
        deadline = time.monotonic() + 30
        while (daemon := settled_daemon()) is None:
            assert time.monotonic() < deadline, "the daemon never started"
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        assert alive(daemon), "the daemon outlives its step's process: what this test is about"
        memory.kill_all()
        deadline = time.monotonic() + 30
        while alive(daemon):
            assert time.monotonic() < deadline, "the daemon survived the cgroup kill"
            time.sleep(0.02)
    finally:
        for pid in pids_with_marker(marker):
            os.kill(pid, 9)
        proc.kill()
        memory.remove()
