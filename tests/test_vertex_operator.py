"""The vertex flavor: its request, machine-type choice and refusals (pure), and its lifecycle through the official
SDK clients against the local fake of Vertex AI, Secret Manager and Cloud Logging (tests/fixtures/vertex_fake.py),
whose worker runs each CustomJob's container in Podman. No Google Cloud API is reachable from here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from testkit import wait_until
from kubernetes_steps import make, nap, remote_sum

from conveyor import Client, pipeline
from conveyor.config.resources import ResourceSettings
from conveyor.context import get_context, reset_contexts
from conveyor.exceptions import ConfigError, ResourceUnavailableError, RunFailedError
from conveyor.execution.launcher import build_step_info
from conveyor.step_operators.vertex.machines import choose_machine
from conveyor.step_operators.vertex.operator import state_report
from conveyor.step_operators.vertex.request import SECRET_ENV

PROJECT = "conveyor-test"


# -- machine types (pure) ---------------------------------------------------------------------------
@pytest.mark.parametrize(("resources", "named", "expected"), [
    ({}, {}, ("n1-standard-4", None, 0)),
    ({"cpu_count": 1}, {}, ("n1-highmem-2", None, 0)),
    ({"cpu_count": 2, "memory": "1GiB"}, {}, ("n1-highmem-2", None, 0)),
    ({"cpu_count": 3}, {}, ("n1-standard-4", None, 0)),
    ({"cpu_count": 8, "memory": "64GB"}, {}, ("n2-highmem-8", None, 0)),
    ({"memory": "100GiB"}, {}, ("n1-highmem-16", None, 0)),
    ({"cpu_count": 0.5, "memory": "500MB"}, {}, ("n1-highmem-2", None, 0)),
    ({"gpu_count": 1}, {}, ("n1-highmem-2", "NVIDIA_TESLA_T4", 1)),
    ({"gpu_count": 3}, {}, ("n1-highmem-2", "NVIDIA_TESLA_T4", 4)),  # n1 takes 1, 2 or 4 T4s
    ({"gpu_count": 8}, {}, ("g2-standard-96", "NVIDIA_L4", 8)),
    ({"gpu_count": 16}, {}, ("a2-megagpu-16g", "NVIDIA_TESLA_A100", 16)),
    ({"gpu_count": 1}, {"accelerator_type": "NVIDIA_TESLA_A100"}, ("a2-highgpu-1g", "NVIDIA_TESLA_A100", 1)),
    ({"gpu_count": 2}, {"accelerator_type": "NVIDIA_A100_80GB"}, ("a2-ultragpu-2g", "NVIDIA_A100_80GB", 2)),
    ({"gpu_count": 1}, {"accelerator_type": "NVIDIA_L4"}, ("g2-standard-4", "NVIDIA_L4", 1)),
    ({"gpu_count": 1, "cpu_count": 16}, {}, ("n1-highcpu-16", "NVIDIA_TESLA_T4", 1)),
    ({"gpu_count": 2, "cpu_count": 16}, {"accelerator_type": "NVIDIA_TESLA_V100"},
     ("n1-highcpu-16", "NVIDIA_TESLA_V100", 2)),
    ({}, {"machine_type": "n1-standard-8", "accelerator_count": 2}, ("n1-standard-8", "NVIDIA_TESLA_T4", 2)),
    ({"gpu_count": 1}, {"machine_type": "a2-highgpu-2g"}, ("a2-highgpu-2g", "NVIDIA_TESLA_A100", 2)),
    ({"cpu_count": 4}, {"machine_type": "c2-standard-8"}, ("c2-standard-8", None, 0)),  # not ours to judge
])
def test_the_machine_type_is_the_smallest_that_holds_the_request(resources: dict, named: dict,
                                                                 expected: tuple) -> None:
    choice = choose_machine(ResourceSettings(**resources), **named)
    assert (choice.machine_type, choice.accelerator_type, choice.accelerator_count) == expected


@pytest.mark.parametrize(("resources", "named", "message"), [
    ({"cpu_count": 4096}, {}, "cpu_count=4096"),
    ({"memory": "4TiB"}, {}, "memory=4TiB"),
    ({"gpu_count": 17}, {}, "gpu_count=17"),
    ({"gpu_count": 2}, {"accelerator_type": "NVIDIA_L4", "machine_type": "g2-standard-4"}, "comes with 1"),
    ({"cpu_count": 8}, {"machine_type": "n1-standard-4"}, "it has 4 vCPUs"),
    ({"memory": "32GiB"}, {"machine_type": "n1-standard-4"}, "it has 15 GiB"),
    ({"gpu_count": 1}, {"machine_type": "n2-standard-8"}, "n2 machines take no GPUs"),
    ({"gpu_count": 8}, {"machine_type": "n1-standard-8"}, "at most 4 NVIDIA_TESLA_T4"),
    ({"gpu_count": 1}, {"machine_type": "n1-standard-96"}, "at most 48 vCPUs"),
    ({"gpu_count": 1, "cpu_count": 16}, {"accelerator_type": "NVIDIA_TESLA_V100"}, "gpu_count=1"),  # ≤12 vCPUs
    ({"gpu_count": 1}, {"machine_type": "a2-highgpu-1g", "accelerator_type": "NVIDIA_L4"}, "comes with NVIDIA_TESLA_A100"),
])
def test_a_request_no_machine_type_can_hold_is_refused(resources: dict, named: dict, message: str) -> None:
    with pytest.raises(ResourceUnavailableError, match="not submitted") as info:
        choose_machine(ResourceSettings(**resources), step="train", **named)
    assert message in str(info.value)


# -- JobState -> Conveyor (pure) ----------------------------------------------------------------------
@pytest.mark.parametrize(("state", "code", "message", "spot", "expected"), [
    ("JOB_STATE_QUEUED", 0, "", False, ("queued", None, None)),
    ("JOB_STATE_PENDING", 0, "", False, ("queued", None, None)),
    ("JOB_STATE_RUNNING", 0, "", False, ("running", None, None)),
    ("JOB_STATE_CANCELLING", 0, "", False, ("running", None, None)),
    ("JOB_STATE_SUCCEEDED", 0, "", False, ("completed", None, 0)),
    ("JOB_STATE_CANCELLED", 1, "CANCELED", False, ("cancelled", None, None)),
    ("JOB_STATE_FAILED", 3, "The replica workerpool0-0 exited with a non-zero status of 2. Termination reason: Error.",
     False, ("failed", None, 2)),
    ("JOB_STATE_FAILED", 3, "The replica workerpool0-0 ran out-of-memory and exited with a non-zero status of 137.",
     False, ("failed", "memory", 137)),
    ("JOB_STATE_FAILED", 4, "Job exceeded its maximum running time", False, ("failed", "timeout", None)),
    ("JOB_STATE_FAILED", 14, "The replica workerpool0-0 was preempted", True, ("preempted", None, None)),
    ("JOB_STATE_FAILED", 14, "Internal error: worker unavailable", True, ("preempted", None, None)),
    ("JOB_STATE_FAILED", 14, "Internal error: worker unavailable", False, ("failed", None, None)),
    ("JOB_STATE_FAILED", 8, "Quota exceeded for custom_model_training_nvidia_t4_gpus", False, ("failed", "pending", None)),
    ("JOB_STATE_EXPIRED", 0, "", False, ("failed", "pending", None)),
])
def test_job_states_map_onto_conveyor_states(state: str, code: int, message: str, spot: bool, expected: tuple) -> None:
    report = state_report(state, code, message, job="projects/p/locations/l/customJobs/1", timeout=2, spot=spot)
    assert (report.state, report.kind, report.exit_code) == expected
    if report.kind == "memory":
        assert "killed for memory: raise ResourceSettings(memory=...)" in report.message
    if report.kind == "timeout":
        assert "timed out after 2s" in report.message


# -- config and settings ------------------------------------------------------------------------------
def test_config_and_settings_are_strict(step_operator: Any) -> None:
    from conveyor.step_operators.vertex.flavor import VertexStepOperatorConfig, VertexStepOperatorSettings

    with pytest.raises(ConfigError, match="machine_typ"):
        step_operator("v", "vertex", project=PROJECT, machine_typ="n1-standard-4")
    with pytest.raises(ConfigError, match="accelerator_type"):
        step_operator("v", "vertex", project=PROJECT, accelerator_type="T4")
    with pytest.raises(ConfigError, match="labels"):
        step_operator("v", "vertex", project=PROJECT, labels={"Team": "ML"})
    with pytest.raises(ValueError, match="gs://"):
        VertexStepOperatorConfig(project=PROJECT, staging_bucket="s3://b")
    assert VertexStepOperatorSettings(disk_size_gb=200).boot_disk_size_gb == 200  # the reference docs' name


def test_importing_the_flavor_loads_no_google_sdk() -> None:
    code = ("import sys; import conveyor.step_operators.vertex.flavor, conveyor.step_operators.vertex.request; "
            "import conveyor.step_operators.vertex.machines; "
            "print(sorted(m for m in sys.modules if m.startswith(('google.cloud.', 'google.api_core', 'google.auth', "
            "'grpc', 'proto'))))")  # bare 'google'/'google.cloud' are namespace packages a .pth file loads
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the request (pure) -------------------------------------------------------------------------------
def _operator_and_info(tmp_path: Path, name: str = "vx", settings: dict | None = None, timeout: Any = None,
                       attempt: int = 1, step_run_id: str | None = None) -> tuple[Any, Any]:
    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator=name, settings=settings or {}, timeout=timeout)(seconds=1)

    stack = get_context().load_stack()
    operator = stack.step_operator(name)
    root = stack.artifact_store.artifact_store().root
    sid = step_run_id or os.urandom(8).hex() * 2
    attempt_uri = f"{root}/runs/r1/steps/nap/attempt-{attempt}"
    info = build_step_info(stack, p.compile(), "nap", operator, run_id="r1", run_name="r1", step_run_id=sid,
                           attempt=attempt, attempt_uri=attempt_uri)
    return operator, info


ENVIRONMENT = {"CONVEYOR_RUN_ID": "r1", "CONVEYOR_STEP_RUN_ID": "s1", "CONVEYOR_STEP_NAME": "nap",
               "AWS_SECRET_ACCESS_KEY": "planted-aws-secret", "API_TOKEN": "planted-api-token",
               "CONVEYOR_REDACT_ENV": "API_TOKEN"}


def test_the_request_carries_identifiers_only_and_the_secrets_go_to_secret_manager(step_operator: Any,
                                                                                    tmp_path: Path) -> None:
    from google.cloud import aiplatform_v1

    step_operator("vx", "vertex", project=PROJECT, location="europe-west4", image="registry.example/step:1",
                  network="projects/123/global/networks/ml", staging_bucket="gs://ml-out", labels={"team": "ml"},
                  secret_manager_api_endpoint="secrets.example:443")
    settings = {"resources": {"cpu_count": 4, "memory": "20GiB", "gpu_count": 1},
                "step_operator.vertex": {"use_preemptible": True, "boot_disk_size_gb": 200, "labels": {"cost": "a"},
                                         "service_account": "train@p.iam.gserviceaccount.com"}}
    operator, info = _operator_and_info(tmp_path, settings=settings, timeout="1h")
    command = [sys.executable, "-m", "conveyor.entrypoints.step_operator", "--job", info.job_uri]
    out = operator.dry_run(info, command, dict(ENVIRONMENT))
    text = json.dumps(out)
    assert "planted" not in text
    job = out["custom_job"]
    pool = job["job_spec"]["worker_pool_specs"][0]
    assert pool["machine_spec"] == {"machine_type": "n1-highmem-4", "accelerator_type": "NVIDIA_TESLA_T4",
                                    "accelerator_count": 1}
    assert pool["disk_spec"] == {"boot_disk_type": "pd-ssd", "boot_disk_size_gb": 200}
    assert pool["replica_count"] == 1
    container = pool["container_spec"]
    # the bootstrap reads the secret, then execs the entrypoint (the image's python, never this interpreter's path)
    assert container["command"] == ["python3", "-m", "conveyor.step_operators.vertex.bootstrap"]
    assert container["args"] == ["python3", "-m", "conveyor.entrypoints.step_operator", "--job", info.job_uri]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) == {"CONVEYOR_RUN_ID", "CONVEYOR_STEP_RUN_ID", "CONVEYOR_STEP_NAME", "CONVEYOR_CODE_CACHE",
                        "PYTHONUNBUFFERED", "OMP_NUM_THREADS", SECRET_ENV, "CONVEYOR_VERTEX_SECRET_ENDPOINT"}
    assert env["OMP_NUM_THREADS"] == "4"
    assert env[SECRET_ENV].startswith(f"projects/{PROJECT}/secrets/{info.job_name}-env/versions/")
    assert out["secret"]["payload_keys"] == ["API_TOKEN", "AWS_SECRET_ACCESS_KEY", "CONVEYOR_REDACT_ENV"]
    assert job["job_spec"]["scheduling"] == {"disable_retries": True, "timeout": "3600s", "strategy": "SPOT"}
    assert job["job_spec"]["service_account"] == "train@p.iam.gserviceaccount.com"
    assert job["job_spec"]["network"] == "projects/123/global/networks/ml"
    assert job["job_spec"]["base_output_directory"] == {"output_uri_prefix": f"gs://ml-out/{info.job_name}"}
    assert job["display_name"] == info.job_name
    assert job["labels"]["conveyor-step-run-id"] == info.step_run_id and job["labels"]["conveyor-attempt"] == "1"
    assert job["labels"]["team"] == "ml" and job["labels"]["cost"] == "a" and job["labels"]["managed-by"] == "conveyor"
    assert out["parent"] == f"projects/{PROJECT}/locations/europe-west4"
    # it is a valid CustomJob for the SDK (what submit() sends)
    message = aiplatform_v1.CustomJob.from_json(json.dumps(job))
    assert message.job_spec.scheduling.strategy == aiplatform_v1.Scheduling.Strategy.SPOT
    assert message.job_spec.worker_pool_specs[0].machine_spec.accelerator_type.name == "NVIDIA_TESLA_T4"


def test_a_local_artifact_store_is_refused_before_submission(step_operator: Any) -> None:
    step_operator("vx", "vertex", project=PROJECT, image="registry.example/step:1")

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="vx")(seconds=1)

    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["nap"]
    assert step_run.failure_kind == "resources"
    assert "a Vertex AI job cannot see" in step_run.error and "s3://" in step_run.error


def test_an_impossible_request_and_a_missing_image_are_refused_before_the_run(step_operator: Any) -> None:
    step_operator("vx", "vertex", project=PROJECT)

    @pipeline(enable_cache=False)
    def no_image():
        nap.with_options(step_operator="vx")(seconds=1)

    with pytest.raises(ResourceUnavailableError, match="needs an image"):
        no_image()
    step_operator("vx", "vertex", project=PROJECT, image="registry.example/step:1")

    @pipeline(enable_cache=False)
    def too_big():
        nap.with_options(step_operator="vx", settings={"resources": {"gpu_count": 1},
                                                       "step_operator.vertex": {"machine_type": "n2-standard-8"}})(1)

    with pytest.raises(ResourceUnavailableError, match="n2 machines take no GPUs"):
        too_big()
    assert Client().list_pipeline_runs() == []


# -- lifecycle against the fake ----------------------------------------------------------------------
@pytest.fixture
def vertex(vertex_fake: Any, podman_engine: Any, s3_server: Any, s3_bucket: str, step_operator: Any,
           tmp_path: Path, registry_server: Any) -> Any:
    """The fake, and a stack whose artifact store is S3 on moto and whose operator `vx` talks to the fake."""
    from conveyor.images.build import ensure_image
    from conveyor.images.settings import DockerSettings

    ctx = get_context()
    ctx.ensure_defaults()
    store = ctx.store.create_component("artifact_store", "vx_s3", "s3", {"path": f"s3://{s3_bucket}/conveyor",
                                                                         "endpoint_url": s3_server.endpoint_url})
    ids = [c["id"] for c in ctx.store.get_stack("default")["components"] if c["type"] != "artifact_store"]
    ctx.store.set_stack_components("default", [*ids, store])
    reset_contexts()
    docker = {"parent_image": podman_engine.base_image}
    ensure_image(DockerSettings(**docker), podman_engine.docker_host, extra_requirements=["s3fs"])
    from fixtures.registry import use_container_registry

    use_container_registry(registry_server.host, "vertex")  # pre-flight pushes the image; the fake pulls it
    vertex_fake.shared_paths = [str(tmp_path)]
    vertex_fake.operator_config = dict(
        project=PROJECT, api_endpoint=vertex_fake.url, secret_manager_api_endpoint=vertex_fake.url,
        logging_api_endpoint=vertex_fake.url, docker_host=podman_engine.docker_host, docker_settings=docker,
        poll_interval=0.2, stop_timeout=30, log_lag=0.3)
    step_operator("vx", "vertex", **vertex_fake.operator_config)
    return vertex_fake


def test_submit_poll_logs_and_cancel_through_the_sdk(vertex: Any, tmp_path: Path) -> None:
    operator, info = _operator_and_info(tmp_path)
    sleeper = ["python3", "-c", "import os, time; print('sleeping with', os.environ['API_TOKEN'][:7], flush=True); "
               "time.sleep(300)"]
    submission = operator.submit(info, sleeper, dict(ENVIRONMENT))
    job = vertex.jobs[submission.data["job"]]
    assert submission.backend_id == job.name and submission.data["job_id"] == job.job_id
    # the CustomJob as Vertex received it holds no secret value; the secret's one version holds them all
    received = json.dumps(job.request)
    assert "planted" not in received
    secret = vertex.secrets[submission.data["secret"]]
    assert json.loads(secret.versions[0]) == {k: v for k, v in ENVIRONMENT.items() if not k.startswith(
        ("CONVEYOR_RUN", "CONVEYOR_STEP"))}
    assert secret.body["labels"]["conveyor-step-run-id"] == info.step_run_id and secret.body["ttl"] == "691200s"
    wait_until(lambda: operator.get_status(submission).state == "running", what="the job to run")
    logs = operator.logs(submission, follow=True)
    assert next(logs) == "sleeping with planted\n"  # the bootstrap put the secret into the step's environment
    # read once, by the bootstrap (the fake lives for the session: other tests' reads are there too)
    assert [r for r in vertex.secret_reads if r.startswith(submission.data["secret"] + "/")] == \
        [f"{submission.data['secret']}/versions/1"]
    assert vertex.containers(info.step_run_id) != []
    operator.cancel(submission)
    assert job.state == "JOB_STATE_CANCELLED"
    assert operator.get_status(submission).state == "cancelled"
    assert vertex.containers(info.step_run_id) == []
    assert secret.deleted, "cancel removes the credentials"
    assert list(logs) == []  # the stream ends with the job
    operator.cancel(submission)  # idempotent: Vertex refuses to cancel an ended job (FailedPrecondition)
    operator.cleanup(submission)


def test_a_second_submit_of_the_same_attempt_reattaches_and_a_fresh_operator_follows_the_receipt(
        vertex: Any, tmp_path: Path) -> None:
    from conveyor.step_operators.info import Submission

    operator, info = _operator_and_info(tmp_path)
    command = ["python3", "-c", "import time; print('step output', flush=True); time.sleep(1.5)"]
    first = operator.submit(info, command, dict(ENVIRONMENT))
    before = len(vertex.jobs)
    again = operator.submit(info, command, dict(ENVIRONMENT))  # an orchestrator restarted before storing the receipt
    assert len(vertex.jobs) == before, "the job was created twice"
    assert again.data["job"] == first.data["job"] and again.data["reattached"] is True
    assert again.data["secret"] == first.data["secret"]
    # another process: a new operator built from the store, following the stored receipt only
    reset_contexts()
    fresh = get_context().load_stack().step_operator("vx")
    receipt = Submission.from_json(json.loads(json.dumps(first.to_json())))
    wait_until(lambda: fresh.get_status(receipt).terminal, what="the job to end")
    assert fresh.get_status(receipt).state == "completed"
    assert "".join(fresh.logs(receipt, follow=False)) == "step output\n"
    fresh.cleanup(receipt)
    assert vertex.secrets[first.data["secret"]].deleted


def test_a_job_waiting_for_gpus_stays_queued_until_cancelled(vertex: Any, tmp_path: Path) -> None:
    operator, info = _operator_and_info(tmp_path, settings={"resources": {"gpu_count": 1}})
    submission = operator.submit(info, ["python3", "-c", "pass"], {"CONVEYOR_STEP_NAME": "nap"})
    assert submission.data["secret"] is None  # nothing secret to deliver: no secret, no bootstrap
    container = vertex.jobs[submission.data["job"]].message.job_spec.worker_pool_specs[0].container_spec
    assert list(container.command) == ["python3"] and SECRET_ENV not in {e.name for e in container.env}
    time.sleep(0.5)
    report = operator.get_status(submission)
    assert report.state == "queued" and "pending" in report.message
    assert list(operator.logs(submission, follow=False)) == []
    vertex.logging_denied = True  # no permission to read logs: the stream stops saying why, instead of waiting
    try:
        with pytest.raises(Exception, match="logging.logEntries.list") as denied:
            next(operator.logs(submission, follow=True))
        assert type(denied.value).__name__ == "Forbidden"
    finally:
        vertex.logging_denied = False
    operator.cancel(submission)
    assert operator.get_status(submission).state == "cancelled"


def test_a_preempted_spot_job_is_retried_under_the_infrastructure_budget(vertex: Any, step_operator: Any) -> None:
    step_operator("vx", "vertex", **vertex.operator_config, use_preemptible=True)
    vertex.preempt_next = 1

    @pipeline(enable_cache=False)
    def p():
        remote_sum.with_options(step_operator="vx")(make(4))

    run = p()
    step_run = run.steps["remote_sum"]
    assert step_run.status == "completed" and step_run.attempt == 2
    assert step_run.outputs["output_0"].load() == 6 and step_run.outputs["output_1"].load() == ""
    jobs = [j for j in vertex.jobs.values() if j.message.labels.get("conveyor-step-run-id") == step_run.id]
    assert [j.state for j in jobs] == ["JOB_STATE_FAILED", "JOB_STATE_SUCCEEDED"]
    assert "preempted" in jobs[0].message.error.message
    assert [j.message.labels["conveyor-attempt"] for j in jobs] == ["1", "2"]
    assert "summing 4 values" in step_run.logs()


def test_a_failing_step_reports_the_exit_status_and_a_bad_secret_fails_clearly(vertex: Any, tmp_path: Path) -> None:
    operator, info = _operator_and_info(tmp_path)
    submission = operator.submit(info, ["python3", "-c", "import sys; print('bye'); sys.exit(3)"],
                                 {"CONVEYOR_STEP_NAME": "nap"})
    wait_until(lambda: operator.get_status(submission).terminal, what="the job to end")
    report = operator.get_status(submission)
    assert (report.state, report.exit_code) == ("failed", 3)
    assert "non-zero status of 3" in report.message
    # the bootstrap, when the secret is gone before the step starts: the job fails naming the fix
    operator2, info2 = _operator_and_info(tmp_path, attempt=2, step_run_id=info.step_run_id)
    submission2 = operator2.submit(info2, ["python3", "-c", "print('never')"], dict(ENVIRONMENT))
    vertex.secrets[submission2.data["secret"]].deleted = True
    wait_until(lambda: operator2.get_status(submission2).terminal, what="the job to end")
    assert operator2.get_status(submission2).exit_code == 2
    text = "".join(operator2.logs(submission2, follow=False))
    assert "cannot read the step's secrets from Secret Manager" in text and "never" not in text
    operator2.cleanup(submission2)
