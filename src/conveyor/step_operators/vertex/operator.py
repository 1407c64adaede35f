"""The Vertex AI step operator: one CustomJob per step attempt, followed through GetCustomJob and Cloud Logging.

Built on the official SDK's low-level clients (`google.cloud.aiplatform_v1.JobServiceClient`,
`google.cloud.secretmanager_v1.SecretManagerServiceClient`, `google.cloud.logging_v2.Client` over HTTP), imported
here only. The request is rendered by `request.py` (pure Python); credentials and `{{secret.key}}` values reach the
step through a per-job Secret Manager secret that the step's bootstrap reads, so no secret value is in the request.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time
from typing import Any, ClassVar, Iterator

from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError
from conveyor.step_operators.container import ContainerStepOperator
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission
from conveyor.step_operators.vertex.flavor import VertexStepOperatorConfig, VertexStepOperatorSettings
from conveyor.step_operators.vertex.machines import MachineChoice, choose_machine, threads_for
from conveyor.step_operators.vertex.request import (
    ATTEMPT_LABEL,
    SECRET_ENDPOINT_ENV,
    SECRET_ENV,
    STEP_RUN_LABEL,
    container_command,
    custom_job,
    job_labels,
    secret_id,
    secret_request,
)

#: how long the API may be unreachable before a job is reported lost (and re-submitted as a new attempt)
UNREACHABLE_GRACE_S = 60.0
#: google.rpc.Code values Vertex puts in CustomJob.error
CODE_DEADLINE_EXCEEDED, CODE_RESOURCE_EXHAUSTED, CODE_ABORTED, CODE_UNAVAILABLE = 4, 8, 10, 14
QUEUED_STATES = frozenset({"JOB_STATE_UNSPECIFIED", "JOB_STATE_QUEUED", "JOB_STATE_PENDING"})
RUNNING_STATES = frozenset({"JOB_STATE_RUNNING", "JOB_STATE_CANCELLING", "JOB_STATE_PAUSED", "JOB_STATE_UPDATING"})
TERMINAL_JOB_STATES = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                                 "JOB_STATE_EXPIRED", "JOB_STATE_PARTIALLY_SUCCEEDED"})
_EXIT = re.compile(r"non-zero status of (\d+)")
_PREEMPTED = re.compile(r"preempt", re.I)
_OOM = re.compile(r"out[- ]of[- ]memory|\bOOM\b", re.I)
#: google.api_core errors that a retry will not fix
PERMANENT = ("Unauthorized", "Forbidden", "BadRequest")


def state_report(state: str, error_code: int, error_message: str, *, job: str, timeout: float | None = None,
                 spot: bool = False) -> StatusReport:
    """A CustomJob's state (and error) as Conveyor sees it. Pure, so the whole table is tested without a server."""
    if state in QUEUED_STATES:
        return StatusReport("queued", f"CustomJob {job} is {state.removeprefix('JOB_STATE_').lower()}")
    if state in RUNNING_STATES:
        return StatusReport("running", "" if state == "JOB_STATE_RUNNING" else f"CustomJob {job}: {state}")
    if state == "JOB_STATE_SUCCEEDED":
        return StatusReport("completed", exit_code=0)
    if state == "JOB_STATE_CANCELLED":
        return StatusReport("cancelled", f"CustomJob {job} was cancelled")
    if state == "JOB_STATE_EXPIRED":
        return StatusReport("failed", f"CustomJob {job} expired before it could start: {error_message}".rstrip(": "),
                            kind="pending")
    match = _EXIT.search(error_message)
    code = int(match.group(1)) if match else None
    detail = f"CustomJob {job} failed: {error_message or state}"
    if _PREEMPTED.search(error_message) or (spot and error_code in (CODE_ABORTED, CODE_UNAVAILABLE)):
        return StatusReport("preempted", detail, exit_code=code)
    if error_code == CODE_DEADLINE_EXCEEDED or re.search(r"timed? ?out|timeout", error_message, re.I):
        what = f"timed out after {timeout:g}s" if timeout else "timed out"
        return StatusReport("failed", f"{what}: Vertex AI stopped CustomJob {job} at its scheduling timeout "
                            f"({error_message})", exit_code=code, kind="timeout")
    if _OOM.search(error_message):
        return StatusReport("failed", f"{MEMORY_ADVICE} (Vertex AI: {error_message})", exit_code=code, kind="memory")
    if error_code == CODE_RESOURCE_EXHAUSTED:
        return StatusReport("failed", detail, exit_code=code, kind="pending")
    return StatusReport("failed", detail, exit_code=code)


def _api_error(err: BaseException, *names: str) -> bool:
    """Whether `err` is one of google.api_core.exceptions' classes by name (NotFound, AlreadyExists, ...)."""
    return any(type(err).__name__ == n or any(c.__name__ == n for c in type(err).__mro__) for n in names)


class VertexStepOperator(ContainerStepOperator):
    missing_image_advice: ClassVar[str] = (
        "needs an image with conveyor installed that Vertex AI can pull: give the operator an image (conveyor "
        "step-operator update NAME --image=...), or docker_settings, or the step settings={'docker': {...}}")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Any] = {}
        self._done: set[str] = set()
        self._unreachable: dict[str, float] = {}
        self._last: dict[str, str] = {}

    @property
    def config(self) -> VertexStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    # -- clients ----------------------------------------------------------------------------------
    def _endpoint(self, location: str | None = None) -> str:
        return self.config.api_endpoint or f"{location or self.config.location}-aiplatform.googleapis.com"

    def _credentials(self, endpoint: str) -> Any:
        if endpoint.startswith("http://"):
            # a local emulator (as with the Cloud SDK's emulators): no Google credentials
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()
        if self.config.service_account_path:
            from google.oauth2 import service_account

            return service_account.Credentials.from_service_account_file(
                self.config.service_account_path, scopes=["https://www.googleapis.com/auth/cloud-platform"])
        return None  # Application Default Credentials

    def _client(self, kind: str, endpoint: str) -> Any:
        with self._lock:
            key = (kind, endpoint)
            if key not in self._clients:
                credentials = self._credentials(endpoint)
                if kind == "jobs":
                    from google.cloud import aiplatform_v1

                    self._clients[key] = aiplatform_v1.JobServiceClient(
                        credentials=credentials, transport=self.config.transport,
                        client_options={"api_endpoint": endpoint})
                elif kind == "secrets":
                    from google.cloud import secretmanager_v1

                    self._clients[key] = secretmanager_v1.SecretManagerServiceClient(
                        credentials=credentials, transport=self.config.transport,
                        client_options={"api_endpoint": endpoint})
                else:
                    from google.cloud import logging_v2

                    # the HTTP/JSON API: the same on every transport setting, and what the tests' fake serves
                    self._clients[key] = logging_v2.Client(
                        project=self.config.project, credentials=credentials, _use_grpc=False,
                        client_options={"api_endpoint": endpoint})
            return self._clients[key]

    def _jobs(self, job_name: str | None = None) -> Any:
        location = job_name.split("/")[3] if job_name and job_name.count("/") >= 5 else None
        return self._client("jobs", self._endpoint(location))

    def _secrets(self) -> Any:
        return self._client("secrets", self.config.secret_manager_api_endpoint or "secretmanager.googleapis.com")

    def _logging(self) -> Any:
        return self._client("logging", self.config.logging_api_endpoint or "https://logging.googleapis.com")

    # -- what is sent -----------------------------------------------------------------------------
    @staticmethod
    def _settings(info: StepRunInfo) -> VertexStepOperatorSettings:
        return info.config.operator_settings or VertexStepOperatorSettings()  # type: ignore[return-value]

    def machine(self, info: StepRunInfo) -> MachineChoice:
        s, c = self._settings(info), self.config
        named, source = (s.machine_type, "settings") if s.machine_type else (c.machine_type, "config")
        count = s.accelerator_count if s.accelerator_count is not None else c.accelerator_count
        return choose_machine(info.config.resource_settings, machine_type=named,
                              accelerator_type=s.accelerator_type or c.accelerator_type, accelerator_count=count,
                              source=source, step=info.pipeline_step_name)

    def spot(self, info: StepRunInfo) -> bool:
        s = self._settings(info)
        return s.use_preemptible if s.use_preemptible is not None else self.config.use_preemptible

    def _check_store(self, info: StepRunInfo) -> None:
        root = self.local_store_root(info)
        if root is not None:
            raise ResourceUnavailableError(
                f"the artifact store is the local directory {root}, which a Vertex AI job cannot see: use a remote "
                "artifact store (s3:// or another fsspec URL the job's image can reach)")

    def labels(self, info: StepRunInfo) -> dict[str, str]:
        return job_labels(run_id=info.run_id, step_run_id=info.step_run_id, step=info.pipeline_step_name,
                          attempt=info.attempt, extra={**self.config.labels, **self._settings(info).labels})

    def render(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str], *,
               image: str | None = None, secret_version: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
        """(CustomJob request, the values for the per-job secret). `secret_version` is the secret's version name
        once it exists (dry runs show a placeholder)."""
        s, c = self._settings(info), self.config
        container = self.step_container(info, entrypoint_command, environment)
        env = dict(container.environment)
        threads = threads_for(info.config.resource_settings.cpu_count)
        if threads is not None:
            # the machine may have more CPUs than asked for; thread pools sized from it would oversubscribe
            env.setdefault("OMP_NUM_THREADS", threads)
        plain, secret_values = self.split_environment(env)
        if secret_values:
            plain[SECRET_ENV] = secret_version or f"projects/{c.project}/secrets/{secret_id(info.job_name)}/versions/<n>"
            if c.secret_manager_api_endpoint:
                plain[SECRET_ENDPOINT_ENV] = c.secret_manager_api_endpoint
        command, args = container_command(container.command, bootstrap=bool(secret_values))
        job = custom_job(
            display_name=info.job_name, image=image or self.step_image(info, build=False), command=command, args=args,
            env=plain, machine=self.machine(info), boot_disk_type=s.boot_disk_type or c.boot_disk_type,
            boot_disk_size_gb=s.boot_disk_size_gb or c.boot_disk_size_gb, spot=self.spot(info),
            timeout=info.config.timeout, service_account=s.service_account or c.service_account, network=c.network,
            staging_bucket=c.staging_bucket, labels=self.labels(info))
        return job, secret_values

    @property
    def parent(self) -> str:
        return f"projects/{self.config.project}/locations/{self.config.location}"

    # -- checks -----------------------------------------------------------------------------------
    def check_resources(self, info: StepRunInfo) -> None:
        self.machine(info)
        self.check_image(info)
        self._check_store(info)

    # -- full contract ----------------------------------------------------------------------------
    def _existing(self, info: StepRunInfo) -> Any:
        """A CustomJob already created for this step run and attempt (a restarted orchestrator submitting again)."""
        flt = (f'labels.{STEP_RUN_LABEL}="{self.labels(info)[STEP_RUN_LABEL]}" AND '
               f'labels.{ATTEMPT_LABEL}="{info.attempt}"')
        for job in self._jobs().list_custom_jobs(request={"parent": self.parent, "filter": flt}):
            if job.display_name == info.job_name:
                return job
        return None

    def _create_secret(self, info: StepRunInfo, values: dict[str, str]) -> tuple[str, str]:
        """(secret name, version name) of the per-job secret holding `values`."""
        client = self._secrets()
        name = f"projects/{self.config.project}/secrets/{secret_id(info.job_name)}"
        body = secret_request(labels=self.labels(info), ttl=self.config.secret_ttl)
        try:
            client.create_secret(request={"parent": f"projects/{self.config.project}",
                                          "secret_id": secret_id(info.job_name), "secret": body})
        except Exception as err:  # noqa: BLE001
            if not _api_error(err, "AlreadyExists", "Conflict"):
                raise
        payload = json.dumps(values, sort_keys=True).encode()
        version = client.add_secret_version(request={"parent": name, "payload": {"data": payload}})
        return name, version.name

    def _delete_secret(self, name: str) -> None:
        try:
            self._secrets().delete_secret(request={"name": name})
        except Exception as err:  # noqa: BLE001 - idempotent
            if not _api_error(err, "NotFound"):
                raise

    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        from google.cloud import aiplatform_v1

        self._check_store(info)
        image = self.submit_image(info)
        existing = self._existing(info)
        secret: str | None = None
        if existing is not None:
            # a restarted orchestrator submitting the same attempt again: follow the job (and its secret)
            created, reattached = existing, True
            env = {e.name: e.value for e in existing.job_spec.worker_pool_specs[0].container_spec.env}
            if SECRET_ENV in env:
                secret = env[SECRET_ENV].rsplit("/versions/", 1)[0]
        else:
            _, secret_values = self.render(info, entrypoint_command, environment, image=image)
            version = None
            if secret_values:
                secret, version = self._create_secret(info, secret_values)
            job, _ = self.render(info, entrypoint_command, environment, image=image, secret_version=version)
            try:
                created = self._jobs().create_custom_job(
                    parent=self.parent, custom_job=aiplatform_v1.CustomJob.from_json(json.dumps(job)))
            except BaseException:
                if secret:
                    self._delete_secret(secret)
                raise
            reattached = False
        return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=created.name,
                          data={"job": created.name, "job_id": created.name.rsplit("/", 1)[-1],
                                "project": self.config.project, "secret": secret, "timeout": info.config.timeout,
                                "spot": self.spot(info), "reattached": reattached})

    def get_status(self, submission: Submission) -> StatusReport:
        data = submission.data
        name = data["job"]
        try:
            job = self._jobs(name).get_custom_job(name=name)
        except Exception as err:  # noqa: BLE001 - google.api_core errors, or transport errors while the API blips
            if _api_error(err, "NotFound"):
                self._done.add(name)
                return StatusReport("lost", f"Vertex AI no longer knows CustomJob {name} (deleted outside Conveyor?)")
            since = self._unreachable.setdefault(name, time.monotonic())
            if time.monotonic() - since < UNREACHABLE_GRACE_S:
                return StatusReport(self._last.get(name, "queued"), f"cannot reach Vertex AI: {err}")  # type: ignore[arg-type]
            self._done.add(name)
            return StatusReport("lost", f"cannot reach Vertex AI to follow CustomJob {name} for "
                                f"{UNREACHABLE_GRACE_S:g}s: {err}")
        self._unreachable.pop(name, None)
        error = job.error
        report = state_report(job.state.name, int(error.code) if error else 0, error.message if error else "",
                              job=name, timeout=data.get("timeout"), spot=bool(data.get("spot")))
        self._last[name] = report.state
        if report.terminal:
            self._done.add(name)
        return report

    def cancel(self, submission: Submission) -> None:
        data = submission.data
        name = data.get("job")
        if not name:
            return
        jobs = self._jobs(name)
        try:
            jobs.cancel_custom_job(name=name)
        except Exception as err:  # noqa: BLE001 - idempotent: already ended (FailedPrecondition) or gone
            if not _api_error(err, "NotFound", "FailedPrecondition", "BadRequest"):
                raise
        deadline = time.monotonic() + self.config.stop_timeout
        while time.monotonic() < deadline:  # "cancelled" means nothing is left running
            try:
                if jobs.get_custom_job(name=name).state.name in TERMINAL_JOB_STATES:
                    break
            except Exception as err:  # noqa: BLE001
                if _api_error(err, "NotFound"):
                    break
            time.sleep(0.2)
        self._done.add(name)
        if data.get("secret"):
            self._delete_secret(data["secret"])

    def cleanup(self, submission: Submission) -> None:
        """The secret is needed only while the job runs: remove it as soon as the step has ended."""
        data = submission.data
        if data.get("secret"):
            try:
                self._delete_secret(data["secret"])
            except Exception:  # noqa: BLE001 - its ttl removes it anyway
                pass
        name = data.get("job", "")
        self._unreachable.pop(name, None)
        self._last.pop(name, None)
        self._done.discard(name)

    # -- logs -------------------------------------------------------------------------------------
    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        """The job's Cloud Logging entries (resource.type="ml_job"), followed by polling until the job has ended
        and `log_lag` seconds have passed without a new entry."""
        from google.cloud import logging_v2

        data = submission.data
        name, job_id = data["job"], data["job_id"]
        client = self._logging()
        since = "1970-01-01T00:00:00Z"
        seen: set[str] = set()
        ended: float | None = None
        asked = [0.0]

        def finished() -> bool:
            if name in self._done:
                return True
            if time.monotonic() - asked[0] > 2.0:  # another process (conveyor run logs --follow) asks itself
                asked[0] = time.monotonic()
                try:
                    return self._jobs(name).get_custom_job(name=name).state.name in TERMINAL_JOB_STATES
                except Exception as err:  # noqa: BLE001
                    return _api_error(err, "NotFound")
            return False

        while True:
            done = finished()
            flt = f'resource.type="ml_job" AND resource.labels.job_id="{job_id}" AND timestamp>="{since}"'
            new = False
            try:
                for entry in client.list_entries(resource_names=[f"projects/{data['project']}"], filter_=flt,
                                                 order_by=logging_v2.ASCENDING, page_size=1000):
                    key = entry.insert_id or f"{entry.timestamp}:{entry.payload}"
                    if key in seen:
                        continue
                    seen.add(key)
                    new = True
                    if entry.timestamp is not None:
                        since = entry.timestamp.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    payload = entry.payload
                    if isinstance(payload, dict):
                        payload = payload.get("message", json.dumps(payload, sort_keys=True))
                    text = str(payload) if payload is not None else ""
                    yield text if text.endswith("\n") else text + "\n"
            except Exception as err:  # noqa: BLE001 - Cloud Logging blips: try again on the next pass
                if not follow or _api_error(err, *PERMANENT):
                    raise  # the launcher shows "(log streaming stopped: ...)": no permission never heals
            if not follow:
                return
            if done:
                ended = ended if ended is not None and not new else time.monotonic()
                if time.monotonic() - ended >= self.config.log_lag:
                    return
            time.sleep(0.25 if done else min(1.0, self.config.poll_interval))

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        job, secret_values = self.render(info, entrypoint_command, environment)
        out: dict[str, Any] = {"flavor": self.flavor, "job_name": info.job_name, "parent": self.parent,
                               "custom_job": job}
        if secret_values:
            out["secret"] = {"secret_id": secret_id(info.job_name),
                             **secret_request(labels=self.labels(info), ttl=self.config.secret_ttl),
                             "payload_keys": sorted(secret_values)}
        return out
