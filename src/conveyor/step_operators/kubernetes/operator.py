"""The Kubernetes step operator: one batch/v1 Job per step attempt, followed through Job and Pod status.

Everything the pod needs arrives through the manifest: the image, the entrypoint command, plain identifiers as
environment, and credentials through a Secret created per job (removed when the step ends). Logs are followed
from the pod's log endpoint; the reasons a pod can never start (image pull errors, broken config) end the step at
once instead of leaving it pending.
"""

from __future__ import annotations

import codecs
import math
import threading
import time
from typing import Any, Iterator

from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError
from conveyor.step_operators.container import ContainerStepOperator
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission
from conveyor.step_operators.kubernetes.flavor import (
    KubernetesPodSettings,
    KubernetesStepOperatorConfig,
    KubernetesStepOperatorSettings,
)
from conveyor.step_operators.kubernetes.manifest import (
    CONTAINER,
    GPU_RESOURCE,
    LABEL_PREFIX,
    MANAGED_BY,
    dns1123_name,
    job_manifest,
    label_value,
    secret_manifest,
    secret_name,
)

#: waiting reasons after which a pod never starts without someone changing the image, the registry or the config
NEVER_STARTS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                          "CreateContainerConfigError", "CreateContainerError"})
#: how long the API server may be unreachable before a job is reported lost (and re-submitted as a new attempt)
UNREACHABLE_GRACE_S = 60.0
NODES_TTL_S = 30.0
JOB_NAME_LABEL = "job-name"
STEP_RUN_LABEL = f"{LABEL_PREFIX}step-run-id"


def _status(err: BaseException) -> int | None:
    return getattr(err, "status", None)


def _conditions(obj: Any) -> list[Any]:
    """A Job's or Pod's status conditions (a just-created object may have no status yet)."""
    return list((obj.status.conditions if obj.status is not None else None) or [])


def _cpu(value: str) -> float:
    value = str(value)
    return int(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _memory(value: str) -> int:
    from kubernetes.utils import parse_quantity

    return int(parse_quantity(value))


class KubernetesStepOperator(ContainerStepOperator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._apis: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._lock = threading.Lock()
        self._nodes: tuple[float, list[dict[str, Any]] | None] | None = None
        self._done: set[str] = set()
        self._cancelled: set[str] = set()
        self._unreachable: dict[str, float] = {}
        self._last: dict[str, str] = {}

    @property
    def config(self) -> KubernetesStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    # -- client -----------------------------------------------------------------------------------
    def _target(self) -> dict[str, Any]:
        c = self.config
        return {"namespace": c.kubernetes_namespace, "context": c.kubernetes_context, "kubeconfig": c.kubeconfig,
                "incluster": c.incluster}

    def _api(self, data: dict[str, Any] | None = None) -> tuple[Any, Any]:
        """(CoreV1Api, BatchV1Api) for the cluster a receipt names (default: this operator's)."""
        target = {**self._target(), **{k: v for k, v in (data or {}).items()
                                       if k in ("context", "kubeconfig", "incluster")}}
        key = (target["context"], target["kubeconfig"], target["incluster"])
        with self._lock:
            if key not in self._apis:
                from kubernetes import client
                from kubernetes import config as kube_config

                cfg = client.Configuration()
                if target["incluster"]:
                    kube_config.load_incluster_config(client_configuration=cfg)
                else:
                    kube_config.load_kube_config(config_file=target["kubeconfig"], context=target["context"],
                                                 client_configuration=cfg)
                api = client.ApiClient(cfg)
                self._apis[key] = (client.CoreV1Api(api), client.BatchV1Api(api))
            return self._apis[key]

    # -- what is sent -----------------------------------------------------------------------------
    @staticmethod
    def _settings(info: StepRunInfo) -> KubernetesStepOperatorSettings:
        return info.config.operator_settings or KubernetesStepOperatorSettings()  # type: ignore[return-value]

    def pod_settings(self, info: StepRunInfo) -> KubernetesPodSettings:
        pod = self.config.pod_settings.merged(self._settings(info).pod_settings)
        store_root = self.local_store_root(info)
        if store_root and self.config.mount_local_artifact_store:
            volume = {"name": "conveyor-artifacts", "hostPath": {"path": store_root, "type": "Directory"}}
            mount = {"name": "conveyor-artifacts", "mountPath": store_root}
            pod = pod.merged(KubernetesPodSettings(volumes=[volume], volume_mounts=[mount]))
        return pod

    def _check_store(self, info: StepRunInfo, pod: KubernetesPodSettings) -> None:
        root = self.local_store_root(info)
        if root is None:
            return
        mounted = [str(m.get("mountPath", "")).rstrip("/") for m in pod.volume_mounts]
        if not any(m and (root == m or root.startswith(m + "/")) for m in mounted):
            raise ResourceUnavailableError(
                f"the artifact store is the local directory {root}, which a Kubernetes pod cannot see: use a remote "
                "artifact store (s3), or mount that path into the pod (mount_local_artifact_store=True on a "
                "single-node cluster, or a volume in pod_settings)")

    def deadline(self, info: StepRunInfo) -> int | None:
        """activeDeadlineSeconds: the step timeout, plus the pending timeout (the Job's clock includes scheduling)."""
        if not info.config.timeout:
            return None
        return math.ceil(info.config.timeout) + math.ceil(self.config.pending_timeout or 0)

    def labels(self, info: StepRunInfo, pod: KubernetesPodSettings) -> dict[str, str]:
        ours = {"app.kubernetes.io/managed-by": MANAGED_BY, f"{LABEL_PREFIX}run-id": label_value(info.run_id),
                STEP_RUN_LABEL: label_value(info.step_run_id),
                f"{LABEL_PREFIX}step": label_value(info.pipeline_step_name), f"{LABEL_PREFIX}attempt": str(info.attempt)}
        return {**pod.labels, **{k: v for k, v in ours.items() if v}}

    def render(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str],
               image: str | None = None) -> tuple[dict[str, Any], dict[str, str], str]:
        """(Job manifest, values of the per-job Secret, Secret name)."""
        settings = self._settings(info)
        pod = self.pod_settings(info)
        name = dns1123_name(info.job_name)
        container = self.step_container(info, entrypoint_command, environment)
        env = dict(container.environment)
        cpus = info.config.resource_settings.cpu_count
        if cpus is not None:
            # the container sees every CPU of the node; libraries sizing thread pools from that would thrash
            # against the CPU limit
            env.setdefault("OMP_NUM_THREADS", str(max(1, math.floor(cpus))))
        plain, secret_values = self.split_environment(env)
        secret = secret_name(name)
        full = container.command
        split = 3 if full[1:2] == ["-m"] else 1
        command, args = full[:split], full[split:]
        annotations = {**pod.annotations, f"{LABEL_PREFIX}step-name": info.pipeline_step_name,
                       f"{LABEL_PREFIX}pipeline": info.pipeline.name, f"{LABEL_PREFIX}run-name": info.run_name}
        job = job_manifest(
            name=name, namespace=self.config.kubernetes_namespace, image=image or self.step_image(info, build=False),
            command=command, args=args,
            plain_env=plain, secret=secret if secret_values else None, secret_keys=sorted(secret_values),
            resources=info.config.resource_settings, labels=self.labels(info, pod), annotations=annotations, pod=pod,
            deadline=self.deadline(info), ttl=self.config.ttl_seconds_after_finished,
            service_account=settings.service_account_name or self.config.service_account_name,
            image_pull_secrets=self.config.image_pull_secrets, image_pull_policy=self.config.image_pull_policy,
            env_from_secrets=settings.env_from_secrets, secret_env=settings.secret_env)
        return job, secret_values, secret

    # -- checks -----------------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]] | None:
        """Allocatable resources of every schedulable node; None when we may not list nodes."""
        if self._nodes is not None and time.monotonic() - self._nodes[0] < NODES_TTL_S:
            return self._nodes[1]
        core, _ = self._api()
        try:
            items = core.list_node().items
        except Exception as err:  # noqa: BLE001 - RBAC often forbids it: then the pending timeout has to tell
            if _status(err) in (401, 403, 404):
                self._nodes = (time.monotonic(), None)
                return None
            raise ResourceUnavailableError(f"cannot list the nodes of the Kubernetes cluster: {err}") from None
        nodes = [{"name": n.metadata.name, **dict((n.status.allocatable if n.status else None) or {})} for n in items
                 if not (n.spec and n.spec.unschedulable)]
        self._nodes = (time.monotonic(), nodes)
        return nodes

    def check_resources(self, info: StepRunInfo) -> None:
        self.check_image(info)
        self._check_store(info, self.pod_settings(info))
        r = info.config.resource_settings
        if r.empty or not self.config.check_node_resources:
            return
        nodes = self.nodes()
        if nodes is None:
            return
        step = info.pipeline_step_name
        if not nodes:
            raise ResourceUnavailableError(f"step {step!r}: the Kubernetes cluster has no schedulable node")

        def most(key: str, parse: Any) -> float:
            return max(parse(n[key]) if n.get(key) else 0 for n in nodes)

        def fits(node: dict[str, Any]) -> bool:
            return ((r.cpu_count is None or _cpu(node.get("cpu", "0")) + 1e-9 >= r.cpu_count)
                    and (r.memory_bytes is None or _memory(node.get("memory", "0")) >= r.memory_bytes)
                    and (not r.gpu_count or int(node.get(GPU_RESOURCE, "0")) >= r.gpu_count))

        if any(fits(n) for n in nodes):
            return
        asks = []
        if r.cpu_count is not None and r.cpu_count > most("cpu", _cpu):
            asks.append(f"cpu_count={r.cpu_count:g} (largest node: {most('cpu', _cpu):g} allocatable CPUs)")
        if r.memory_bytes is not None and r.memory_bytes > most("memory", _memory):
            asks.append(f"memory={r.memory} (largest node: {most('memory', _memory) / 2**30:.1f} GiB allocatable)")
        if r.gpu_count and r.gpu_count > most(GPU_RESOURCE, int):
            asks.append(f"gpu_count={r.gpu_count} (largest node: {most(GPU_RESOURCE, int):g} {GPU_RESOURCE})")
        raise ResourceUnavailableError(
            f"step {step!r} asks for {', '.join(asks) or 'this combination of resources'}, more than any node of the "
            "Kubernetes cluster can allocate: the pod would stay Pending forever, so it is not submitted. Lower the "
            "request, or set check_node_resources=False if an autoscaler adds bigger nodes on demand")

    # -- full contract ----------------------------------------------------------------------------
    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        self._check_store(info, self.pod_settings(info))
        job, secret_values, secret = self.render(info, entrypoint_command, environment, self.submit_image(info))
        core, batch = self._api()
        ns = self.config.kubernetes_namespace
        name = job["metadata"]["name"]
        if secret_values:
            body = secret_manifest(secret, ns, job["metadata"]["labels"], secret_values)
            try:
                core.create_namespaced_secret(ns, body)
            except Exception as err:  # noqa: BLE001
                if _status(err) != 409:
                    raise
                core.replace_namespaced_secret(secret, ns, body)
        reattached = False
        try:
            created = batch.create_namespaced_job(ns, job)
        except Exception as err:  # noqa: BLE001
            if _status(err) != 409:
                if secret_values:
                    self._delete_secret(core, secret, ns)
                raise
            # A restarted orchestrator submitting the same attempt: follow the Job already there, never run twice.
            created = batch.read_namespaced_job(name, ns)
            if (created.metadata.labels or {}).get(STEP_RUN_LABEL) != job["metadata"]["labels"][STEP_RUN_LABEL]:
                raise RuntimeError(f"a Job named {name} already exists in namespace {ns} and is not this step's") from None
            reattached = True
        uid = created.metadata.uid
        if secret_values and uid:
            # owned by the Job: if anything outlives us, Kubernetes' garbage collector removes the credentials
            owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}
            core.patch_namespaced_secret(secret, ns, {"metadata": {"ownerReferences": [owner]}})
        return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=f"{ns}/{name}",
                          data={**self._target(), "job": name, "uid": uid, "secret": secret if secret_values else None,
                                "timeout": info.config.timeout, "deadline": job["spec"].get("activeDeadlineSeconds"),
                                "reattached": reattached})

    def _pods(self, core: Any, name: str, ns: str) -> list[Any]:
        pods = core.list_namespaced_pod(ns, label_selector=f"{JOB_NAME_LABEL}={name}").items
        pods = [p for p in pods if (p.metadata.labels or {}).get(JOB_NAME_LABEL) == name]
        return sorted(pods, key=lambda p: str(p.metadata.creation_timestamp or ""))

    def get_status(self, submission: Submission) -> StatusReport:
        data = submission.data
        name, ns = data["job"], data["namespace"]
        core, batch = self._api(data)
        try:
            job = batch.read_namespaced_job(name, ns)
            pods = self._pods(core, name, ns)
        except Exception as err:  # noqa: BLE001 - ApiException, or urllib3 errors while the API server blips
            if _status(err) == 404:
                self._done.add(name)
                if name in self._cancelled:
                    return StatusReport("cancelled", f"Job {name} was deleted")
                return StatusReport("lost", f"Kubernetes no longer knows Job {name} (deleted outside Conveyor?)")
            since = self._unreachable.setdefault(name, time.monotonic())
            if time.monotonic() - since < UNREACHABLE_GRACE_S:
                return StatusReport(self._last.get(name, "queued"), f"cannot reach the Kubernetes API: {err}")  # type: ignore[arg-type]
            self._done.add(name)
            return StatusReport("lost", f"cannot reach the Kubernetes API to follow Job {name} for "
                                f"{UNREACHABLE_GRACE_S:g}s: {err}")
        self._unreachable.pop(name, None)
        report = self._report(name, job, pods[-1] if pods else None, data)
        if report.kind == "pending" and report.state == "failed":
            self.cancel(submission)  # it can never start: take it away rather than leave it pending
        self._last[name] = report.state
        if report.terminal:
            self._done.add(name)
        return report

    def _report(self, name: str, job: Any, pod: Any, data: dict[str, Any]) -> StatusReport:
        if job.metadata.deletion_timestamp:
            return StatusReport("cancelled", f"Job {name} is being deleted")
        conditions = {c.type: c for c in _conditions(job) if c.status == "True"}
        if "Complete" in conditions:
            return StatusReport("completed", exit_code=0)
        failed = conditions.get("Failed")
        # the pod says DeadlineExceeded before the Job controller records its Failed condition: a timeout either way
        pod_deadline = pod is not None and pod.status is not None and pod.status.reason == "DeadlineExceeded"
        if pod_deadline or (failed is not None and failed.reason == "DeadlineExceeded"):
            timeout = data.get("timeout")
            what = f"timed out after {timeout:g}s" if timeout else "timed out"
            return StatusReport("failed", f"{what}: Kubernetes stopped Job {name} at its activeDeadlineSeconds "
                                f"({data.get('deadline')}s)", kind="timeout")
        if pod is not None:
            report = self._pod_report(name, pod)
            if report is not None and (report.terminal or failed is None):
                return report
        if failed is not None:
            return StatusReport("failed", f"Job {name} failed ({failed.reason}): {failed.message or ''}".rstrip(": "))
        if pod is None:
            return StatusReport("queued", f"waiting for the pod of Job {name}")
        return StatusReport("queued", f"pod {pod.metadata.name} is {pod.status.phase if pod.status else 'Pending'}")

    @staticmethod
    def _container(pod: Any) -> Any:
        for status in pod.status.container_statuses or []:
            if status.name == CONTAINER:
                return status
        return None

    def _pod_report(self, name: str, pod: Any) -> StatusReport | None:
        if pod.status is None:
            return None
        phase = pod.status.phase
        container = self._container(pod)
        state = container.state if container is not None else None
        pod_name = pod.metadata.name
        if phase == "Pending":
            waiting = state.waiting if state is not None else None
            if waiting is not None and waiting.reason in NEVER_STARTS:
                return StatusReport("failed", f"pod {pod_name} of Job {name} can never start: {waiting.reason}: "
                                    f"{waiting.message or ''}".rstrip(": "), kind="pending")
            for cond in _conditions(pod):
                if cond.type == "PodScheduled" and cond.status == "False":
                    return StatusReport("queued", f"pod {pod_name} cannot be scheduled ({cond.reason}): {cond.message}")
            reason = waiting.reason if waiting is not None else "Pending"
            return StatusReport("queued", f"pod {pod_name}: {reason}")
        if phase == "Running":
            return StatusReport("running")
        terminated = state.terminated if state is not None else None
        code = terminated.exit_code if terminated is not None else None
        if phase == "Succeeded":
            return StatusReport("completed", exit_code=code if code is not None else 0)
        if phase == "Failed":
            reason = pod.status.reason or ""
            if reason in ("Evicted", "Preempting", "Shutdown", "NodeLost", "Terminated"):
                return StatusReport("preempted", f"pod {pod_name} of Job {name}: {reason}: {pod.status.message or ''}"
                                    .rstrip(": "), exit_code=code)
            if terminated is not None and terminated.reason == "OOMKilled":
                return StatusReport("failed", f"{MEMORY_ADVICE} (Kubernetes OOM-killed pod {pod_name} at its memory "
                                    "limit)", exit_code=code, kind="memory")
            detail = f"{terminated.reason or 'Error'}, exit code {code}" if terminated is not None else reason or "Failed"
            return StatusReport("failed", f"pod {pod_name} of Job {name} failed ({detail})", exit_code=code)
        return None

    def cancel(self, submission: Submission) -> None:
        data = submission.data
        name, ns = data.get("job"), data.get("namespace")
        if not name or not ns:
            return
        core, batch = self._api(data)
        self._cancelled.add(name)
        try:
            job = batch.read_namespaced_job(name, ns)
            conditions = {c.type for c in _conditions(job) if c.status == "True"}
            if not conditions & {"Complete", "Failed"}:
                from kubernetes import client

                # Foreground: the Job goes only once its pod is gone, so "deleted" means nothing is left running
                batch.delete_namespaced_job(name, ns, body=client.V1DeleteOptions(propagation_policy="Foreground"))
        except Exception as err:  # noqa: BLE001 - idempotent: already gone is fine
            if _status(err) != 404:
                raise
        if data.get("secret"):
            self._delete_secret(core, data["secret"], ns)
        deadline = time.monotonic() + self.config.stop_timeout
        while time.monotonic() < deadline:
            try:
                job = batch.read_namespaced_job(name, ns)
                conditions = {c.type for c in _conditions(job) if c.status == "True"}
                if conditions & {"Complete", "Failed"} and not job.metadata.deletion_timestamp:
                    break
            except Exception as err:  # noqa: BLE001
                if _status(err) != 404:
                    raise
                if not self._pods(core, name, ns):
                    break
            time.sleep(0.1)
        self._done.add(name)

    @staticmethod
    def _delete_secret(core: Any, secret: str, ns: str) -> None:
        try:
            core.delete_namespaced_secret(secret, ns)
        except Exception as err:  # noqa: BLE001
            if _status(err) != 404:
                raise

    def cleanup(self, submission: Submission) -> None:
        """The credentials are needed only while the pod runs: remove them as soon as the step has ended."""
        data = submission.data
        if data.get("secret") and data.get("namespace"):
            try:
                self._delete_secret(self._api(data)[0], data["secret"], data["namespace"])
            except Exception:  # noqa: BLE001 - the Job owns it: Kubernetes removes it with the Job anyway
                pass
        name = data.get("job", "")
        for table in (self._unreachable, self._last):
            table.pop(name, None)
        self._done.discard(name)
        self._cancelled.discard(name)

    # -- logs -------------------------------------------------------------------------------------
    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        data = submission.data
        name, ns = data["job"], data["namespace"]
        core, batch = self._api(data)
        asked = [0.0, False]

        def finished() -> bool:
            """The status poll usually knows first; ask ourselves only now and then (e.g. another process)."""
            if name in self._done:
                return True
            if time.monotonic() - asked[0] > 1.0:
                asked[0] = time.monotonic()
                try:
                    job = batch.read_namespaced_job(name, ns)
                    asked[1] = any(c.status == "True" and c.type in ("Complete", "Failed")
                                   for c in _conditions(job))
                except Exception as err:  # noqa: BLE001
                    asked[1] = _status(err) == 404
            return bool(asked[1])

        sent = 0
        while True:
            done = finished()
            try:
                pods = self._pods(core, name, ns)
            except Exception:  # noqa: BLE001
                pods = []
            pod = pods[-1] if pods else None
            started = pod is not None and pod.status is not None and pod.status.phase not in (None, "Pending")
            if not started:
                if done or not follow:
                    return
                time.sleep(0.2)
                continue
            pod_name = pod.metadata.name
            try:
                if not follow or pod.status.phase in ("Succeeded", "Failed"):
                    # raw bytes: some client versions turn a plain-text body into "b'...'"
                    raw = core.read_namespaced_pod_log(pod_name, ns, container=CONTAINER, _preload_content=False)
                    text = raw.data.decode("utf-8", "replace")
                    if len(text) > sent:
                        yield text[sent:]
                    return
                seen = 0
                decoder = codecs.getincrementaldecoder("utf-8")("replace")
                resp = core.read_namespaced_pod_log(pod_name, ns, container=CONTAINER, follow=True,
                                                    _preload_content=False)
                try:
                    for chunk in resp.stream(4096):
                        text = decoder.decode(chunk)
                        new = text[max(0, sent - seen):]
                        seen += len(text)
                        if new:
                            sent += len(new)
                            yield new
                finally:
                    resp.release_conn()
            except Exception as err:  # noqa: BLE001 - the pod went away, or the connection dropped
                if _status(err) not in (None, 400, 404):
                    raise
            # the stream ended: the container exited (one more pass reads what is left) or the connection dropped
            if finished():
                follow = False
            time.sleep(0.1)

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        job, secret_values, secret = self.render(info, entrypoint_command, environment)
        manifests = [job]
        if secret_values:
            manifests.insert(0, secret_manifest(secret, self.config.kubernetes_namespace, job["metadata"]["labels"],
                                                secret_values, redact=True))
        return {"flavor": self.flavor, "job_name": info.job_name, "namespace": self.config.kubernetes_namespace,
                "manifests": manifests}
