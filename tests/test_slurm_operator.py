"""What only the Slurm flavor does, on the real cluster the suite starts (the shared contract is in conformance/)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest
from steps_lib import make_numbers

from conveyor import Client, pipeline, step
from conveyor.config import ResourceSettings
from conveyor.context import get_context
from conveyor.execution.launcher import build_step_info, entrypoint_request
from conveyor.execution.run import dry_run
from conveyor.step_operators.slurm.commands import JobInfo
from conveyor.step_operators.slurm.operator import SlurmStepOperator


@pytest.fixture
def slurm_op(slurm_cluster, step_operator) -> str:
    step_operator("hpc", "slurm", partition=slurm_cluster.partition, poll_interval=0.5, infrastructure_retries=1)
    return "hpc"


@step
def gpu_env() -> dict:
    return {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "job": os.environ.get("SLURM_JOB_ID"),
            "mem": os.environ.get("SLURM_MEM_PER_NODE"), "cpus": os.environ.get("SLURM_CPUS_PER_TASK")}


def test_resource_settings_become_sbatch_options(slurm_op: str) -> None:
    @pipeline(enable_cache=False)
    def p():
        gpu_env.with_options(step_operator=slurm_op, settings={
            "resources": ResourceSettings(cpu_count=2, memory="300MiB", gpu_count=2)})()

    run = p()
    seen = run.steps["gpu_env"].outputs["output"].load()
    assert seen["job"] == run.steps["gpu_env"].submission["data"]["job_id"]
    assert seen["cpus"] == "2" and seen["mem"] == "300"
    assert sorted(seen["cuda"].split(",")) == ["0", "1"]  # Slurm handed out both (fake) GPUs


def test_typed_gres_time_limit_and_settings_in_the_request(slurm_op: str) -> None:
    @pipeline
    def p():
        gpu_env.with_options(step_operator=slurm_op, timeout="90m", settings={
            "resources": {"cpu_count": 1.5, "memory": "2GB", "gpu_count": 1},
            "step_operator.slurm": {"gres": "gpu:a100", "constraint": "fast", "exclusive": True,
                                    "extra_args": ["--nice=5"]}})()

    request = dry_run(p.compile(), "gpu_env")
    args = request["sbatch"]
    for expected in ("--partition=debug", "--cpus-per-task=2", "--mem=1908M", "--gres=gpu:a100:1", "--time=90",
                     "--constraint=fast", "--exclusive", "--nice=5", "--no-requeue"):
        assert expected in args, (expected, args)
    assert request["script"].startswith("#!/bin/bash")


def test_secrets_go_to_a_0600_file_never_into_the_script_or_argv(slurm_op: str, slurm_cluster) -> None:
    @pipeline
    def p():
        gpu_env.with_options(step_operator=slurm_op)()

    snapshot = p.compile()
    stack = get_context().load_stack()
    operator = stack.step_operator(slurm_op)
    attempt = str(slurm_cluster.work_dir / "secret-test")
    info = build_step_info(stack, snapshot, "gpu_env", operator, run_id="r1", run_name="r1", step_run_id="s1" * 8,
                           attempt=1, attempt_uri=attempt)
    command, environment = entrypoint_request(info, stack.artifact_store)
    secret = "s3cr3t-value-81f2"
    submission = operator.submit(info, ["/bin/sleep", "30"], {**environment, "API_TOKEN": secret})
    try:
        env_file = Path(submission.data["env_file"])
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert secret in env_file.read_text()
        script = (Path(submission.data["job_dir"]) / "job.sh").read_text()
        assert secret not in script and str(env_file) in script
        job = slurm_cluster.job(submission.data["job_id"])
        assert secret not in " ".join(job.values())
    finally:
        operator.cancel(submission)
        operator.cleanup(submission)
    assert not env_file.exists()
    assert command[1:3] == ["-m", "conveyor.entrypoints.step_operator"]


def test_a_node_failure_is_retried_as_a_new_attempt(slurm_op: str, slurm_cluster, tmp_path) -> None:
    release = str(tmp_path / "release")

    @step
    def slow_sum(values: list[int], release: str) -> int:
        print("started", flush=True)
        for _ in range(3000):  # runs until the test releases it: no fixed sleep for the test to race
            if os.path.exists(release):
                break
            time.sleep(0.1)
        return sum(values)

    @pipeline(enable_cache=False)
    def p():
        slow_sum.with_options(step_operator=slurm_op)(make_numbers(4), release=release)

    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("run", p()), daemon=True)
    runner.start()
    client = Client()

    def running() -> bool:
        runs = client.list_pipeline_runs()
        return bool(runs) and "started" in client.get_pipeline_run(runs[0].id).steps["slow_sum"].logs()

    deadline = time.monotonic() + 60
    while not running():
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.2)
    node = slurm_cluster.nodename
    slurm_cluster.run("scontrol", "update", f"nodename={node}", "state=down", "reason=conveyor-test")
    try:
        deadline = time.monotonic() + 60
        while client.get_pipeline_run(client.list_pipeline_runs()[0].id).steps["slow_sum"].attempt < 2:
            assert time.monotonic() < deadline, "no second attempt after the node failed"
            time.sleep(0.2)
    finally:
        # the test cluster may already have returned the node to service by itself (ReturnToService)
        slurm_cluster.run("scontrol", "update", f"nodename={node}", "state=resume", check=False)
        Path(release).touch()  # the second attempt may finish
    runner.join(timeout=120)
    step_run = result["run"].steps["slow_sum"]
    assert step_run.status == "completed" and step_run.attempt == 2
    assert step_run.outputs["output"].load() == 6


@pytest.mark.parametrize("state,reason,code,expected_state,kind", [
    ("COMPLETED", "None", "0:0", "completed", None),
    ("FAILED", "NonZeroExitCode", "3:0", "failed", None),
    ("OUT_OF_MEMORY", "OutOfMemory", "0:125", "failed", "memory"),
    ("TIMEOUT", "TimeLimit", "0:0", "failed", "timeout"),
    ("NODE_FAIL", "None", "0:0", "lost", None),
    ("PREEMPTED", "None", "0:0", "preempted", None),
    ("CANCELLED", "None", "0:15", "cancelled", None),
    ("PENDING", "Priority", "0:0", "queued", None),
])
def test_every_final_slurm_state_maps_to_a_clear_status(state, reason, code, expected_state, kind) -> None:
    a, b = code.split(":")
    info = JobInfo(state, reason, int(a), int(b), {"TimeLimit": "00:01:00", "NodeList": "n1"})
    report = SlurmStepOperator._finished("42", info)
    assert report.state == expected_state and report.kind == kind
    if kind == "memory":
        assert "killed for memory: raise ResourceSettings(memory=...)" in report.message
    if kind == "timeout":
        assert "00:01:00" in report.message


@step
def where_is_my_code() -> str:
    import steps_lib

    return steps_lib.__file__


def test_ship_code_runs_the_job_from_the_code_archive(slurm_cluster, step_operator, monkeypatch, tmp_path) -> None:
    step_operator("hpc_archive", "slurm", partition=slurm_cluster.partition, poll_interval=0.5, ship_code=True)
    cache = tmp_path / "node-cache"
    monkeypatch.setenv("CONVEYOR_CODE_CACHE", str(cache))  # sbatch exports our environment to the job

    @pipeline(enable_cache=False)
    def p():
        where_is_my_code.with_options(step_operator="hpc_archive")()

    run = p()
    assert run.steps["where_is_my_code"].outputs["output"].load().startswith(str(cache))


def test_a_job_cancelled_behind_our_back_fails_the_run(slurm_op: str, slurm_cluster) -> None:
    """An admin scancels the job: the step is marked stopped, and the run must not claim it completed."""
    from conveyor.exceptions import RunFailedError

    @step
    def long_job() -> int:
        print("started", flush=True)
        time.sleep(120)
        return 1

    @pipeline(enable_cache=False)
    def p():
        long_job.with_options(step_operator=slurm_op)()

    result: dict = {}

    def run() -> None:
        try:
            p()
        except RunFailedError as err:
            result["error"] = err

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    client = Client()
    deadline = time.monotonic() + 60
    while True:
        runs = client.list_pipeline_runs()
        if runs and "started" in client.get_pipeline_run(runs[0].id).steps["long_job"].logs():
            break
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    job_id = client.get_pipeline_run(runs[0].id).steps["long_job"].submission["data"]["job_id"]
    slurm_cluster.run("scancel", job_id)
    runner.join(timeout=60)
    assert "error" in result, "the pipeline call must raise when a step was cancelled outside Conveyor"
    final = client.get_pipeline_run(runs[0].id)
    assert final.steps["long_job"].status == "stopped"
    assert "cancelled outside Conveyor" in final.steps["long_job"].error
    assert final.status == "failed"


def test_a_preempted_job_is_resubmitted_under_the_infrastructure_budget(slurm_op: str, slurm_cluster,
                                                                         tmp_path) -> None:
    """A higher-priority job takes the whole node: Slurm preempts ours, and Conveyor re-submits it as attempt 2."""
    release = str(tmp_path / "release")

    @step
    def whole_node(values: list[int], release: str) -> int:
        print("started", flush=True)
        for _ in range(3000):  # runs until the test releases it: no fixed sleep for the test to race
            if os.path.exists(release):
                break
            time.sleep(0.1)
        return sum(values)

    @pipeline(enable_cache=False)
    def p():
        whole_node.with_options(step_operator=slurm_op, settings={
            "resources": {"cpu_count": slurm_cluster.cpus}})(make_numbers(5), release=release)

    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("run", p()), daemon=True)
    runner.start()
    client = Client()
    deadline = time.monotonic() + 60
    while True:
        runs = client.list_pipeline_runs()
        if runs and "started" in client.get_pipeline_run(runs[0].id).steps["whole_node"].logs():
            break
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.2)
    urgent = slurm_cluster.submit("sleep 2", f"--partition={slurm_cluster.urgent_partition}",
                                  f"--cpus-per-task={slurm_cluster.cpus}", name="urgent")
    try:
        deadline = time.monotonic() + 120
        while client.get_pipeline_run(client.list_pipeline_runs()[0].id).steps["whole_node"].attempt < 2:
            assert time.monotonic() < deadline, "no second attempt after the job was preempted"
            time.sleep(0.2)
    finally:
        Path(release).touch()  # the second attempt may finish
    runner.join(timeout=120)
    step_run = result["run"].steps["whole_node"]
    assert step_run.status == "completed" and step_run.attempt == 2
    assert step_run.outputs["output"].load() == 10
    assert slurm_cluster.job(urgent)["JobState"] == "COMPLETED"
    store = client.active_stack.artifact_store.artifact_store()
    first = store.read_text(store.join("runs", result["run"].id, "steps", "whole_node", "attempt-1", "slurm-output.log"))
    assert "started" in first and "PREEMPTION" in first, first  # attempt 1 really ran and was preempted
    preempted, rerun = step_run.attempts  # the record tells a preemption from the step's own failure
    assert (preempted.status, preempted.failure_kind, rerun.status) == ("failed", "preempted", "completed")
    assert preempted.backend_job_id != rerun.backend_job_id and preempted.started and preempted.finished


def test_the_slurm_time_limit_is_reported_as_a_timeout(slurm_op: str) -> None:
    """No Conveyor timeout here: Slurm's own --time (1 minute, checked every ~30 s) ends the job."""
    from conveyor.exceptions import RunFailedError

    @step
    def overstays() -> int:
        time.sleep(600)
        return 1

    @pipeline(enable_cache=False)
    def p():
        overstays.with_options(step_operator=slurm_op, settings={"step_operator.slurm": {"time_limit": "1"}})()

    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["overstays"]
    assert step_run.failure_kind == "timeout", step_run.error
    assert "time limit" in step_run.error


def test_a_held_job_records_its_queue_reason_then_runs(slurm_op: str, slurm_cluster) -> None:
    from testkit import wait_until

    @pipeline(enable_cache=False)
    def p():
        gpu_env.with_options(step_operator=slurm_op,
                             settings={"step_operator.slurm": {"extra_args": ["--hold"]}})()  # pending: JobHeldUser

    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("run", p()), daemon=True)
    runner.start()
    client = Client()

    def held_attempt():
        runs = client.list_pipeline_runs()
        attempts = client.get_pipeline_run(runs[0].id).steps["gpu_env"].attempts if runs else ()
        return attempts[0] if attempts and "JobHeldUser" in (attempts[0].queue_reason or "") else None

    wait_until(held_attempt, timeout=120, what="the held job's queue reason in its attempt record")
    waiting = held_attempt()
    assert waiting.status == "running" and waiting.queued and waiting.started is None
    assert waiting.queue_reason == "pending in the Slurm queue (JobHeldUser)"
    slurm_cluster.run("scontrol", "release", waiting.backend_job_id)
    runner.join(timeout=120)
    step_run = result["run"].steps["gpu_env"]
    [attempt] = step_run.attempts
    assert attempt.status == "completed" and attempt.backend_job_id == step_run.submission["data"]["job_id"]
    # the latest reason while it waited: JobHeldUser, or what Slurm said between the release and the start
    assert attempt.queue_reason.startswith("pending in the Slurm queue")
    assert attempt.submitted <= attempt.queued <= attempt.started <= attempt.finished <= attempt.published
    assert attempt.queued_for is not None and attempt.host
