"""The Azure ML step operator: one command job per step attempt, submitted and followed with `azure-ai-ml`.

The job runs the step's entrypoint in the step's image (`conveyor.images`) on a compute cluster or on serverless
compute sized from `ResourceSettings`. Its definition carries only identifiers as environment variables: every
other variable (the step's secrets, the artifact store's credentials and options) is written to Azure Key Vault as
one secret per variable and job, and the job's bootstrap (`azureml/bootstrap.py`) reads them with the job's
managed identity. Logs are read from the run's `user_logs/std_log*.txt` while it runs (what `ml_client.jobs.stream`
prints, but as an iterator).
"""

from __future__ import annotations

import json
import math
import re
import shlex
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError
from conveyor.step_operators.azureml.bootstrap import IDENTITY_ENV, SECRETS_ENV, VAULT_ENV
from conveyor.step_operators.azureml.flavor import AzureMLStepOperatorConfig, AzureMLStepOperatorSettings
from conveyor.step_operators.azureml.sizes import check_size, choose_vm_size
from conveyor.step_operators.container import ContainerStepOperator
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission

BOOTSTRAP_MODULE = "conveyor.step_operators.azureml.bootstrap"
STEP_RUN_TAG = "conveyor.step_run_id"
#: Azure ML job status -> Conveyor state (JobStatus of azure-ai-ml)
STATES: dict[str, str] = {
    "NotStarted": "queued", "Starting": "queued", "Provisioning": "queued", "Preparing": "queued",
    "Queued": "queued", "Paused": "queued", "Running": "running", "Finalizing": "running",
    "CancelRequested": "running", "NotResponding": "running", "Unknown": "running",
    "Completed": "completed", "Failed": "failed", "Canceled": "cancelled",
}
TERMINAL = frozenset({"Completed", "Failed", "Canceled"})
UNREACHABLE_GRACE_S = 60.0
_PREEMPTED = re.compile(r"preempt|low[- ]priority.*(evict|reclaim)|spot.*(evict|reclaim)", re.I)
_MEMORY = re.compile(r"out of memory|oom[- ]?kill|exit code:? 137|memory limit", re.I)
_TIMEOUT = re.compile(r"timed? ?out|exceeded (the )?(maximum )?(run)?time|JobTimeout", re.I)


def status_text(status: Any) -> str:
    """A job status as Azure writes it. The SDK's `Job.status` is a `JobStatus` (str, Enum), whose `str()` on
    Python 3.11 is "JobStatus.COMPLETED", not "Completed"; run details give a plain string."""
    return str(getattr(status, "value", status) or "")


def _status_code(err: BaseException) -> int | None:
    return getattr(err, "status_code", None) or getattr(getattr(err, "response", None), "status_code", None)


def _not_found(err: BaseException) -> bool:
    return type(err).__name__ == "ResourceNotFoundError" or _status_code(err) == 404


def key_vault_name(job_name: str, index: int, variable: str) -> str:
    """A Key Vault secret name (1-127 alphanumerics and dashes, case-insensitive) unique per job and variable."""
    clean = re.sub(r"[^A-Za-z0-9-]+", "-", f"{job_name}-{index}-{variable}").strip("-").lower()
    return clean[:127]


def cloud_kwargs(cloud: str | None, resource_manager_url: str | None) -> dict[str, Any]:
    """`MLClient`'s cloud keywords. A cloud the SDK does not know by name is described to it (`cloud_metadata`)
    from ARM's own metadata endpoint, as `az cloud register --endpoint-resource-manager` does."""
    if not resource_manager_url:
        return {"cloud": cloud} if cloud else {}
    import requests

    base = resource_manager_url.rstrip("/")
    response = requests.get(f"{base}/metadata/endpoints", params={"api-version": "2022-09-01"}, timeout=30)
    response.raise_for_status()
    found = response.json()
    clouds = found if isinstance(found, list) else [found]
    meta = next((m for m in clouds if str(m.get("resourceManager", "")).rstrip("/") == base), clouds[0])
    name = cloud or meta.get("name") or "Custom"
    return {"cloud": name, "cloud_metadata": {
        "azure_portal": meta.get("portal") or base + "/", "resource_manager": base + "/",
        "active_directory": (meta.get("authentication") or {}).get("loginEndpoint") or "",
        "aml_resource_id": base + "/", "storage_endpoint": (meta.get("suffixes") or {}).get("storage") or "",
        "registry_discovery_endpoint": base + "/"}}


@dataclass
class Rendered:
    """What one submission sends: the SDK's command job and the values that go to Key Vault instead."""

    job: Any
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)  # variable -> (Key Vault name, value)
    serverless: bool = False


class AzureMLStepOperator(ContainerStepOperator):
    #: the bootstrap reads the step's secrets from Key Vault with these
    image_requirements: ClassVar[tuple[str, ...]] = ("azure-identity", "azure-keyvault-secrets")
    #: seams for tests and custom transports: `client_factory(config) -> MLClient-like`,
    #: `vault_factory(vault_url) -> SecretClient-like`. None: the real SDK with DefaultAzureCredential.
    client_factory: ClassVar[Callable[[AzureMLStepOperatorConfig], Any] | None] = None
    vault_factory: ClassVar[Callable[[str], Any] | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._client_cache: Any = None
        self._vaults: dict[str, Any] = {}
        self._cancelled: set[str] = set()
        self._unreachable: dict[str, float] = {}
        self._last: dict[str, str] = {}

    @property
    def config(self) -> AzureMLStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    # -- clients ----------------------------------------------------------------------------------
    def _client(self) -> Any:
        with self._lock:
            if self._client_cache is None:
                factory = type(self).client_factory
                if factory is not None:
                    self._client_cache = factory(self.config)
                else:
                    from azure.ai.ml import MLClient
                    from azure.identity import DefaultAzureCredential

                    c = self.config
                    extra = cloud_kwargs(c.cloud, c.resource_manager_url)
                    self._client_cache = MLClient(DefaultAzureCredential(), c.subscription_id, c.resource_group,
                                                  c.workspace_name, show_progress=False, **extra)
            return self._client_cache

    def _vault(self, url: str) -> Any:
        with self._lock:
            if url not in self._vaults:
                factory = type(self).vault_factory
                if factory is not None:
                    self._vaults[url] = factory(url)
                else:
                    from azure.identity import DefaultAzureCredential
                    from azure.keyvault.secrets import SecretClient

                    self._vaults[url] = SecretClient(vault_url=url, credential=DefaultAzureCredential())
            return self._vaults[url]

    # -- what is sent -----------------------------------------------------------------------------
    @staticmethod
    def _settings(info: StepRunInfo) -> AzureMLStepOperatorSettings:
        return info.config.operator_settings or AzureMLStepOperatorSettings()  # type: ignore[return-value]

    def _compute(self, info: StepRunInfo) -> tuple[str | None, str | None]:
        """(compute cluster, serverless VM size): a step's choice of either replaces the operator's."""
        s = self._settings(info)
        if s.compute_target_name:
            return s.compute_target_name, None
        if s.instance_type:
            return None, s.instance_type
        if self.config.compute_target_name:
            return self.config.compute_target_name, None
        return None, self.config.instance_type

    def check_resources(self, info: StepRunInfo) -> None:
        """Serverless: the given size must hold the request, or one must exist that does. A compute cluster's
        size is checked when the workspace says which it is (a size outside our table is left to Azure)."""
        compute, instance_type = self._compute(info)
        resources = info.resources
        if compute is None:
            if instance_type:
                check_size(instance_type, resources, f"step {info.pipeline_step_name!r}: instance_type")
            else:
                choose_vm_size(resources)
            return
        size = self._cluster_size(compute)
        if size:
            check_size(size, resources, f"step {info.pipeline_step_name!r}: compute cluster {compute!r} of size")

    def _cluster_size(self, compute: str) -> str | None:
        try:
            return getattr(self._client().compute.get(compute), "size", None)
        except Exception as err:  # noqa: BLE001 - no permission to read computes: Azure judges at submission
            if _not_found(err):
                raise ResourceUnavailableError(f"the workspace {self.config.workspace_name!r} has no compute "
                                               f"{compute!r}") from None
            return None

    def runs_in_image(self, info: StepRunInfo) -> bool:
        """False when the step runs in a registered Azure ML environment instead of an image."""
        s = self._settings(info)
        has_docker = info.config.settings.get("docker") is not None
        return bool(s.image) or not (s.environment_name or (self.config.environment_name and not has_docker))

    def render(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str],
               image: str | None) -> Rendered:
        """The command job for one attempt, built with the SDK's own `command()` builder."""
        from azure.ai.ml import command
        from azure.ai.ml.entities import Environment, JobResourceConfiguration, ManagedIdentityConfiguration

        c, s = self.config, self._settings(info)
        compute, instance_type = self._compute(info)
        serverless = compute is None
        if serverless and not instance_type:
            instance_type = choose_vm_size(info.resources).name
        container = self.step_container(info, entrypoint_command, environment)
        env = dict(container.environment)
        if info.resources.cpu_count:
            env["OMP_NUM_THREADS"] = str(max(1, math.ceil(info.resources.cpu_count)))
        plain, secret = self.split_environment(env)
        secrets = {var: (key_vault_name(info.job_name, i, var), value)
                   for i, (var, value) in enumerate(sorted(secret.items()))}
        argv = container.command
        if secrets:
            if not c.key_vault_url:
                raise ResourceUnavailableError(
                    f"step {info.pipeline_step_name!r} has secret variables ({', '.join(sorted(secrets))}): give the "
                    "azureml step operator a key_vault_url (conveyor step-operator update NAME "
                    "--key_vault_url=https://VAULT.vault.azure.net); they never go into the job definition")
            plain[VAULT_ENV] = c.key_vault_url
            plain[SECRETS_ENV] = json.dumps({var: name for var, (name, _) in secrets.items()}, sort_keys=True)
            if c.identity_client_id:
                plain[IDENTITY_ENV] = c.identity_client_id
            argv = [argv[0], "-m", BOOTSTRAP_MODULE, *argv[3:]]  # same arguments, the bootstrap runs the step
        count = s.instance_count or c.instance_count
        resources = (JobResourceConfiguration(instance_type=instance_type, instance_count=count) if serverless
                     else JobResourceConfiguration(instance_count=count))
        if s.shm_size:
            resources.shm_size = s.shm_size
        environment_name = s.environment_name or (c.environment_name if image is None else None)
        tags = {**c.tags, **s.tags, STEP_RUN_TAG: info.step_run_id, "conveyor.run_id": info.run_id,
                "conveyor.step": info.pipeline_step_name, "conveyor.attempt": str(info.attempt)}
        kwargs: dict[str, Any] = {}
        if info.config.timeout:
            kwargs["timeout"] = int(math.ceil(info.config.timeout))
        if c.identity_client_id:
            kwargs["identity"] = ManagedIdentityConfiguration(client_id=c.identity_client_id)
        tier = s.job_tier or c.job_tier
        if tier and serverless:
            from azure.ai.ml.entities import QueueSettings

            kwargs["queue_settings"] = QueueSettings(job_tier=tier.lower())
        job = command(
            name=info.job_name, display_name=f"{info.pipeline.name}.{info.pipeline_step_name}",
            experiment_name=c.experiment_name, description=f"Conveyor run {info.run_name}, step "
            f"{info.pipeline_step_name}, attempt {info.attempt}", tags=tags, command=shlex.join(argv),
            environment=environment_name if environment_name else Environment(image=image),
            environment_variables=dict(sorted(plain.items())), compute=compute, resources=resources, **kwargs)
        return Rendered(job=job, secrets=secrets, serverless=serverless)

    @staticmethod
    def job_definition(job: Any) -> dict[str, Any]:
        """The job as the SDK serialises it (its YAML form), with the fields that serialisation leaves out."""
        body = json.loads(json.dumps(job._to_dict(), default=str))
        body.pop("component", None)  # the anonymous component repeats the job's own fields
        body.update({"name": job.name, "command": job.command, "display_name": job.display_name, "experiment_name": job.experiment_name,
                     "description": job.description, "tags": dict(job.tags or {})})
        return body

    # -- lifecycle --------------------------------------------------------------------------------
    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        self.check_resources(info)
        image = self.submit_image(info) if self.runs_in_image(info) else None
        rendered = self.render(info, entrypoint_command, environment, image)
        jobs = self._client().jobs
        name = info.job_name
        try:
            existing = jobs.get(name)
        except Exception as err:  # noqa: BLE001
            if not _not_found(err):
                raise
            existing = None
        reattached = existing is not None
        if existing is not None:
            # a restarted orchestrator submitting the same attempt: follow the job already there, never run twice
            if (existing.tags or {}).get(STEP_RUN_TAG) != info.step_run_id:
                raise RuntimeError(f"an Azure ML job named {name} already exists and is not this step's")
            created = existing
        else:
            vault = self._vault(self.config.key_vault_url) if rendered.secrets else None
            written: list[str] = []
            try:
                for secret_name, value in rendered.secrets.values():
                    vault.set_secret(secret_name, value, tags={"conveyor.job": name}, content_type="conveyor")
                    written.append(secret_name)
                created = jobs.create_or_update(rendered.job, experiment_name=self.config.experiment_name)
            except BaseException:
                if vault is not None:
                    self._delete_secrets(self.config.key_vault_url, written)
                raise
        return Submission(
            flavor=self.flavor, job_name=info.job_name, backend_id=getattr(created, "name", name) or name,
            data={"job": name, "subscription_id": self.config.subscription_id,
                  "resource_group": self.config.resource_group, "workspace_name": self.config.workspace_name,
                  "key_vault_url": self.config.key_vault_url if rendered.secrets else None,
                  "secrets": [n for n, _ in rendered.secrets.values()], "serverless": rendered.serverless,
                  "studio_url": getattr(created, "studio_url", None), "timeout": info.config.timeout,
                  "reattached": reattached})

    def _details(self, name: str) -> Any:
        return self._client().jobs._runs_operations.get_run_details(name)

    @staticmethod
    def _error_text(details: Any) -> str:
        error = getattr(details, "error", None)
        if error is None:
            return ""
        if hasattr(error, "as_dict"):
            error = error.as_dict()
        inner = error.get("error", error) if isinstance(error, dict) else {}
        if isinstance(inner, dict):
            return ": ".join(str(inner[k]) for k in ("code", "message") if inner.get(k))
        return str(error)

    def get_status(self, submission: Submission) -> StatusReport:
        name = submission.data.get("job") or submission.job_name
        try:
            job = self._client().jobs.get(name)
        except Exception as err:  # noqa: BLE001 - HttpResponseError, or connection errors while Azure blips
            if _not_found(err):
                if name in self._cancelled:
                    return StatusReport("cancelled", f"Azure ML job {name} is gone")
                return StatusReport("lost", f"Azure ML no longer knows job {name} (deleted outside Conveyor?)")
            since = self._unreachable.setdefault(name, time.monotonic())
            if time.monotonic() - since < UNREACHABLE_GRACE_S:
                return StatusReport(self._last.get(name, "queued"), f"cannot reach Azure ML: {err}")  # type: ignore[arg-type]
            return StatusReport("lost", f"cannot reach Azure ML to follow job {name} for {UNREACHABLE_GRACE_S:g}s: "
                                f"{err}")
        self._unreachable.pop(name, None)
        report = self._report(name, status_text(job.status), submission.data)
        self._last[name] = report.state
        return report

    def _report(self, name: str, status: str, data: dict[str, Any]) -> StatusReport:
        state = STATES.get(status, "running")
        if state != "failed":
            return StatusReport(state, f"Azure ML job {name}: {status}", exit_code=0 if state == "completed" else None)  # type: ignore[arg-type]
        try:
            error = self._error_text(self._details(name))
        except Exception:  # noqa: BLE001 - the status is known; the reason is a bonus
            error = ""
        message = f"Azure ML job {name} failed" + (f": {error}" if error else "")
        if _PREEMPTED.search(error):
            return StatusReport("preempted", message)
        if _MEMORY.search(error):
            return StatusReport("failed", f"{MEMORY_ADVICE} ({message})", kind="memory")
        if _TIMEOUT.search(error):
            timeout = data.get("timeout")
            what = f"timed out after {timeout:g}s" if timeout else "timed out"
            return StatusReport("failed", f"{what}: {message}", kind="timeout")
        return StatusReport("failed", message)

    def cancel(self, submission: Submission) -> None:
        name = submission.data.get("job") or submission.job_name
        jobs = self._client().jobs
        self._cancelled.add(name)
        try:
            status = status_text(jobs.get(name).status)
            if status not in TERMINAL:
                jobs.begin_cancel(name).wait(timeout=self.config.stop_timeout)
        except Exception as err:  # noqa: BLE001 - idempotent: gone, or ended meanwhile, is fine
            if not _not_found(err) and _status_code(err) not in (400, 409):
                raise
        deadline = time.monotonic() + self.config.stop_timeout
        while time.monotonic() < deadline:
            try:
                if status_text(jobs.get(name).status) in TERMINAL:
                    break
            except Exception as err:  # noqa: BLE001
                if _not_found(err):
                    break
            time.sleep(min(1.0, self.config.poll_interval))
        self._delete_secrets(submission.data.get("key_vault_url"), submission.data.get("secrets") or [])

    def _delete_secrets(self, vault_url: str | None, names: list[str]) -> None:
        if not vault_url or not names:
            return
        vault = self._vault(vault_url)
        for name in names:
            try:
                vault.begin_delete_secret(name).wait()
            except Exception as err:  # noqa: BLE001 - already gone
                if not _not_found(err):
                    continue
            try:
                vault.purge_deleted_secret(name)  # soft-delete keeps it otherwise; purging may be forbidden
            except Exception:  # noqa: BLE001
                pass

    def cleanup(self, submission: Submission) -> None:
        """The secrets are needed only while the job runs: remove them as soon as the step has ended."""
        try:
            self._delete_secrets(submission.data.get("key_vault_url"), submission.data.get("secrets") or [])
        except Exception:  # noqa: BLE001 - best effort; they are tagged with the job's name
            pass
        name = submission.data.get("job", "")
        for table in (self._unreachable, self._last):
            table.pop(name, None)
        self._cancelled.discard(name)

    # -- logs -------------------------------------------------------------------------------------
    @staticmethod
    def _user_logs(files: dict[str, str]) -> list[str]:
        """The step's own output: `user_logs/std_log*.txt` (common runtime), else the legacy driver log."""
        names = sorted(n for n in files if re.match(r"user_logs/std_log.*\.txt$", n))
        return names or sorted(n for n in files if re.match(r"azureml-logs/70_driver_log.*\.txt$", n))

    @staticmethod
    def _download(url: str) -> str:
        import requests

        response = requests.get(url, timeout=30)
        if response.status_code == 404:
            return ""
        response.raise_for_status()
        return response.content.decode("utf-8", "replace")

    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        name = submission.data.get("job") or submission.job_name
        sent: dict[str, int] = {}
        while True:
            try:
                details = self._details(name)
            except Exception as err:  # noqa: BLE001
                if _not_found(err):
                    return
                details = None
            status = status_text(getattr(details, "status", None))
            done = status in TERMINAL or name in self._cancelled and status not in STATES
            files = dict(getattr(details, "log_files", None) or {})
            for log in self._user_logs(files):
                try:
                    text = self._download(files[log])
                except Exception:  # noqa: BLE001 - a SAS URL expired or a blip: next round
                    continue
                if len(text) > sent.get(log, 0):
                    yield text[sent.get(log, 0):]
                    sent[log] = len(text)
            if done or not follow:
                return
            time.sleep(self.config.poll_interval)

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        image = self.step_image(info, build=False) if self.runs_in_image(info) else None
        rendered = self.render(info, entrypoint_command, environment, image)
        return {"flavor": self.flavor, "job_name": info.job_name,
                "workspace": {"subscription_id": self.config.subscription_id,
                              "resource_group": self.config.resource_group,
                              "workspace_name": self.config.workspace_name},
                "job": self.job_definition(rendered.job),
                "key_vault_secrets": {var: name for var, (name, _) in sorted(rendered.secrets.items())}}
