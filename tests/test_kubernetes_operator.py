"""What only the Kubernetes flavor does (the shared contract is in conformance/).

No Kubernetes API server can run on this machine, so: the manifests are checked against the official OpenAPI
schemas of several Kubernetes versions (kubernetes-validate --strict), and the lifecycle runs through the official
client against kmock's in-memory API emulator, whose pods a test-side kubelet really runs in Podman
(tests/fixtures/kube_emulator.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from testkit import wait_until
import yaml

from conveyor import pipeline, step
from conveyor.context import get_context
from conveyor.execution.launcher import build_step_info, entrypoint_request
from conveyor.execution.run import dry_run
from conveyor.step_operators.kubernetes.manifest import cpu_quantity, dns1123_name, is_dns1123, memory_quantity

#: schema versions kubernetes-validate ships: the oldest, some in between, the newest
SCHEMA_VERSIONS = ["1.25.0", "1.29.0", "1.32.0", "1.37.0"]
IMAGE = "registry.example/ml/conveyor:1.0"


@step
def train(n: int = 1) -> int:
    return n


def _render(settings: dict[str, Any] | None = None, timeout: Any = None, extra_env: dict[str, str] | None = None,
            step_name: str = "train", **config: Any) -> dict[str, Any]:
    """The manifests dry_run / submit would send for one step (no cluster contacted)."""
    from testkit import add_step_operator

    add_step_operator("k8s", "kubernetes", **{"image": IMAGE, **config})
    options: dict[str, Any] = {"step_operator": "k8s", "settings": settings or {}}
    if timeout is not None:
        options["timeout"] = timeout

    @pipeline(enable_cache=False)
    def p():
        train.with_options(**options)()

    snapshot = p.compile()
    if not extra_env:
        return dry_run(snapshot, "train")
    stack = get_context().load_stack()
    operator = stack.step_operator("k8s")
    info = build_step_info(stack, snapshot, "train", operator, run_id="r" * 32, run_name="run-1",
                           step_run_id="0123456789abcdef" * 2, attempt=3, attempt_uri="s3://bucket/runs/x/steps/train/attempt-3")
    command, environment = entrypoint_request(info, stack.artifact_store)
    return operator.dry_run(info, command, {**environment, **extra_env})


def _job(request: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in request["manifests"] if m["kind"] == "Job")


def _container(request: dict[str, Any]) -> dict[str, Any]:
    return _job(request)["spec"]["template"]["spec"]["containers"][0]


POD = {"node_selectors": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
       "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
           {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]}}},
       "labels": {"team": "ml"}, "annotations": {"cost-center": "42"},
       "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}},
                   {"name": "shm", "emptyDir": {"medium": "Memory"}}],
       "volume_mounts": [{"name": "data", "mountPath": "/data", "readOnly": True}, {"name": "shm", "mountPath": "/dev/shm"}]}

COMBOS: dict[str, dict[str, Any]] = {
    "bare": {},
    "resources": {"settings": {"resources": {"cpu_count": 1.5, "memory": "3GiB", "gpu_count": 2}}, "timeout": "2h"},
    "pod-settings": {"pod_settings": POD, "service_account_name": "trainer", "image_pull_secrets": ["regcred"],
                     "image_pull_policy": "IfNotPresent", "ttl_seconds_after_finished": 600},
    "step-overrides": {"settings": {"resources": {"memory": "200MB"}, "step_operator.kubernetes": {
        "image": "other/image:2", "service_account_name": "special", "env_from_secrets": ["wandb"],
        "secret_env": {"HF_TOKEN": "hf/token"}, "pod_settings": {"labels": {"priority": "high"}}}},
        "pending_timeout": "5m", "timeout": 90},
    "secrets": {"extra_env": {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value-81f2"},
                "settings": {"resources": {"cpu_count": 4}}},
}


@pytest.mark.parametrize("combo", list(COMBOS))
def test_every_manifest_validates_strictly_against_several_kubernetes_versions(combo: str, tmp_path: Path) -> None:
    request = _render(**COMBOS[combo])
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(request["manifests"]))
    args = [a for v in SCHEMA_VERSIONS for a in ("-k", v)]
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", *args, str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # a kind without a schema is only a WARN with exit 0: every manifest must really have been checked
    assert "WARN" not in proc.stdout and "ERROR" not in proc.stdout, proc.stdout
    passed = [line for line in proc.stdout.splitlines() if line.startswith("INFO") and "passed" in line]
    assert len(passed) == len(request["manifests"]) * len(SCHEMA_VERSIONS), proc.stdout


def test_a_typo_in_a_manifest_fails_strict_validation(tmp_path: Path) -> None:
    """Without --strict, unknown fields pass: the check above would be worthless if strict mode did not bite."""
    request = _render(pod_settings={"tolerations": [{"key": "nvidia.com/gpu", "operater": "Exists"}]})
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump_all(request["manifests"]))
    loose = subprocess.run([sys.executable, "-m", "kubernetes_validate", str(path)], capture_output=True, text=True)
    strict = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", str(path)],
                            capture_output=True, text=True)
    assert loose.returncode == 0, loose.stdout  # the reason the other test uses --strict
    assert strict.returncode != 0 and "operater" in strict.stdout, strict.stdout


def test_the_job_manifest_says_what_conveyor_needs() -> None:
    request = _render(settings={"resources": {"cpu_count": 0.5, "memory": "1GiB", "gpu_count": 1}}, timeout="10m",
                      pending_timeout="2m", pod_settings={"labels": {"team": "ml"}})
    job = _job(request)
    spec = job["spec"]
    assert spec["backoffLimit"] == 0  # Conveyor owns retries
    assert spec["activeDeadlineSeconds"] == 600 + 120  # step timeout plus the time it may wait to be scheduled
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    name = job["metadata"]["name"]
    assert is_dns1123(name) and name == request["job_name"]
    resources = _container(request)["resources"]
    assert resources == {"requests": {"cpu": "500m", "memory": "1Gi"},
                         "limits": {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"}}
    assert all(isinstance(v, str) for part in resources.values() for v in part.values())
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "conveyor" and labels["team"] == "ml"
    assert labels["conveyor.dev/step"] == "train" and labels["conveyor.dev/attempt"] == "1"
    assert spec["template"]["metadata"]["labels"] == labels
    container = _container(request)
    assert container["command"] == ["python3", "-m", "conveyor.entrypoints.step_operator"]
    assert container["args"][:2] == ["--job", container["args"][1]] and container["args"][1].endswith("/job.json")
    env = {e["name"]: e for e in container["env"]}
    assert env["OMP_NUM_THREADS"]["value"] == "1" and env["CONVEYOR_STEP_NAME"]["value"] == "train"


def test_credentials_travel_as_secret_references_never_as_plain_values() -> None:
    secret_value = "s3cr3t-value-81f2"
    request = _render(**COMBOS["secrets"])
    secret, job = request["manifests"]
    assert secret["kind"] == "Secret" and secret_value not in json.dumps(request)  # dry run shows names only
    env = {e["name"]: e for e in _container(request)["env"]}
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[var]
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": var}
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    plain = {k for k, e in env.items() if "value" in e}
    assert plain <= {"CONVEYOR_RUN_ID", "CONVEYOR_STEP_RUN_ID", "CONVEYOR_STEP_NAME", "CONVEYOR_CODE_CACHE",
                     "OMP_NUM_THREADS", "PYTHONUNBUFFERED"}


def test_step_settings_override_and_extend_the_operator_config() -> None:
    request = _render(**COMBOS["step-overrides"], pod_settings={"labels": {"team": "ml"}, "node_selectors": {"a": "1"}})
    job = _job(request)
    pod = job["spec"]["template"]["spec"]
    container = _container(request)
    assert container["image"] == "other/image:2" and pod["serviceAccountName"] == "special"
    assert job["metadata"]["labels"]["team"] == "ml" and job["metadata"]["labels"]["priority"] == "high"
    assert pod["nodeSelector"] == {"a": "1"}
    assert container["envFrom"] == [{"secretRef": {"name": "wandb"}}]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert container["resources"]["limits"]["memory"] == "200M"
    assert job["spec"]["activeDeadlineSeconds"] == 90 + 300


def test_the_image_comes_from_docker_settings_prebuilt_or_built_by_content_hash() -> None:
    from conveyor.images.build import plan_image
    from conveyor.images.settings import DockerSettings

    prebuilt = _render(settings={"docker": {"image": "team/prebuilt:3", "python": "/opt/venv/bin/python"}})
    assert _container(prebuilt)["image"] == "team/prebuilt:3"
    assert _container(prebuilt)["command"][0] == "/opt/venv/bin/python"
    docker = {"parent_image": "python:3.11-slim", "requirements": ["scikit-learn"], "pip_source": "index"}
    built = _render(settings={"docker": docker})
    tag = plan_image(DockerSettings(**docker)).tag
    assert _container(built)["image"] == tag and tag.startswith("localhost/conveyor-step:")
    own = _render(settings={"docker": docker, "step_operator.kubernetes": {"image": "mine:1"}})
    assert _container(own)["image"] == "mine:1"  # the step's own image wins, nothing is built


def test_names_and_quantities() -> None:
    long = "conveyor-" + "x" * 80 + "-12"
    for raw in ("conveyor-0123456789abcdef-1", long, "Conveyor_Step.Name-1", "---"):
        name = dns1123_name(raw)
        assert is_dns1123(name), (raw, name)
    assert dns1123_name("conveyor-0123456789abcdef-1") == "conveyor-0123456789abcdef-1"
    assert dns1123_name(long) != dns1123_name(long[:-1] + "3")  # shortened names stay distinct
    assert [cpu_quantity(c) for c in (1, 2.0, 0.5, 1.2345)] == ["1", "2", "500m", "1235m"]
    assert [memory_quantity(b) for b in (2**30, 200 * 10**6, 1536 * 2**20, 1001, 32 * 10**9)] == ["1Gi", "200M", "1536Mi", "1001", "32G"]


def test_a_step_without_an_image_or_with_an_unreachable_local_store_is_refused_before_submission() -> None:
    from conveyor.exceptions import ResourceUnavailableError
    from testkit import add_step_operator

    add_step_operator("k8s", "kubernetes")

    @pipeline(enable_cache=False)
    def p():
        train.with_options(step_operator="k8s")()

    with pytest.raises(ResourceUnavailableError, match="needs an image"):
        p()
    add_step_operator("k8s", "kubernetes", image=IMAGE, check_node_resources=False)
    stack = get_context().load_stack()
    operator = stack.step_operator("k8s")
    info = build_step_info(stack, p.compile(), "train", operator, run_id="r", run_name="r", step_run_id="s" * 16,
                           attempt=1, attempt_uri="/srv/store/runs/r/steps/train/attempt-1")
    with pytest.raises(ResourceUnavailableError, match="local directory /srv/store"):
        operator.check_resources(info)
    add_step_operator("k8s", "kubernetes", image=IMAGE, mount_local_artifact_store=True)
    operator = get_context().load_stack().step_operator("k8s")
    job, _, _ = operator.render(info, ["python", "-m", "m"], {})
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "conveyor-artifacts", "hostPath": {"path": "/srv/store", "type": "Directory"}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "conveyor-artifacts", "mountPath": "/srv/store"}]


def test_config_typos_are_errors_listing_the_valid_fields() -> None:
    from conveyor.exceptions import ConfigError
    from testkit import add_step_operator

    with pytest.raises(ConfigError, match="kubernetes_namespace"):
        add_step_operator("k8s", "kubernetes", kubernetes_namepsace="ml")
    with pytest.raises(ConfigError, match="unknown field .pod_settings.volume_mount."):
        add_step_operator("k8s", "kubernetes", pod_settings={"volume_mount": []})


def test_importing_the_flavor_loads_no_kubernetes_client() -> None:
    code = ("import sys; import conveyor.step_operators.kubernetes.flavor, conveyor.step_operators.kubernetes.manifest; "
            "print('kubernetes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ}).stdout.strip()
    assert out == "False"



def test_a_pod_stopped_at_its_deadline_is_a_timeout_even_before_the_job_says_so() -> None:
    """The pod's status says DeadlineExceeded a moment before the Job controller records its Failed condition: a
    poll in between must still report a timeout, not a crash (the emulator hit this window under load)."""
    from kubernetes import client

    from conveyor.step_operators.kubernetes.operator import KubernetesStepOperator

    job = client.V1Job(metadata=client.V1ObjectMeta(name="conveyor-x-1"), status=client.V1JobStatus(active=1))
    terminated = client.V1ContainerStateTerminated(exit_code=137, reason="Error")
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="conveyor-x-1-abcde"), status=client.V1PodStatus(
        phase="Failed", reason="DeadlineExceeded", message="Pod was active on the node longer than the deadline",
        container_statuses=[client.V1ContainerStatus(
            name="step", image="i", image_id="", ready=False, restart_count=0,
            state=client.V1ContainerState(terminated=terminated))]))
    report = KubernetesStepOperator._report(object.__new__(KubernetesStepOperator), "conveyor-x-1", job, pod,
                                            {"timeout": 2, "deadline": 2})
    assert (report.state, report.kind) == ("failed", "timeout")
    assert "timed out after 2s" in report.message

# -- lifecycle on the emulated API server, pods run by the Podman kubelet -----------------------------------
from conveyor import Client  # noqa: E402
from conveyor.exceptions import RunFailedError  # noqa: E402
from conveyor.step_operators.info import Submission  # noqa: E402
from kubernetes_steps import double, hog, make, nap, remote_sum  # noqa: E402


@pytest.fixture
def k8s(kube_cluster, podman_step_image: str, tmp_path: Path) -> Any:
    """A `k8s` operator on the emulated cluster; the test's tmp_path (holding the project and its local artifact
    store) is mounted into every pod."""
    _register(kube_cluster, podman_step_image)
    kube_cluster.step_image = podman_step_image
    return kube_cluster


def _register(cluster: Any, image: str, **extra: Any) -> None:
    from testkit import add_step_operator

    add_step_operator("k8s", "kubernetes", kubeconfig=str(cluster.kubeconfig), image=image, poll_interval=0.2,
                      mount_local_artifact_store=True, stop_timeout=30, **extra)


def _job_of(cluster: Any, step_run: Any) -> dict[str, Any] | None:
    name = step_run.submission["data"]["job"]
    return next((j for j in cluster.jobs() if j["metadata"]["name"] == name), None)


def test_a_step_runs_as_a_job_and_its_outputs_reach_the_next_step(k8s: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.execution import launcher

    token = "tok-81f2-secret"
    real = launcher.entrypoint_request

    def with_token(info: Any, store: Any, *rest: Any) -> Any:  # stands in for an artifact store credential
        command, env = real(info, store, *rest)
        return command, {**env, "API_TOKEN": token}

    monkeypatch.setattr(launcher, "entrypoint_request", with_token)

    @pipeline(enable_cache=False)
    def p():
        total, seen = remote_sum.with_options(step_operator="k8s", settings={
            "resources": {"cpu_count": 1, "memory": "300MiB"}})(make(5))
        double(total)

    run = p()
    step_run = run.steps["remote_sum"]
    assert step_run.status == "completed"
    assert step_run.outputs["output_0"].load() == 10 and step_run.outputs["output_1"].load() == token
    assert run.steps["double"].outputs["output"].load() == 20
    assert "summing 5 values" in step_run.logs()
    job = _job_of(k8s, step_run)
    assert job is not None and job["spec"]["backoffLimit"] == 0
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert token not in json.dumps(job)  # a secretKeyRef, never the value
    env = {e["name"]: e for e in container["env"]}
    secret = env["API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
    assert secret not in {s["metadata"]["name"] for s in k8s.secrets()}, "the per-job Secret outlived the step"
    pod_run = next(r for r in k8s.runs.values() if r.job == job["metadata"]["name"])
    assert pod_run.create_kwargs["mem_limit"] == 300 * 2**20 and pod_run.create_kwargs["nano_cpus"] == 10**9
    assert pod_run.exit_code == 0


def test_an_oom_killed_pod_is_a_memory_failure_with_advice(k8s: Any) -> None:
    @pipeline(enable_cache=False)
    def p():
        hog.with_options(step_operator="k8s", settings={"resources": {"memory": "150MB"}})(megabytes=500)

    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["hog"]
    assert step_run.failure_kind == "memory", step_run.error
    assert "killed for memory: raise ResourceSettings(memory=...)" in step_run.error
    assert "OOM-killed" in step_run.error


def test_an_image_that_cannot_be_pulled_fails_at_once(k8s: Any) -> None:
    import time as _time

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="k8s", settings={
            "step_operator.kubernetes": {"image": "localhost/conveyor-test/no-such-image:0"}})(seconds=1)

    started = _time.monotonic()
    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["nap"]
    assert step_run.failure_kind == "pending", step_run.error
    assert "ErrImagePull" in step_run.error or "ImagePullBackOff" in step_run.error
    assert _time.monotonic() - started < 60  # no pending_timeout is set: without the fast path it would wait forever
    assert _job_of(k8s, step_run) is None  # taken away, not left pending


def test_an_unschedulable_pod_fails_after_the_pending_timeout(k8s: Any) -> None:
    # long enough for the kubelet to create and mark the pod on a loaded machine, so the reason is the scheduler's
    _register(k8s, k8s.step_image, pending_timeout="8s", check_node_resources=False)

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="k8s", settings={"resources": {"gpu_count": 1}})(seconds=1)

    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["nap"]
    assert step_run.failure_kind == "pending", step_run.error
    assert "Unschedulable" in step_run.error and "Insufficient nvidia.com/gpu" in step_run.error
    assert _job_of(k8s, step_run) is None
    assert k8s.containers(step_run.id, all=True) == []  # never ran


def test_a_gpu_request_no_node_can_hold_is_refused_before_submission(k8s: Any) -> None:
    from conveyor.exceptions import ResourceUnavailableError

    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="k8s", settings={"resources": {"gpu_count": 1}})(seconds=1)

    with pytest.raises(ResourceUnavailableError, match="gpu_count=1"):
        p()
    assert Client().list_pipeline_runs() == []


def _operator_and_info(tmp_path: Path) -> tuple[Any, Any]:
    @pipeline(enable_cache=False)
    def p():
        nap.with_options(step_operator="k8s")(seconds=1)

    stack = get_context().load_stack()
    operator = stack.step_operator("k8s")
    attempt = tmp_path / "project" / ".conveyor" / "artifacts" / "runs" / "r1" / "steps" / "nap" / "attempt-1"
    attempt.mkdir(parents=True, exist_ok=True)
    info = build_step_info(stack, p.compile(), "nap", operator, run_id="r1", run_name="r1",
                           step_run_id=os.urandom(8).hex() * 2, attempt=1, attempt_uri=str(attempt))
    return operator, info


def test_cancel_deletes_the_job_in_the_foreground_and_the_container_is_gone(k8s: Any, tmp_path: Path) -> None:
    operator, info = _operator_and_info(tmp_path)
    sleeper = ["python3", "-c", "import time; print('sleeping', flush=True); time.sleep(300)"]
    submission = operator.submit(info, sleeper, {"CONVEYOR_STEP_NAME": "nap", "SECRET_THING": "x"})
    wait_until(lambda: operator.get_status(submission).state == "running", what="the pod to run")
    wait_until(lambda: k8s.containers(info.step_run_id) != [], what="the container to run")
    logs = operator.logs(submission, follow=True)
    assert "sleeping" in next(logs)
    operator.cancel(submission)
    assert {"resource": "jobs", "namespace": "default", "name": submission.data["job"],
            "propagationPolicy": "Foreground"} in k8s.deletions
    assert _job_of_name(k8s, submission.data["job"]) is None, "cancel returns once the Job is gone"
    assert k8s.containers(info.step_run_id, all=True) == []
    assert operator.get_status(submission).state == "cancelled"
    assert submission.data["secret"] not in {s["metadata"]["name"] for s in k8s.secrets()}
    operator.cancel(submission)  # idempotent
    assert list(logs) == []


def _job_of_name(cluster: Any, name: str) -> dict[str, Any] | None:
    return next((j for j in cluster.jobs() if j["metadata"]["name"] == name), None)


def test_a_restarted_orchestrator_reattaches_by_job_name_and_follows_from_the_receipt(k8s: Any, tmp_path: Path) -> None:
    operator, info = _operator_and_info(tmp_path)
    short = ["python3", "-c", "import time; time.sleep(2); print('done', flush=True)"]
    first = operator.submit(info, short, {})
    again = operator.submit(info, short, {})  # what a restarted orchestrator's launcher would do
    assert again.data["reattached"] and not first.data["reattached"]
    assert [j["metadata"]["name"] for j in k8s.jobs()].count(first.data["job"]) == 1
    fresh = get_context().load_stack().step_operator("k8s")  # another process: nothing but the stored receipt
    receipt = Submission.from_json(json.loads(json.dumps(first.to_json())))
    wait_until(lambda: fresh.get_status(receipt).terminal, what="the job to end")
    assert fresh.get_status(receipt).state == "completed"
    assert "done" in "".join(fresh.logs(receipt, follow=False))
    assert len([r for r in k8s.runs.values() if r.job == first.data["job"]]) == 1, "the job ran twice"
    fresh.cleanup(receipt)
