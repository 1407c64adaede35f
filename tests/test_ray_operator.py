"""What only the Ray flavor does, on the real Ray head the suite starts (the shared contract is in conformance/)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conveyor import Client, pipeline, step
from conveyor.config import ResourceSettings
from conveyor.context import get_context
from conveyor.exceptions import ResourceUnavailableError
from conveyor.execution.launcher import build_step_info, entrypoint_request


@pytest.fixture
def ray_op(ray_cluster, step_operator) -> str:
    step_operator("rayc", "ray", address=ray_cluster.address, poll_interval=0.2)
    return "rayc"


@step
def ray_env() -> dict:
    return {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "omp": os.environ.get("OMP_NUM_THREADS"),
            "submission_id": os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", ""),
            "run": os.environ.get("CONVEYOR_RUN_ID")}


@step
def fan_out(n: int) -> dict:
    from conveyor.step_operators.ray import connect

    ray = connect()

    @ray.remote(num_cpus=1)
    def square(x: int) -> tuple[int, int]:
        return x * x, os.getpid()

    results = ray.get([square.remote(i) for i in range(n)])
    return {"squares": [r[0] for r in results], "pids": sorted({r[1] for r in results}),
            "cluster_cpus": ray.cluster_resources().get("CPU"), "driver_pid": os.getpid()}


def test_resource_settings_become_entrypoint_resources_and_one_gpu_is_granted(ray_op: str, ray_cluster) -> None:
    @pipeline(enable_cache=False)
    def p():
        ray_env.with_options(step_operator=ray_op, settings={
            "resources": ResourceSettings(cpu_count=1, gpu_count=1, memory="100MB")})()

    run = p()
    step_run = run.steps["ray_env"]
    seen = step_run.outputs["output"].load()
    sid = step_run.submission["data"]["submission_id"]
    assert sid in seen["submission_id"]  # the step really ran as that Ray job
    assert seen["cuda"] == "0" and seen["omp"] == "1"  # Ray's accounting gave the entrypoint its one GPU
    reserved = ray_cluster.supervisor_resources(sid)
    assert reserved == {"CPU": 1.0, "GPU": 1.0, "memory": 100e6}, reserved
    assert seen["run"] == run.id  # the environment arrived through runtime_env env_vars...
    job = ray_cluster.wait_job(sid)
    assert "CONVEYOR_RUN_ID" in job["runtime_env"]["env_vars"]
    assert "CONVEYOR_RUN_ID" not in job["entrypoint"]  # ...never through the command line


def test_more_gpus_than_any_node_has_is_refused_before_submission(ray_op: str, ray_cluster) -> None:
    before = {j["submission_id"] for j in ray_cluster.jobs()}

    @pipeline(enable_cache=False)
    def p():
        ray_env.with_options(step_operator=ray_op, settings={"resources": {"gpu_count": 2}})()

    with pytest.raises(ResourceUnavailableError, match=r"gpu_count=2 \(largest node: 1 GPUs\)"):
        p()

    @pipeline(enable_cache=False)
    def q():
        ray_env.with_options(step_operator=ray_op, settings={"step_operator.ray": {"accelerator_type": "H100"}})()

    with pytest.raises(ResourceUnavailableError, match="accelerator_type='H100'"):
        q()
    assert Client().list_pipeline_runs() == []
    assert {j["submission_id"] for j in ray_cluster.jobs()} == before  # nothing reached Ray


def test_submission_ids_are_deterministic_and_a_second_submit_reattaches(ray_op: str, ray_cluster, project) -> None:
    @pipeline
    def p():
        ray_env.with_options(step_operator=ray_op)()

    snapshot = p.compile()
    stack = get_context().load_stack()
    operator = stack.step_operator(ray_op)
    step_run_id = uuid.uuid4().hex
    attempt = str(project / "attempt")
    info = build_step_info(stack, snapshot, "ray_env", operator, run_id="r1", run_name="r1", step_run_id=step_run_id,
                           attempt=2, attempt_uri=attempt)
    _, environment = entrypoint_request(info, stack.artifact_store)
    command = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    first = operator.submit(info, command, environment)
    assert first.backend_id == f"conveyor-{step_run_id[:16]}-2" == info.job_name
    assert first.data["reattached"] is False
    # an orchestrator restarted mid-step submits the same attempt again: it follows the job instead
    again = stack.step_operator(ray_op).submit(info, command, environment)
    assert again.backend_id == first.backend_id and again.data["reattached"] is True
    assert len([j for j in ray_cluster.jobs() if j["submission_id"] == first.backend_id]) == 1
    deadline = time.monotonic() + 30
    while "started" not in "".join(operator.logs(first)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert operator.get_status(first).state == "running"
    get_context().load_stack().step_operator(ray_op).cancel(again)  # a fresh instance, as `conveyor run stop` does
    report = operator.get_status(first)
    assert report.state == "cancelled", report
    operator.cancel(first)  # idempotent after the end
    assert "started" in "".join(operator.logs(first, follow=True))  # following an ended job ends


def test_a_job_cancelled_while_pending_never_runs_the_step(ray_op: str, ray_cluster, project) -> None:
    client = ray_cluster.client()
    holder = client.submit_job(entrypoint="sleep 30", entrypoint_num_gpus=1)  # holds the cluster's only GPU
    try:
        ray_cluster.wait_job_status(holder, "RUNNING")

        @pipeline
        def p():
            ray_env.with_options(step_operator=ray_op, settings={"resources": {"gpu_count": 1}})()

        stack = get_context().load_stack()
        operator = stack.step_operator(ray_op)
        info = build_step_info(stack, p.compile(), "ray_env", operator, run_id="r2", run_name="r2",
                               step_run_id=uuid.uuid4().hex, attempt=1, attempt_uri=str(project / "pending"))
        _, environment = entrypoint_request(info, stack.artifact_store)
        ran = project / "step-ran"
        command = [sys.executable, "-c", f"open({str(ran)!r}, 'w').write('ran')"]
        submission = operator.submit(info, command, environment)
        time.sleep(1.0)
        assert operator.get_status(submission).state == "queued"
        # Ray cannot stop a pending job: its stop waits for the job's supervisor to be placed. Free the GPU at once,
        # as another job ending would: the entrypoint then starts, and only the guard keeps the step from running.
        fresh = get_context().load_stack().step_operator(ray_op)  # as `conveyor run stop` would
        canceller = threading.Thread(target=fresh.cancel, args=(submission,))
        canceller.start()
    finally:
        client.stop_job(holder)
    canceller.join(timeout=60)
    job = ray_cluster.wait_job(submission.backend_id)
    time.sleep(0.5)
    report = operator.get_status(submission)
    assert not ran.exists(), f"the step ran after it was cancelled: {report}"
    assert report.state in ("cancelled", "failed"), (report, job)
    if report.state == "failed":
        assert "cancelled before Ray could start it" in client.get_job_logs(submission.backend_id)


def test_a_step_fans_work_out_over_the_cluster_with_connect(ray_op: str) -> None:
    @pipeline(enable_cache=False)
    def p():
        fan_out.with_options(step_operator=ray_op)(n=4)

    run = p()
    out = run.steps["fan_out"].outputs["output"].load()
    assert out["squares"] == [0, 1, 4, 9]
    assert out["cluster_cpus"] == 2.0
    assert out["driver_pid"] not in out["pids"]  # the tasks ran in Ray workers, not in the step's process


def test_importing_conveyor_and_the_flavor_does_not_import_ray() -> None:
    code = ("import sys, conveyor, conveyor.step_operators.ray, conveyor.step_operators.ray.flavor\n"
            "from conveyor.stack.registry import BUILTIN_FLAVORS\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_guard_runs_the_command_unless_the_cancel_marker_exists(tmp_path) -> None:
    marker, ran = tmp_path / "ray-cancelled", tmp_path / "ran"
    guard = [sys.executable, "-m", "conveyor.step_operators.ray.guard", str(marker), "--",
             sys.executable, "-c", f"open({str(ran)!r}, 'w').write('ran')"]
    assert subprocess.run(guard, timeout=60).returncode == 0 and ran.exists()
    ran.unlink()
    marker.write_text("cancelled\n")
    out = subprocess.run(guard, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and not ran.exists()
    assert "cancelled before Ray could start it" in out.stdout
