"""The sagemaker step operator: the request it sends, and its life cycle against moto over real HTTP.

moto (the session's `s3_server`, whose endpoint serves every service) takes CreateTrainingJob/DescribeTrainingJob,
S3, Secrets Manager and CloudWatch Logs. moto marks every job `Completed` at once and has no StopTrainingJob, so the
InProgress → Failed/Stopped/spot paths and stop use botocore's Stubber on the operator's own client. Steps that
really run (a pipeline with a spot interruption) use the Podman training runner of tests/fixtures/sagemaker_runner.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from conveyor.config.resources import ResourceSettings
from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError
from conveyor.step_operators.info import PipelineConfig, StepConfig, StepRunInfo, Submission
from conveyor.step_operators.sagemaker.flavor import SageMakerStepOperatorConfig, SageMakerStepOperatorSettings
from conveyor.step_operators.sagemaker.request import (
    ENV_MAX_ENTRIES,
    ENV_VALUE_MAX,
    INSTANCE_TYPES,
    SECRET_ENV,
    choose_instance_type,
    job_name,
    split_environment,
)

ROLE = "arn:aws:iam::123456789012:role/conveyor-steps"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/conveyor-step:1"
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def _operator(**config: Any) -> Any:
    from conveyor.step_operators.sagemaker.operator import SageMakerStepOperator

    cfg = SageMakerStepOperatorConfig(**{"role": ROLE, "image": IMAGE, "region": "us-east-1", "poll_interval": 0.01,
                                        **config})
    return SageMakerStepOperator("sm", cfg, "sagemaker")


def _info(root: str = "s3://bucket/conveyor", step: str = "train", attempt: int = 1, resources: Any = None,
          settings: SageMakerStepOperatorSettings | None = None, step_env: dict[str, str] | None = None,
          timeout: float | None = None, step_run_id: str | None = None) -> StepRunInfo:
    srid = step_run_id or uuid.uuid4().hex
    env_settings = {"environment": step_env} if step_env else {}
    config = StepConfig(name=step, step_operator="sm", resource_settings=ResourceSettings(**(resources or {})),
                        settings=env_settings, operator_settings=settings, timeout=timeout)
    attempt_uri = f"{root}/runs/r1/steps/{step}/attempt-{attempt}"
    return StepRunInfo(config=config, pipeline=PipelineConfig("p"), run_name="r1", pipeline_step_name=step,
                       run_id="r1", step_run_id=srid, attempt=attempt, job_name=f"conveyor-{srid[:16]}-{attempt}",
                       job_uri=f"{attempt_uri}/job.json", attempt_uri=attempt_uri)


COMMAND = [sys.executable, "-m", "conveyor.entrypoints.step_operator", "--job", "s3://bucket/job.json"]


# -- the request ----------------------------------------------------------------------------------
def test_job_names_are_deterministic_unique_per_attempt_and_within_sagemakers_limits() -> None:
    srid = uuid.uuid4().hex
    names = {job_name(step, srid, attempt) for step in ("train", "a" * 200, "évaluer_le_modèle", "__")
             for attempt in (1, 2, 10, 999)}
    assert len(names) == 16
    for name in names:
        assert len(name) <= 63 and NAME_PATTERN.match(name), name
    assert job_name("train", srid, 1) == job_name("train", srid, 1)
    assert job_name("train", srid, 1) != job_name("train", uuid.uuid4().hex, 1)
    assert job_name("train_model", "0123456789abcdef0123", 2) == "conveyor-train-model-0123456789abcdef-2"


@pytest.mark.parametrize(("resources", "expected"), [
    ({}, "ml.m5.large"),
    ({"cpu_count": 2, "memory": "4GB"}, "ml.m5.large"),
    ({"cpu_count": 8, "memory": "8GB"}, "ml.c5.2xlarge"),  # compute-optimized: fewest vCPUs, then least memory
    ({"cpu_count": 2, "memory": "60GiB"}, "ml.r5.2xlarge"),  # memory-optimized
    ({"cpu_count": 0.5}, "ml.m5.large"),
    ({"gpu_count": 1}, "ml.g5.xlarge"),
    ({"gpu_count": 1, "memory": "100GiB"}, "ml.g5.8xlarge"),
    ({"gpu_count": 8, "memory": "1TB"}, "ml.p4d.24xlarge"),
    ({"gpu_count": 8, "memory": "1.5TiB"}, "ml.p5.48xlarge"),
])
def test_the_smallest_instance_type_that_fits_is_chosen(resources: dict[str, Any], expected: str) -> None:
    assert choose_instance_type(ResourceSettings(**resources), None, "train") == expected


def test_the_table_is_ordered_so_the_first_fit_is_the_smallest() -> None:
    keys = [(t.gpus, t.vcpus, t.memory_gib) for t in INSTANCE_TYPES]
    assert keys == sorted(keys)


@pytest.mark.parametrize("resources", [{"cpu_count": 4096}, {"gpu_count": 16}, {"memory": "5TB"},
                                       {"gpu_count": 1, "cpu_count": 500}])
def test_a_request_no_instance_type_satisfies_is_refused(resources: dict[str, Any]) -> None:
    with pytest.raises(ResourceUnavailableError, match="no SageMaker instance type"):
        choose_instance_type(ResourceSettings(**resources), None, "train")
    with pytest.raises(ResourceUnavailableError):
        _operator().check_resources(_info(resources=resources))


def test_a_named_instance_type_is_checked_against_the_request_when_known() -> None:
    with pytest.raises(ResourceUnavailableError, match="more than ml.m5.large has"):
        choose_instance_type(ResourceSettings(gpu_count=1), "ml.m5.large", "train")
    assert choose_instance_type(ResourceSettings(cpu_count=2), "ml.m5.large", "train") == "ml.m5.large"
    # a type outside the table is taken as given: SageMaker itself judges it
    assert choose_instance_type(ResourceSettings(cpu_count=64), "ml.trn1.32xlarge", "t") == "ml.trn1.32xlarge"
    settings = SageMakerStepOperatorSettings(instance_type="ml.g5.2xlarge")
    request, _ = _operator(instance_type="ml.m5.xlarge").render(_info(settings=settings), COMMAND, {})
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"  # the step's setting wins


def test_environment_stays_within_sagemakers_limits() -> None:
    env = {f"VAR_{i:03d}": str(i) for i in range(150)}
    env["LONG"] = "x" * (ENV_VALUE_MAX + 1)
    env["has-dash"] = "1"
    env["CONVEYOR_RUN_ID"] = "r1"
    plain, hidden = split_environment(env, {k: v for k, v in env.items()}, {})
    assert len(plain) <= ENV_MAX_ENTRIES - 2  # room for the secret's ARN and the endpoint
    assert all(re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", k) and len(k) <= 512 and len(v) <= 512 for k, v in plain.items())
    assert {"LONG", "has-dash"} <= set(hidden)
    assert set(plain) | set(hidden) == set(env) and not set(plain) & set(hidden)  # nothing lost
    assert "CONVEYOR_RUN_ID" in plain


def test_secrets_and_store_credentials_never_are_plain_values() -> None:
    env = {"CONVEYOR_RUN_ID": "r1", "CONVEYOR_STEP_RUN_ID": "s", "CONVEYOR_STEP_NAME": "train",
           "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "very-secret", "AWS_PROFILE": "dev",
           "WANDB_API_KEY": "planted-1", "AUTH": "Bearer planted-2", "HF_HUB_OFFLINE": "1",
           "CONVEYOR_REDACT_ENV": "WANDB_API_KEY"}
    step_env = {"WANDB_API_KEY": "{{wandb.key}}", "AUTH": "Bearer {{api.token}}", "HF_HUB_OFFLINE": "1"}
    plain, hidden = split_environment(env, step_env, {})
    assert set(hidden) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "WANDB_API_KEY", "AUTH"}
    assert plain["HF_HUB_OFFLINE"] == "1" and plain["CONVEYOR_REDACT_ENV"] == "WANDB_API_KEY"
    assert "AWS_PROFILE" not in plain and "AWS_PROFILE" not in hidden  # no profile exists in a training job


def test_the_request_wraps_the_entrypoint_in_the_bootstrap_and_names_only_the_secret() -> None:
    settings = SageMakerStepOperatorSettings(use_spot_instances=True, max_runtime_in_seconds=600, tags={"team": "ml"},
                                             volume_size_in_gb=50, environment={"MODE": "fast"})
    env = {"CONVEYOR_RUN_ID": "r1", "AWS_SECRET_ACCESS_KEY": "very-secret"}
    operator = _operator(subnets=["subnet-1"], security_group_ids=["sg-1"], endpoint_url="http://vpce.example")
    request, hidden = operator.render(_info(settings=settings), COMMAND, env)
    algo = request["AlgorithmSpecification"]
    assert algo["ContainerEntrypoint"] == ["python3", "-m", "conveyor.step_operators.sagemaker.bootstrap"]
    assert algo["ContainerArguments"] == ["--", "python3", *COMMAND[1:]]
    assert request["Environment"][SECRET_ENV].startswith("conveyor/")
    assert request["Environment"]["MODE"] == "fast"
    assert hidden == {"AWS_SECRET_ACCESS_KEY": "very-secret"}
    assert "very-secret" not in json.dumps(request)
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 600 + 3600}
    assert request["EnableManagedSpotTraining"] is True
    assert request["VpcConfig"] == {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}
    assert {"Key": "team", "Value": "ml"} in request["Tags"]
    assert request["ResourceConfig"]["VolumeSizeInGB"] == 50
    assert request["OutputDataConfig"]["S3OutputPath"].startswith("s3://bucket/conveyor/sagemaker/")


def test_config_and_settings_are_strict() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="IAM role ARN"):
        SageMakerStepOperatorConfig(role="conveyor-steps")
    with pytest.raises(ValidationError, match="extra"):
        SageMakerStepOperatorConfig(role=ROLE, instance_typ="ml.m5.large")
    with pytest.raises(ValidationError, match="both subnets and security_group_ids"):
        SageMakerStepOperatorConfig(role=ROLE, subnets=["subnet-1"])
    with pytest.raises(ValidationError, match="only with use_spot_instances"):
        SageMakerStepOperatorSettings(max_wait_time_in_seconds=100)
    with pytest.raises(ValidationError, match="at least max_runtime"):
        SageMakerStepOperatorSettings(use_spot_instances=True, max_runtime_in_seconds=100, max_wait_time_in_seconds=50)


def test_a_local_artifact_store_or_missing_image_is_refused_before_submission(tmp_path: Any) -> None:
    with pytest.raises(ResourceUnavailableError, match="cannot reach"):
        _operator().prepare_step(_info(root=str(tmp_path)), store_root=str(tmp_path), code_root=None)
    with pytest.raises(ResourceUnavailableError, match="cannot reach"):
        _operator().check_resources(_info(root=str(tmp_path)))
    with pytest.raises(ResourceUnavailableError, match="needs an ECR image"):
        _operator(image=None).check_resources(_info())


def test_dry_run_shows_the_request_and_the_secrets_keys_only() -> None:
    out = _operator().dry_run(_info(), COMMAND, {"CONVEYOR_RUN_ID": "r1", "AWS_SECRET_ACCESS_KEY": "very-secret"})
    assert out["create_training_job"]["TrainingJobName"].startswith("conveyor-train-")
    assert out["secret"]["keys"] == ["AWS_SECRET_ACCESS_KEY"]
    assert "very-secret" not in json.dumps(out)


def test_flavor_is_registered_and_importing_it_loads_no_boto3() -> None:
    code = ("import sys; from conveyor.stack.registry import BUILTIN_FLAVORS; from conveyor.stack.component import "
            "ComponentType as C; import importlib; src = BUILTIN_FLAVORS[C.STEP_OPERATOR]['sagemaker']; "
            "m, _, a = src.partition(':'); f = getattr(importlib.import_module(m), a)(); "
            "import conveyor.step_operators.sagemaker.bootstrap; print(f.name, 'boto3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["sagemaker", "False"]


# -- against moto over HTTP -------------------------------------------------------------------------
@pytest.fixture
def moto(s3_server: Any, s3_bucket: str) -> dict[str, Any]:
    return {"endpoint_url": s3_server.endpoint_url, "bucket": s3_bucket, "server": s3_server}


def _sent(operator: Any) -> list[dict[str, Any]]:
    """Every CreateTrainingJob request the operator's client sends, as serialized on the wire."""
    sent: list[dict[str, Any]] = []
    operator.client("sagemaker").meta.events.register(
        "before-send.sagemaker.CreateTrainingJob", lambda request, **_: sent.append(json.loads(request.body)))
    return sent


def test_submit_creates_the_job_and_a_per_job_secret_that_cleanup_deletes(moto: dict[str, Any]) -> None:
    import boto3

    operator = _operator(endpoint_url=moto["endpoint_url"])
    sent = _sent(operator)
    root = f"s3://{moto['bucket']}/conveyor"
    info = _info(root=root, settings=SageMakerStepOperatorSettings(tags={"team": "ml"}),
                 step_env={"TOKEN": "{{api.token}}"})
    value = f"planted-{uuid.uuid4().hex}"
    # the launcher stages the job spec in the artifact store before submitting
    s3 = moto["server"].client()
    s3.put_object(Bucket=moto["bucket"], Key=info.job_uri.split("/", 3)[3], Body=b"{}")
    env = {"CONVEYOR_RUN_ID": "r1", "CONVEYOR_STEP_RUN_ID": info.step_run_id, "CONVEYOR_STEP_NAME": "train",
           "AWS_ACCESS_KEY_ID": "conveyor-test-key", "AWS_SECRET_ACCESS_KEY": "conveyor-test-secret",
           "TOKEN": value, "CONVEYOR_REDACT_ENV": "TOKEN"}
    submission = operator.submit(info, COMMAND, env)
    assert len(sent) == 1 and value not in json.dumps(sent) and "conveyor-test-secret" not in json.dumps(sent)
    arn = sent[0]["Environment"][SECRET_ENV]
    assert arn.startswith("arn:aws:secretsmanager:us-east-1:") and arn == submission.data["secret"]
    secrets = boto3.client("secretsmanager", endpoint_url=moto["endpoint_url"], region_name="us-east-1")
    stored = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])
    assert stored == {"AWS_ACCESS_KEY_ID": "conveyor-test-key", "AWS_SECRET_ACCESS_KEY": "conveyor-test-secret",
                      "TOKEN": value}
    described = operator.client("sagemaker").describe_training_job(TrainingJobName=submission.data["job"])
    assert described["RoleArn"] == ROLE
    assert described["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert described["OutputDataConfig"]["S3OutputPath"] == f"{root}/sagemaker/{submission.data['job']}"
    assert described["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    assert operator.get_status(submission).state == "completed"  # moto completes every job at once
    operator.cleanup(submission)
    with pytest.raises(Exception) as info_err:
        secrets.get_secret_value(SecretId=arn)
    assert "ResourceNotFound" in str(info_err.value)
    # receipts are JSON: another process can follow the job
    again = Submission.from_json(json.loads(json.dumps(submission.to_json())))
    assert _operator(endpoint_url=moto["endpoint_url"]).get_status(again).state == "completed"


def test_a_second_submit_of_the_same_attempt_reattaches(moto: dict[str, Any]) -> None:
    root = f"s3://{moto['bucket']}/conveyor"
    info = _info(root=root)
    first = _operator(endpoint_url=moto["endpoint_url"])
    submission = first.submit(info, COMMAND, {"CONVEYOR_RUN_ID": "r1"})
    restarted = _operator(endpoint_url=moto["endpoint_url"])  # a new orchestrator process
    sent = _sent(restarted)
    again = restarted.submit(info, COMMAND, {"CONVEYOR_RUN_ID": "r1"})
    assert sent == [] and again.data["reattached"] is True and again.data["job"] == submission.data["job"]
    retry = restarted.submit(_info(root=root, attempt=2, step_run_id=info.step_run_id), COMMAND, {})
    assert len(sent) == 1 and retry.data["job"].endswith("-2") and retry.data["job"] != submission.data["job"]


def test_logs_are_read_from_cloudwatch_with_next_tokens(moto: dict[str, Any]) -> None:
    import boto3

    operator = _operator(endpoint_url=moto["endpoint_url"])
    submission = operator.submit(_info(root=f"s3://{moto['bucket']}/conveyor"), COMMAND, {})
    job = submission.data["job"]
    logs = boto3.client("logs", endpoint_url=moto["endpoint_url"], region_name="us-east-1")
    group = "/aws/sagemaker/TrainingJobs"
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = f"{job}/algo-1-1700000000"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    other = f"{job}0/algo-1-1700000000"  # another job whose name starts with this one's
    logs.create_log_stream(logGroupName=group, logStreamName=other)
    logs.put_log_events(logGroupName=group, logStreamName=other, logEvents=[{"timestamp": int(time.time() * 1000),
                                                                           "message": "not ours"}])
    now = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    lines = [{"timestamp": now + i, "message": f"line {i}"} for i in range(30)]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=lines)
    text = "".join(operator.logs(submission, follow=True))  # the job is complete: follow returns after the drain
    assert text == "".join(f"line {i}\n" for i in range(30))
    assert "".join(operator.logs(submission, follow=False)) == text


def test_bootstrap_exports_the_secret_then_runs_the_step(moto: dict[str, Any]) -> None:
    import boto3

    secrets = boto3.client("secretsmanager", endpoint_url=moto["endpoint_url"], region_name="us-east-1")
    arn = secrets.create_secret(Name=f"conveyor/test-{uuid.uuid4().hex[:8]}",
                                SecretString=json.dumps({"PLANTED": "v4lue"}))["ARN"]
    env = {**os.environ, SECRET_ENV: arn, "CONVEYOR_SAGEMAKER_ENDPOINT_URL": moto["endpoint_url"]}
    env.pop("AWS_DEFAULT_REGION", None)  # the region comes from the ARN
    run = subprocess.run([sys.executable, "-m", "conveyor.step_operators.sagemaker.bootstrap", "--", sys.executable,
                          "-c", "import os; print(os.environ['PLANTED'], os.environ.get('CONVEYOR_SAGEMAKER_SECRET'))"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["v4lue", "None"]
    env[SECRET_ENV] = arn.replace("conveyor/", "conveyor/missing-")
    run = subprocess.run([sys.executable, "-m", "conveyor.step_operators.sagemaker.bootstrap", "--", "true"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 2 and "secretsmanager:GetSecretValue" in run.stderr


# -- the states moto cannot show: botocore's Stubber on the operator's own client ---------------------
def _describe(status: str, secondary: str, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    from datetime import datetime, timezone

    out = {"TrainingJobName": "j", "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/j",
           "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m"}, "TrainingJobStatus": status,
           "SecondaryStatus": secondary, "AlgorithmSpecification": {"TrainingInputMode": "File"},
           "ResourceConfig": {"VolumeSizeInGB": 30}, "StoppingCondition": {"MaxRuntimeInSeconds": 660},
           "CreationTime": datetime.now(timezone.utc), **extra}
    if reason:
        out["FailureReason"] = reason
    return out


@pytest.mark.parametrize(("status", "secondary", "reason", "extra", "state", "kind"), [
    ("InProgress", "Starting", None, {}, "queued", None),
    ("InProgress", "LaunchingMLInstances", None, {}, "queued", None),
    ("InProgress", "Downloading", None, {}, "queued", None),
    ("InProgress", "Training", None, {}, "running", None),
    ("InProgress", "Uploading", None, {}, "running", None),
    ("InProgress", "Interrupted", None, {"EnableManagedSpotTraining": True}, "queued", None),
    ("Completed", "Completed", None, {}, "completed", None),
    ("Failed", "Failed", "AlgorithmError: exit code 1", {}, "failed", None),
    ("Failed", "Failed", "OutOfMemoryError: Please use an instance type with more memory", {}, "failed", "memory"),
    ("Stopped", "MaxRuntimeExceeded", None, {}, "failed", "timeout"),
    ("Stopped", "MaxWaitTimeExceeded", None, {"EnableManagedSpotTraining": True}, "preempted", None),
    ("Stopped", "Interrupted", "spot capacity reclaimed", {"EnableManagedSpotTraining": True}, "preempted", None),
    ("Failed", "Failed", "CapacityError: Unable to provision requested ML compute capacity", {}, "lost", None),
    ("Stopped", "Stopped", None, {}, "cancelled", None),
])
def test_states_and_failure_kinds(status: str, secondary: str, reason: str | None, extra: dict[str, Any],
                                  state: str, kind: str | None) -> None:
    from botocore.stub import Stubber

    operator = _operator()
    client = operator.client("sagemaker")
    submission = Submission("sagemaker", "j", "j", {"job": "j", "region": "us-east-1", "timeout": 600})
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", _describe(status, secondary, reason, **extra),
                          {"TrainingJobName": "j"})
        report = operator.get_status(submission)
        stub.assert_no_pending_responses()
    assert (report.state, report.kind) == (state, kind), report
    if kind == "memory":
        assert MEMORY_ADVICE in report.message
    if kind == "timeout":
        assert "timed out after 600s" in report.message and "MaxRuntimeInSeconds" in report.message


def test_a_job_sagemaker_forgot_is_lost_and_a_blip_is_not() -> None:
    from botocore.stub import Stubber

    operator = _operator()
    client = operator.client("sagemaker")
    submission = Submission("sagemaker", "j", "j", {"job": "j", "region": "us-east-1"})
    with Stubber(client) as stub:
        stub.add_client_error("describe_training_job", "ThrottlingException", "Rate exceeded")
        assert operator.get_status(submission).state == "queued"  # not lost: the API only blipped
        stub.add_client_error("describe_training_job", "ValidationException",
                              "Requested resource not found: training job j")
        assert operator.get_status(submission).state == "lost"


def test_cancel_stops_the_job_waits_until_stopped_and_is_idempotent(moto: dict[str, Any]) -> None:
    from botocore.stub import Stubber

    import boto3

    operator = _operator(endpoint_url=moto["endpoint_url"])
    secrets = boto3.client("secretsmanager", endpoint_url=moto["endpoint_url"], region_name="us-east-1")
    arn = secrets.create_secret(Name=f"conveyor/j-{uuid.uuid4().hex[:6]}", SecretString="{}")["ARN"]
    submission = Submission("sagemaker", "j", "j", {"job": "j", "region": "us-east-1",
                                                    "endpoint_url": moto["endpoint_url"], "secret": arn})
    client = operator.client("sagemaker", submission.data)
    with Stubber(client) as stub:
        stub.add_response("stop_training_job", {}, {"TrainingJobName": "j"})
        stub.add_response("describe_training_job", _describe("Stopping", "Stopping"), {"TrainingJobName": "j"})
        stub.add_response("describe_training_job", _describe("Stopped", "Stopped"), {"TrainingJobName": "j"})
        stub.add_response("describe_training_job", _describe("Stopped", "Stopped"), {"TrainingJobName": "j"})
        operator.cancel(submission)
        assert operator.get_status(submission).state == "cancelled"
        stub.assert_no_pending_responses()
        # again, on a job that already ended: SageMaker refuses the stop; cancel() does not mind
        stub.add_client_error("stop_training_job", "ValidationException", "The job is not in a stoppable state")
        stub.add_response("describe_training_job", _describe("Stopped", "Stopped"), {"TrainingJobName": "j"})
        operator.cancel(submission)
        stub.assert_no_pending_responses()
    names = [s["Name"] for s in secrets.list_secrets()["SecretList"]]
    assert arn.split(":")[-1].rsplit("-", 1)[0] not in names  # the secret went with the job


# -- steps that really run: the Podman training runner ---------------------------------------------------
def test_a_spot_interruption_is_retried_under_the_infrastructure_budget(sagemaker_cloud: Any, project: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "conformance"))
    from backends import use_s3_artifact_store
    from conformance_steps import numbers, total
    from fixtures.sagemaker_runner import CREDENTIALS
    from testkit import add_step_operator

    from conveyor import pipeline

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    bucket = sagemaker_cloud.new_bucket()
    use_s3_artifact_store(f"s3://{bucket}/conveyor", sagemaker_cloud.endpoint_url)
    add_step_operator("sm", "sagemaker", role=ROLE, region="us-east-1", endpoint_url=sagemaker_cloud.endpoint_url,
                      image=sagemaker_cloud.image, poll_interval=0.2, infrastructure_retries=1)
    sagemaker_cloud.runner.spot_interruptions = 1

    @pipeline(enable_cache=False)
    def p():
        total.with_options(step_operator="sm",
                           settings={"step_operator.sagemaker": {"use_spot_instances": True}})(numbers(4))

    run = p()
    step_run = run.steps["total"]
    assert step_run.status == "completed" and step_run.attempt == 2
    assert step_run.outputs["sum"].load() == 6
    assert step_run.submission["data"]["job"].endswith("-2")
    first = step_run.submission["data"]["job"][:-2] + "-1"
    described = sagemaker_cloud.client("sagemaker").describe_training_job(TrainingJobName=first)
    assert (described["TrainingJobStatus"], described["SecondaryStatus"]) == ("Stopped", "Interrupted")
    assert sagemaker_cloud.runner.spot_interruptions == 0
    assert [s for s in sagemaker_cloud.secrets() if step_run.id[:16] in s] == []  # both attempts' secrets deleted
