"""The SageMaker step operator: one training job per step attempt, followed through DescribeTrainingJob.

The job runs the step's image with the step's entrypoint as ContainerEntrypoint/ContainerArguments, wrapped in a
tiny bootstrap that first exports the variables of a per-job Secrets Manager secret (the artifact store's
credentials, values resolved from `{{name.key}}`): a job's Environment is readable by anyone who may describe it,
so only the secret's ARN is there. The secret is deleted when the step ends. Logs are read from CloudWatch Logs
while the job runs. Heavy: imports boto3 (lazily, on first use).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from typing import Any, Callable, ClassVar, Iterator

from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError
from conveyor.step_operators.container import ContainerStepOperator
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission
from conveyor.step_operators.sagemaker.flavor import SageMakerStepOperatorConfig, SageMakerStepOperatorSettings
from conveyor.step_operators.sagemaker.request import (
    BOOTSTRAP_MODULE,
    ENDPOINT_ENV,
    SAGEMAKER_PLAIN_ENV,
    SECRET_ENV,
    SECRET_MAX_BYTES,
    check_arguments,
    choose_instance_type,
    job_name,
    secret_name,
    split_environment,
    stopping_condition,
    tags,
)

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
#: how long the API may be unreachable before a job is reported lost (and re-submitted as a new attempt)
UNREACHABLE_GRACE_S = 60.0
#: SecondaryStatus values before the step's container runs
STARTING = frozenset({"Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
                      "DownloadingTrainingImage"})
_MEMORY = re.compile(r"out ?of ?memory|\boom\b|oomkill|memoryerror|cannot allocate memory", re.I)
_SPOT = re.compile(r"spot|interrupt|capacity", re.I)
_NOT_FOUND = re.compile(r"could not find|not found|does not exist", re.I)


def _code(err: BaseException) -> str:
    response = getattr(err, "response", None) or {}
    return str((response.get("Error") or {}).get("Code", ""))


def _message(err: BaseException) -> str:
    response = getattr(err, "response", None) or {}
    return str((response.get("Error") or {}).get("Message", "")) or str(err)


class SageMakerStepOperator(ContainerStepOperator):
    #: the container's own settings (region, the redaction list) are plain too; the split is `request.py`'s,
    #: which also keeps the step's non-secret settings["environment"] plain and honours SageMaker's limits
    extra_plain_environment: ClassVar[frozenset[str]] = SAGEMAKER_PLAIN_ENV
    missing_image_advice: ClassVar[str] = (
        "needs an ECR image with conveyor installed: give the operator one (conveyor step-operator update NAME "
        "--image=<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>), or the step settings={'docker': "
        "{'image': ...}}")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[tuple[str, str | None, str | None], Any] = {}
        self._lock = threading.Lock()
        self._done: set[str] = set()
        self._cancelled: set[str] = set()
        self._unreachable: dict[str, float] = {}
        self._last: dict[str, str] = {}
        self._polled: dict[str, tuple[float, StatusReport]] = {}

    @property
    def config(self) -> SageMakerStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    # -- clients ----------------------------------------------------------------------------------
    def _where(self, data: dict[str, Any] | None = None) -> tuple[str | None, str | None]:
        data = data or {}
        return (data.get("region") or self.config.region), (data.get("endpoint_url") or self.config.endpoint_url)

    def client(self, service: str, data: dict[str, Any] | None = None) -> Any:
        """A boto3 client for `service` ("sagemaker", "secretsmanager", "logs") where a receipt's job lives
        (default: this operator's region and endpoint); one per process, so tests can stub it."""
        region, endpoint = self._where(data)
        key = (service, region, endpoint)
        with self._lock:
            if key not in self._clients:
                import boto3
                from botocore.config import Config

                session = boto3.session.Session(region_name=region)
                self._clients[key] = session.client(service, endpoint_url=endpoint, config=Config(
                    retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=30))
            return self._clients[key]

    def _region(self) -> str | None:
        return self.config.region or self.client("sagemaker").meta.region_name

    # -- what is sent -----------------------------------------------------------------------------
    @staticmethod
    def _settings(info: StepRunInfo) -> SageMakerStepOperatorSettings:
        return info.config.operator_settings or SageMakerStepOperatorSettings()  # type: ignore[return-value]

    def prepare_step(self, info: StepRunInfo, *, store_root: str | None = None, code_root: str | None = None,
                     log: Callable[[str], None] | None = None) -> None:
        """Pre-flight: a local artifact store cannot work; then build the step's image if it is built."""
        self._check_store(store_root, info.pipeline_step_name)
        super().prepare_step(info, store_root=store_root, code_root=code_root, log=log)

    @staticmethod
    def _check_store(root: str | None, step: str) -> None:
        if root is not None and not root.startswith("s3://"):
            raise ResourceUnavailableError(
                f"step {step!r}: the artifact store is {root}, which a SageMaker training job cannot reach: use an s3 "
                "artifact store (conveyor artifact-store register NAME --flavor=s3 --path=s3://bucket/prefix)")

    def output_path(self, info: StepRunInfo) -> str:
        """OutputDataConfig.S3OutputPath (required by SageMaker; Conveyor's outputs go to the artifact store)."""
        from conveyor.images.build import artifact_store_root

        if self.config.output_path:
            return self.config.output_path
        if self.config.bucket:
            return f"s3://{self.config.bucket}/conveyor/sagemaker"
        root = artifact_store_root(info)
        if root and root.startswith("s3://"):
            return f"{root}/sagemaker"
        raise ResourceUnavailableError(
            f"step {info.pipeline_step_name!r}: SageMaker needs an S3 output path: set the operator's bucket or "
            "output_path, or use an s3 artifact store")

    def instance_type(self, info: StepRunInfo) -> str:
        given = self._settings(info).instance_type or self.config.instance_type
        return choose_instance_type(info.config.resource_settings, given, info.pipeline_step_name)

    @staticmethod
    def job_name(info: StepRunInfo) -> str:
        return job_name(info.pipeline_step_name, info.step_run_id, info.attempt)

    def render(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str],
               image: str | None = None, secret_ref: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
        """(CreateTrainingJob request, values of the per-job secret). Without `secret_ref` the request names the
        secret by its name (dry runs); `submit` passes the ARN it got."""
        settings = self._settings(info)
        name = self.job_name(info)
        container = self.step_container(info, entrypoint_command, environment)
        env = {**container.environment, **settings.environment}
        cpus = info.config.resource_settings.cpu_count
        if cpus is not None:
            # the instance may have more vCPUs than asked for: size thread pools to the request
            env.setdefault("OMP_NUM_THREADS", str(max(1, math.floor(cpus))))
        step_env = dict(info.config.settings.get("environment") or {})
        plain, hidden = split_environment(env, step_env, settings.environment, plain_names=self.plain_names())
        if hidden:
            plain[SECRET_ENV] = secret_ref or secret_name(name)
            if self.config.endpoint_url:
                plain[ENDPOINT_ENV] = self.config.endpoint_url
        size = len(json.dumps(hidden))
        if size > SECRET_MAX_BYTES:
            raise ResourceUnavailableError(
                f"step {info.pipeline_step_name!r}: its secret variables take {size} bytes, more than a Secrets "
                f"Manager secret holds ({SECRET_MAX_BYTES})")
        python = container.command[0]
        entrypoint = check_arguments([python, "-m", BOOTSTRAP_MODULE], "container entrypoint")
        arguments = check_arguments(["--", *container.command], "container arguments")
        resource: dict[str, Any] = {"InstanceType": self.instance_type(info),
                                    "InstanceCount": settings.instance_count,
                                    "VolumeSizeInGB": settings.volume_size_in_gb}
        if self.config.kms_key_id:
            resource["VolumeKmsKeyId"] = self.config.kms_key_id
        output: dict[str, Any] = {"S3OutputPath": f"{self.output_path(info).rstrip('/')}/{name}"}
        if self.config.kms_key_id:
            output["KmsKeyId"] = self.config.kms_key_id
        job_tags = {"conveyor:run-id": info.run_id, "conveyor:step-run-id": info.step_run_id,
                    "conveyor:step": info.pipeline_step_name, "conveyor:pipeline": info.pipeline.name,
                    "conveyor:attempt": str(info.attempt), **settings.tags}
        request: dict[str, Any] = {
            "TrainingJobName": name,
            "RoleArn": self.config.role,
            "AlgorithmSpecification": {"TrainingImage": image or self.step_image(info, build=False),
                                       "TrainingInputMode": "File", "ContainerEntrypoint": entrypoint,
                                       "ContainerArguments": arguments},
            "ResourceConfig": resource,
            "OutputDataConfig": output,
            "StoppingCondition": stopping_condition(
                settings.max_runtime_in_seconds, info.config.timeout, settings.use_spot_instances,
                settings.max_wait_time_in_seconds, self.config.pending_timeout),
            "Environment": plain,
            "Tags": tags(job_tags),
        }
        if not request["StoppingCondition"]:
            del request["StoppingCondition"]
        if settings.use_spot_instances:
            request["EnableManagedSpotTraining"] = True
        if self.config.subnets:
            request["VpcConfig"] = {"Subnets": list(self.config.subnets),
                                    "SecurityGroupIds": list(self.config.security_group_ids)}
        return request, hidden

    # -- checks -----------------------------------------------------------------------------------
    def check_resources(self, info: StepRunInfo) -> None:
        self.check_image(info)
        self.instance_type(info)
        settings = self._settings(info)
        stopping_condition(settings.max_runtime_in_seconds, info.config.timeout, settings.use_spot_instances,
                           settings.max_wait_time_in_seconds, self.config.pending_timeout)
        if info.attempt_uri:
            from conveyor.images.build import artifact_store_root

            self._check_store(artifact_store_root(info), info.pipeline_step_name)

    # -- full contract ----------------------------------------------------------------------------
    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        from conveyor.images.build import artifact_store_root

        self._check_store(artifact_store_root(info), info.pipeline_step_name)
        sm = self.client("sagemaker")
        name = self.job_name(info)
        data: dict[str, Any] = {"region": self._region(), "endpoint_url": self.config.endpoint_url, "job": name,
                                "timeout": info.config.timeout, "secret": None, "reattached": False}
        existing = self._describe(sm, name)
        if existing is not None:
            # A restarted orchestrator submitting the same attempt: names are unique per attempt, so this is ours.
            data["reattached"] = True
            data["arn"] = existing.get("TrainingJobArn")
            data["secret"] = (existing.get("Environment") or {}).get(SECRET_ENV)
            return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=name, data=data)
        image = self.submit_image(info)
        request, hidden = self.render(info, entrypoint_command, environment, image, secret_ref="<pending>")
        if hidden:
            data["secret"] = self._create_secret(name, hidden, info)
            request["Environment"][SECRET_ENV] = data["secret"]
        try:
            created = sm.create_training_job(**request)
        except Exception:
            if data["secret"]:
                self._delete_secret(data["secret"], data)
            raise
        data["arn"] = created.get("TrainingJobArn")
        return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=name, data=data)

    def _create_secret(self, name: str, values: dict[str, str], info: StepRunInfo) -> str:
        sm = self.client("secretsmanager")
        kwargs: dict[str, Any] = {"Name": secret_name(name), "SecretString": json.dumps(values),
                                  "Description": f"Conveyor: environment of SageMaker training job {name}; deleted "
                                                 "when the step ends",
                                  "Tags": [{"Key": "conveyor:step-run-id", "Value": info.step_run_id}]}
        if self.config.kms_key_id:
            kwargs["KmsKeyId"] = self.config.kms_key_id
        try:
            return str(sm.create_secret(**kwargs)["ARN"])
        except Exception as err:  # noqa: BLE001
            if _code(err) != "ResourceExistsException":
                raise
            # left by an earlier try of this very attempt: replace its value
            return str(sm.put_secret_value(SecretId=secret_name(name), SecretString=json.dumps(values))["ARN"])

    def _delete_secret(self, secret: str, data: dict[str, Any]) -> None:
        try:
            self.client("secretsmanager", data).delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
        except Exception as err:  # noqa: BLE001 - idempotent
            if _code(err) != "ResourceNotFoundException":
                raise

    @staticmethod
    def _describe(sm: Any, name: str) -> dict[str, Any] | None:
        try:
            return dict(sm.describe_training_job(TrainingJobName=name))
        except Exception as err:  # noqa: BLE001
            if _code(err) in ("ValidationException", "ResourceNotFound") and _NOT_FOUND.search(_message(err)):
                return None
            raise

    def get_status(self, submission: Submission) -> StatusReport:
        data = submission.data
        name = data["job"]
        now = time.monotonic()
        cached = self._polled.get(name)
        if cached is not None and now - cached[0] < self.config.poll_interval:
            return cached[1]  # several readers (status poll, log follower) share one DescribeTrainingJob
        try:
            job = self._describe(self.client("sagemaker", data), name)
        except Exception as err:  # noqa: BLE001 - throttling, or the network blips
            since = self._unreachable.setdefault(name, now)
            if now - since < UNREACHABLE_GRACE_S:
                return StatusReport(self._last.get(name, "queued"),  # type: ignore[arg-type]
                                    f"cannot reach SageMaker: {type(err).__name__}: {err}")
            self._done.add(name)
            return StatusReport("lost", f"cannot reach SageMaker to follow training job {name} for "
                                f"{UNREACHABLE_GRACE_S:g}s: {err}")
        self._unreachable.pop(name, None)
        if job is None:
            self._done.add(name)
            return StatusReport("lost", f"SageMaker does not know training job {name}")
        report = self.report(name, job, data, cancelled=name in self._cancelled)
        self._last[name] = report.state
        self._polled[name] = (now, report)
        if report.terminal:
            self._done.add(name)
        return report

    @staticmethod
    def report(name: str, job: dict[str, Any], data: dict[str, Any], cancelled: bool = False) -> StatusReport:
        """A DescribeTrainingJob answer as Conveyor's status: why a job failed decides its failure kind."""
        status = job.get("TrainingJobStatus", "")
        secondary = job.get("SecondaryStatus", "") or ""
        reason = job.get("FailureReason", "") or ""
        detail = f"training job {name}: {secondary or status}" + (f": {reason}" if reason else "")
        if status in ("InProgress", "Stopping"):
            if secondary == "Interrupted" or secondary == "Restarting":
                return StatusReport("queued", f"{detail} (spot capacity was reclaimed; SageMaker waits for more)")
            if secondary in STARTING or not secondary:
                return StatusReport("queued", detail)
            return StatusReport("running", detail if status == "Stopping" else "")
        if status == "Completed":
            return StatusReport("completed", exit_code=0)
        timeout = data.get("timeout")
        if secondary == "MaxRuntimeExceeded" or "MaxRuntimeInSeconds" in reason:
            what = f"timed out after {timeout:g}s" if timeout else "timed out"
            limit = (job.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
            return StatusReport("failed", f"{what}: SageMaker stopped training job {name} at its MaxRuntimeInSeconds"
                                f" ({limit}s)", kind="timeout")
        if secondary in ("MaxWaitTimeExceeded", "Interrupted") or (status == "Failed" and _SPOT.search(reason)
                                                                    and job.get("EnableManagedSpotTraining")):
            return StatusReport("preempted", f"{detail} (spot interruption)")
        if status == "Stopped":
            if cancelled:
                return StatusReport("cancelled", f"training job {name} was stopped")
            return StatusReport("cancelled", f"training job {name} was stopped outside Conveyor")
        if status == "Failed":
            if _MEMORY.search(reason):
                return StatusReport("failed", f"{MEMORY_ADVICE} (SageMaker: {reason})", kind="memory")
            if reason.startswith(("CapacityError", "InternalServerError")):
                return StatusReport("lost", detail)
            return StatusReport("failed", detail)
        return StatusReport("lost", f"training job {name} is {status or 'in an unknown state'}")

    def cancel(self, submission: Submission) -> None:
        data = submission.data
        name = data.get("job")
        if not name:
            return
        self._cancelled.add(name)
        self._polled.pop(name, None)
        sm = self.client("sagemaker", data)
        try:
            sm.stop_training_job(TrainingJobName=name)
        except Exception as err:  # noqa: BLE001 - idempotent: finished or gone is fine
            if _code(err) not in ("ValidationException", "ResourceNotFound"):
                raise
        deadline = time.monotonic() + self.config.stop_timeout
        while time.monotonic() < deadline:
            job = self._describe(sm, name)
            if job is None or job.get("TrainingJobStatus") not in ("InProgress", "Stopping"):
                break
            time.sleep(min(1.0, self.config.poll_interval))
        if data.get("secret"):
            self._delete_secret(data["secret"], data)
        self._done.add(name)

    def cleanup(self, submission: Submission) -> None:
        """The secret is needed only while the job runs: delete it (without a recovery window) once it ended."""
        data = submission.data
        if data.get("secret"):
            try:
                self._delete_secret(data["secret"], data)
            except Exception:  # noqa: BLE001 - tagged with the step run id: findable and removable by hand
                pass
        name = data.get("job", "")
        for table in (self._unreachable, self._last, self._polled):
            table.pop(name, None)
        self._done.discard(name)
        self._cancelled.discard(name)

    # -- logs -------------------------------------------------------------------------------------
    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        """The job's CloudWatch streams (`<job>/algo-<n>-<epoch>`), read from the start, followed until it ends."""
        data = submission.data
        name = data["job"]
        logs = self.client("logs", data)
        tokens: dict[str, str | None] = {}
        checked = [0.0, False]

        def finished() -> bool:
            if name in self._done:
                return True
            if time.monotonic() - checked[0] > 1.0:
                checked[0] = time.monotonic()
                try:
                    checked[1] = self.get_status(submission).terminal
                except Exception:  # noqa: BLE001
                    checked[1] = False
            return bool(checked[1])

        while True:
            done = finished()
            try:
                streams = self._streams(logs, name)
            except Exception:  # noqa: BLE001 - no log group yet, or a blip
                streams = []
            for stream in streams:
                tokens.setdefault(stream, None)
            for stream in sorted(tokens):
                yield from self._read_stream(logs, stream, tokens)
            if done or not follow:
                return
            time.sleep(0.3)

    @staticmethod
    def _streams(logs: Any, name: str) -> list[str]:
        out: list[str] = []
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{name}/"}
        while True:
            try:
                page = logs.describe_log_streams(**kwargs)
            except Exception as err:  # noqa: BLE001
                if _code(err) == "ResourceNotFoundException":
                    return out
                raise
            out += [s["logStreamName"] for s in page.get("logStreams", [])]
            if not page.get("nextToken"):
                return out
            kwargs["nextToken"] = page["nextToken"]

    @staticmethod
    def _read_stream(logs: Any, stream: str, tokens: dict[str, str | None]) -> Iterator[str]:
        while True:
            kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if tokens[stream]:
                kwargs["nextToken"] = tokens[stream]
            try:
                page = logs.get_log_events(**kwargs)
            except Exception as err:  # noqa: BLE001
                if _code(err) == "ResourceNotFoundException":
                    return
                raise
            events = page.get("events", [])
            text = "".join(e["message"] if e["message"].endswith("\n") else e["message"] + "\n" for e in events)
            token = page.get("nextForwardToken")
            moved = token != tokens[stream]
            tokens[stream] = token
            if text:
                yield text
            if not events or not moved:
                return

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        request, hidden = self.render(info, entrypoint_command, environment)
        out: dict[str, Any] = {"flavor": self.flavor, "job_name": info.job_name, "create_training_job": request}
        if hidden:
            out["secret"] = {"Name": secret_name(request["TrainingJobName"]), "keys": sorted(hidden)}
        return out
