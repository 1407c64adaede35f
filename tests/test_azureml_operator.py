"""What only the Azure ML flavor does (the golden job definition is in conformance/).

No Azure is reachable from here. The job definitions are built with the real `azure-ai-ml` SDK (its `command()`
builder and entities, serialised by the SDK itself). The lifecycle runs through the real SDK clients (`MLClient`,
Key Vault's `SecretClient`, `DefaultAzureCredential`) against the local HTTPS fake of the REST endpoints
(tests/fixtures/azureml_fake.py), whose runner runs each command job's container in Podman. Only the platform's
out-of-memory and timeout kills are still scripted at the SDK's client boundary (tests/cloud_fakes.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from testkit import wait_until
from cloud_fakes import FakeAzureML, FakeVault, Script
from cloud_steps import make, nap, remote_sum, uses_secret

from conveyor import pipeline, step
from conveyor.context import get_context, reset_contexts
from conveyor.exceptions import ResourceUnavailableError, RunFailedError
from conveyor.execution.launcher import build_step_info, entrypoint_request
from conveyor.execution.run import dry_run
from conveyor.step_operators.azureml.sizes import VM_SIZES, choose_vm_size
from conveyor.step_operators.info import Submission

IMAGE = "conveyor.azurecr.io/steps:1"
WORKSPACE = {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "ml",
             "workspace_name": "ws"}
VAULT = "https://conveyor-kv.vault.azure.net"


@step
def train(n: int = 1) -> int:
    return n


@pytest.fixture
def azure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzureML]:
    from conveyor.step_operators.azureml.operator import AzureMLStepOperator

    vault = FakeVault(tmp_path / "vault")
    fake = FakeAzureML(tmp_path / "azure-jobs", vault, computes={"cpu-cluster": "Standard_DS3_v2",
                                                                  "odd-cluster": "Standard_Custom_Z9"})
    monkeypatch.setattr(AzureMLStepOperator, "client_factory", fake.factory)
    monkeypatch.setattr(AzureMLStepOperator, "vault_factory", lambda url: vault)
    yield fake
    fake.close()


def _operator(**config: Any) -> None:
    from testkit import add_step_operator

    add_step_operator("aml", "azureml", **{**WORKSPACE, "image": IMAGE, "poll_interval": 0.05, **config})


def _render(settings: dict[str, Any] | None = None, timeout: Any = None, extra_env: dict[str, str] | None = None,
            **config: Any) -> dict[str, Any]:
    """The job definition dry_run / submit would send for one step (nothing contacted)."""
    _operator(**config)
    options: dict[str, Any] = {"step_operator": "aml", "settings": settings or {}}
    if timeout is not None:
        options["timeout"] = timeout

    @pipeline(enable_cache=False)
    def p():
        train.with_options(**options)()

    snapshot = p.compile()
    if not extra_env:
        return dry_run(snapshot, "train")
    stack = get_context().load_stack()
    operator = stack.step_operator("aml")
    info = build_step_info(stack, snapshot, "train", operator, run_id="r" * 32, run_name="run-1",
                           step_run_id="0123456789abcdef" * 2, attempt=3,
                           attempt_uri="s3://bucket/runs/x/steps/train/attempt-3")
    command, environment = entrypoint_request(info, stack.artifact_store)
    return operator.dry_run(info, command, {**environment, **extra_env})


# -- the request ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("resources", "size"), [
    ({}, "Standard_DS2_v2"),
    ({"cpu_count": 2, "memory": "7GiB"}, "Standard_DS2_v2"),
    ({"cpu_count": 2, "memory": "8GiB"}, "Standard_DS3_v2"),
    ({"cpu_count": 4, "memory": "20GiB"}, "Standard_E4s_v3"),
    ({"cpu_count": 0.5, "memory": "100GiB"}, "Standard_E16s_v3"),
    ({"cpu_count": 64}, "Standard_E64s_v3"),
    ({"gpu_count": 1}, "Standard_NC4as_T4_v3"),
    ({"gpu_count": 1, "cpu_count": 20}, "Standard_NC24ads_A100_v4"),
    ({"gpu_count": 2}, "Standard_NC48ads_A100_v4"),
    ({"gpu_count": 4, "memory": "500GiB"}, "Standard_NC96ads_A100_v4"),
    ({"gpu_count": 8}, "Standard_ND96asr_v4"),
    ({"gpu_count": 8, "memory": "1TiB"}, "Standard_ND96amsr_A100_v4"),
])
def test_resource_settings_choose_the_smallest_serverless_size_that_fits(resources: dict[str, Any], size: str) -> None:
    from conveyor.config.resources import ResourceSettings

    assert choose_vm_size(ResourceSettings(**resources)).name == size
    job = _render({"resources": resources})["job"]
    assert job["resources"] == {"instance_count": 1, "instance_type": size}
    assert "compute" not in job


def test_the_size_table_is_ordered_so_the_first_fit_is_the_smallest() -> None:
    for kind in (False, True):
        sizes = [s for s in VM_SIZES if bool(s.gpus) == kind]
        for a, b in zip(sizes, sizes[1:]):
            assert (a.gpus, a.vcpus) <= (b.gpus, b.vcpus), (a, b)


@pytest.mark.parametrize("resources", [{"cpu_count": 4096}, {"gpu_count": 9}, {"memory": "4TiB"},
                                       {"cpu_count": 128, "gpu_count": 1}])
def test_impossible_requests_are_refused_before_anything_is_recorded(resources: dict[str, Any]) -> None:
    _operator()

    @pipeline(enable_cache=False)
    def p():
        train.with_options(step_operator="aml", settings={"resources": resources})()

    with pytest.raises(ResourceUnavailableError, match="no Azure ML serverless VM size holds"):
        p()
    from conveyor import Client

    assert Client().list_pipeline_runs() == []


def test_the_command_job_definition() -> None:
    got = _render({"resources": {"cpu_count": 3}, "step_operator.azureml": {"job_tier": "Spot", "shm_size": "8g",
                                                                             "tags": {"team": "vision"}}},
                  timeout="1h", identity_client_id="11111111-2222-3333-4444-555555555555", tags={"cost": "ml"})
    job = got["job"]
    assert got["job_name"] == job["name"] == "conveyor-dry-run-train-1"
    assert job["type"] == "command" and job["experiment_name"] == "conveyor"
    assert job["command"].startswith("python3 -m conveyor.entrypoints.step_operator --job ")
    assert job["environment"]["image"] == IMAGE
    assert job["resources"] == {"instance_count": 1, "instance_type": "Standard_DS3_v2", "shm_size": "8g"}
    assert job["queue_settings"] == {"job_tier": "spot"}
    assert job["limits"] == {"timeout": 3600}
    assert job["identity"] == {"type": "managed_identity", "client_id": "11111111-2222-3333-4444-555555555555"}
    assert job["environment_variables"]["OMP_NUM_THREADS"] == "3"
    assert job["tags"]["team"] == "vision" and job["tags"]["cost"] == "ml"
    assert job["tags"]["conveyor.step_run_id"] == "dry-run-train" and job["tags"]["conveyor.attempt"] == "1"


def test_a_compute_cluster_and_a_registered_environment_replace_serverless_and_the_image() -> None:
    job = _render({"step_operator.azureml": {"compute_target_name": "gpu-cluster", "instance_count": 2,
                                             "environment_name": "conveyor-env@latest"}})["job"]
    assert job["compute"] == "azureml:gpu-cluster"
    assert job["resources"] == {"instance_count": 2}
    assert job["environment"] == "azureml:conveyor-env@latest"
    assert "queue_settings" not in job


def test_config_refuses_two_computes_and_typos() -> None:
    from pydantic import ValidationError

    from conveyor.step_operators.azureml.flavor import AzureMLStepOperatorConfig, AzureMLStepOperatorSettings

    with pytest.raises(ValidationError, match="not both"):
        AzureMLStepOperatorConfig(**WORKSPACE, compute_target_name="c", instance_type="Standard_DS2_v2")
    with pytest.raises(ValidationError, match="extra"):
        AzureMLStepOperatorConfig(**WORKSPACE, workspace="typo")
    with pytest.raises(ValidationError, match="job_tier"):
        AzureMLStepOperatorSettings(job_tier="cheap")


def test_secrets_and_store_credentials_go_to_key_vault_never_into_the_definition() -> None:
    value = f"planted-{uuid.uuid4().hex}"
    got = _render(extra_env={"WANDB_API_KEY": value, "AWS_SECRET_ACCESS_KEY": "aws-" + value},
                  key_vault_url=VAULT, identity_client_id="cid")
    text = json.dumps(got)
    assert value not in text
    env = got["job"]["environment_variables"]
    assert "WANDB_API_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    refs = json.loads(env["CONVEYOR_KEYVAULT_SECRETS"])
    assert refs == got["key_vault_secrets"]
    assert set(refs) == {"WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY"}
    assert all(len(n) <= 127 and n.replace("-", "").isalnum() for n in refs.values())
    assert env["CONVEYOR_KEYVAULT_URL"] == VAULT and env["CONVEYOR_AZURE_IDENTITY_CLIENT_ID"] == "cid"
    assert got["job"]["command"].startswith("python3 -m conveyor.step_operators.azureml.bootstrap --job ")


def test_secrets_without_a_key_vault_are_refused() -> None:
    with pytest.raises(ResourceUnavailableError, match="key_vault_url"):
        _render(extra_env={"WANDB_API_KEY": "x"})


# -- the lifecycle, through the SDK against the REST fake -------------------------------------------------
@pytest.fixture
def aml(azureml_fake: Any, podman_engine: Any, s3_server: Any, s3_bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fake (tests/fixtures/azureml_fake.py), this process as an orchestrator with a managed identity that
    trusts the fake's CA, a stack whose artifact store is S3 on moto, and `config` for operators that talk to it."""
    from conveyor.images.build import ensure_image
    from conveyor.images.settings import DockerSettings

    for key, value in azureml_fake.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "AzureCloud")  # MLClient sets it process-wide: undone after
    ctx = get_context()
    ctx.ensure_defaults()
    store = ctx.store.create_component("artifact_store", "aml_s3", "s3", {"path": f"s3://{s3_bucket}/conveyor",
                                                                          "endpoint_url": s3_server.endpoint_url})
    ids = [c["id"] for c in ctx.store.get_stack("default")["components"] if c["type"] != "artifact_store"]
    ctx.store.set_stack_components("default", [*ids, store])
    reset_contexts()
    image = ensure_image(DockerSettings(parent_image=podman_engine.base_image), podman_engine.docker_host,
                         extra_requirements=["s3fs", "azure-identity", "azure-keyvault-secrets"])
    azureml_fake.shared_paths = [str(tmp_path)]
    azureml_fake.computes = {"cpu-cluster": "Standard_DS3_v2", "odd-cluster": "Standard_Custom_Z9"}
    azureml_fake.config = {**WORKSPACE, "resource_manager_url": azureml_fake.url, "image": image,
                           "key_vault_url": azureml_fake.vault_url, "identity_client_id": "steps-identity",
                           "poll_interval": 0.2, "stop_timeout": 30}
    return azureml_fake


def _on_fake(aml: Any, **config: Any) -> None:
    from testkit import add_step_operator

    add_step_operator("aml", "azureml", **{**aml.config, **config})


def _jobs_of(aml: Any, step_run_id: str) -> list[Any]:
    return [j for j in list(aml.jobs.values()) if j.tags.get("conveyor.step_run_id") == step_run_id]


def test_a_given_instance_type_too_small_for_the_request_is_refused(aml: Any) -> None:
    _on_fake(aml, instance_type="Standard_DS2_v2")
    before = len(aml.jobs)

    @pipeline(enable_cache=False)
    def p():
        train.with_options(step_operator="aml", settings={"resources": {"cpu_count": 8}})()

    with pytest.raises(ResourceUnavailableError, match="Standard_DS2_v2 .*cannot hold cpu_count=8"):
        p()
    assert len(aml.jobs) == before


def test_a_compute_cluster_is_checked_against_its_size_and_must_exist(aml: Any) -> None:
    _on_fake(aml, compute_target_name="cpu-cluster")
    before = len(aml.jobs)

    @pipeline(enable_cache=False)
    def too_big():
        train.with_options(step_operator="aml", settings={"resources": {"memory": "64GiB"}})()

    with pytest.raises(ResourceUnavailableError, match="compute cluster 'cpu-cluster' of size Standard_DS3_v2"):
        too_big()

    @pipeline(enable_cache=False)
    def missing():
        train.with_options(step_operator="aml",
                           settings={"step_operator.azureml": {"compute_target_name": "nope"}})()

    with pytest.raises(ResourceUnavailableError, match="has no compute 'nope'"):
        missing()
    assert len(aml.jobs) == before
    assert any(m == "GET" and "/computes/nope?" in path for m, path, _ in aml.requests)


def test_a_cluster_of_unknown_size_is_left_to_azure(aml: Any) -> None:
    job = _render({"resources": {"cpu_count": 64}}, **{**aml.config, "compute_target_name": "odd-cluster"})["job"]
    assert job["compute"] == "azureml:odd-cluster" and job["resources"] == {"instance_count": 1}


def test_a_pipeline_runs_through_azure_ml_and_streams_its_logs(aml: Any) -> None:
    _on_fake(aml)

    @pipeline(enable_cache=False)
    def p():
        remote_sum.with_options(step_operator="aml", settings={"resources": {"cpu_count": 2}})(make(5))

    started = time.monotonic()
    run = p()
    step_run = run.steps["remote_sum"]
    assert step_run.status == "completed" and step_run.outputs["output"].load() == 10
    assert "summing 5 values" in step_run.logs()
    assert step_run.submission["data"]["serverless"] is True
    [job] = _jobs_of(aml, step_run.id)
    assert job.name == step_run.submission["job_name"] and job.status == "Completed"
    props = job.properties
    assert props["resources"]["instanceType"] == "Standard_DS2_v2" and not props.get("computeId")
    assert props["environmentVariables"]["OMP_NUM_THREADS"] == "2"
    assert aml.environments[props["environmentId"].lower()]["properties"]["image"] == aml.config["image"]
    assert job.create_kwargs["nano_cpus"] == int(min(2, os.cpu_count() or 1) * 1e9)
    assert step_run.submission["data"]["studio_url"].endswith(f"/studio/runs/{job.name}")
    assert time.monotonic() - started < 60


def test_a_secret_reaches_the_step_through_key_vault_and_is_deleted_after(aml: Any) -> None:
    _on_fake(aml)
    value = f"planted-{uuid.uuid4().hex}"
    get_context().vault.set("planted", {"token": value}, replace=False)

    @pipeline(enable_cache=False)
    def p():
        uses_secret.with_options(step_operator="aml",
                                 settings={"environment": {"PLANTED": "{{planted.token}}"}})("PLANTED")

    run = p()
    step_run = run.steps["uses_secret"]
    assert step_run.outputs["output"].load() == hashlib.sha256(value.encode()).hexdigest()
    assert "the token is ****" in step_run.logs()
    assert not [r for r in aml.requests if value in r[2]], "a secret value was sent outside a Key Vault set"
    [job] = _jobs_of(aml, step_run.id)
    written = step_run.submission["data"]["secrets"]
    assert written and all(n.startswith(job.name) for n in written)
    # each read by the job's bootstrap, with the job's managed identity
    reads = [r for r in aml.secret_reads if r.split(" ")[0] in written]
    assert sorted(reads) == sorted(f"{n} (identity steps-identity)" for n in written)
    assert not set(written) & set(aml.secrets), "the job's secrets outlived it (deleted and purged)"


@pytest.mark.parametrize(("status", "state"), [
    ("NotStarted", "queued"), ("Queued", "queued"), ("Preparing", "queued"), ("Starting", "queued"),
    ("Provisioning", "queued"), ("Running", "running"), ("Finalizing", "running"), ("Completed", "completed"),
    ("Failed", "failed"), ("Canceled", "cancelled"), ("CancelRequested", "running"),
])
def test_job_states_map_to_conveyor_states(aml: Any, status: str, state: str) -> None:
    """Read through the SDK (whose `Job.status` is an enum) from a job the fake holds in that status."""
    from fixtures.azureml_fake import FakeJob

    from conveyor.step_operators.azureml.operator import STATES

    assert STATES[status] == state
    _on_fake(aml)
    op = get_context().load_stack().step_operator("aml")
    name = f"conveyor-states-{status.lower()}-{uuid.uuid4().hex[:6]}"
    scope = (f"subscriptions/{WORKSPACE['subscription_id']}/resourceGroups/{WORKSPACE['resource_group']}/providers/"
             f"Microsoft.MachineLearningServices/workspaces/{WORKSPACE['workspace_name']}")
    aml.jobs[name] = FakeJob(name, scope, {"properties": {"jobType": "Command", "command": "true",
                                                          "environmentId": f"{scope}/environments/e/versions/1"}},
                             status=status, error={"code": "UserError", "message": "exit 1"})
    assert op.get_status(Submission("azureml", name, data={"job": name})).state == state


def test_a_preempted_spot_job_is_retried_as_infrastructure(aml: Any) -> None:
    _on_fake(aml, job_tier="Spot")
    aml.preempt_next = 1

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="aml")(1.0)

    run = p()
    step_run = run.steps["nap"]
    assert step_run.status == "completed" and step_run.attempt == 2
    jobs = _jobs_of(aml, step_run.id)
    assert [(j.name.rsplit("-", 1)[1], j.status) for j in jobs] == [("1", "Failed"), ("2", "Completed")]
    assert "preempted" in jobs[0].error["message"]
    assert all(j.properties["queueSettings"]["jobTier"].lower() == "spot" for j in jobs)


@pytest.mark.parametrize(("fate", "kind", "text"), [("oom", "memory", "killed for memory"),
                                                      ("timeout", "timeout", "timed out")])
def test_platform_kills_become_failure_kinds(azure: FakeAzureML, fate: str, kind: str, text: str) -> None:
    """At the client boundary: the REST fake's VMs have their size's memory, more than a test can fill."""
    _operator()
    azure.scripts.append(Script(fate=fate, after_s=0.5))

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="aml")(30)

    with pytest.raises(RunFailedError) as failed:
        p()
    step_run = failed.value.run.steps["nap"]
    assert step_run.failure_kind == kind and text in step_run.error


def test_a_step_timeout_ends_the_job(aml: Any) -> None:
    _on_fake(aml)

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="aml", timeout=2)(300)

    with pytest.raises(RunFailedError) as failed:
        p()
    step_run = failed.value.run.steps["nap"]
    assert step_run.failure_kind == "timeout" and "timed out after 2s" in step_run.error
    [job] = _jobs_of(aml, step_run.id)
    assert job.properties["limits"]["timeout"] == "PT2S"
    assert job.status in ("Canceled", "Failed") and aml.containers(step_run.id, all=True) == []


def test_a_queued_job_past_the_pending_timeout_is_cancelled(aml: Any) -> None:
    _on_fake(aml, pending_timeout="1s")

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="aml", settings={"resources": {"gpu_count": 1}})(1)

    with pytest.raises(RunFailedError) as failed:
        p()
    step_run = failed.value.run.steps["nap"]
    assert step_run.failure_kind == "pending"
    [job] = _jobs_of(aml, step_run.id)
    assert job.status == "Canceled" and job.started is None and job.container is None
    assert any(m == "POST" and path.split("?")[0].endswith(f"/jobs/{job.name}/cancel") for m, path, _ in aml.requests)


def _info(operator_name: str = "aml") -> tuple[Any, Any, list[str], dict[str, str]]:
    stack = get_context().load_stack()
    operator = stack.step_operator(operator_name)

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator=operator_name)(300)

    snapshot = p.compile()
    root = stack.artifact_store.artifact_store()
    info = build_step_info(stack, snapshot, "nap", operator, run_id="r1", run_name="r1",
                           step_run_id=uuid.uuid4().hex, attempt=1,
                           attempt_uri=root.join("runs", "r1", "steps", "nap", "attempt-1"))
    command, environment = entrypoint_request(info, stack.artifact_store)
    return operator, info, command, environment


def test_submitting_the_same_attempt_again_reattaches_and_cancel_is_idempotent(aml: Any) -> None:
    _on_fake(aml)
    operator, info, command, environment = _info()
    first = operator.submit(info, command, environment)
    # a fresh operator, as after `conveyor run resume` in another process
    fresh = type(operator)(name=operator.name, id=operator.id, config=operator.config, flavor=operator.flavor)
    second = fresh.submit(info, command, environment)
    assert second.data["reattached"] is True and first.data["reattached"] is False
    assert [j.name for j in _jobs_of(aml, info.step_run_id)] == [info.job_name]
    assert second.data["secrets"] == first.data["secrets"] != []  # the store's credentials, written once
    wait_until(lambda: fresh.get_status(second).state == "running", what="the job to run")
    fresh.cancel(Submission.from_json(json.loads(json.dumps(second.to_json()))))
    assert fresh.get_status(second).state == "cancelled"
    assert aml.jobs[info.job_name].status == "Canceled"
    assert aml.containers(info.step_run_id, all=True) == []
    assert not set(first.data["secrets"]) & set(aml.secrets), "cancel removes the credentials"
    fresh.cancel(second)  # again: nothing to do, no error
    fresh.cleanup(second)


def test_a_job_of_the_same_name_that_is_not_this_steps_is_never_followed(aml: Any) -> None:
    _on_fake(aml)
    operator, info, command, environment = _info()
    submission = operator.submit(info, command, environment)
    aml.jobs[info.job_name].properties["tags"]["conveyor.step_run_id"] = "someone-else"
    with pytest.raises(RuntimeError, match="already exists and is not this step's"):
        operator.submit(info, command, environment)
    operator.cancel(submission)


def test_a_job_azure_forgot_is_lost_and_logs_end(aml: Any) -> None:
    _on_fake(aml)
    operator = get_context().load_stack().step_operator("aml")
    gone = Submission("azureml", "conveyor-gone-1", data={"job": "conveyor-gone-1"})
    assert operator.get_status(gone).state == "lost"
    assert list(operator.logs(gone, follow=True)) == []


def test_importing_the_flavor_loads_no_azure_sdk() -> None:
    import subprocess
    import sys

    code = ("import sys; import conveyor.step_operators.azureml.flavor, conveyor.step_operators.azureml.bootstrap; "
            "print(sorted(m for m in sys.modules if m.startswith('azure')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
