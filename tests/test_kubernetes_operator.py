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
                     "OMP_NUM_THREADS"}


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


def test_names_and_quantities() -> None:
    long = "conveyor-" + "x" * 80 + "-12"
    for raw in ("conveyor-0123456789abcdef-1", long, "Conveyor_Step.Name-1", "---"):
        name = dns1123_name(raw)
        assert is_dns1123(name), (raw, name)
    assert dns1123_name("conveyor-0123456789abcdef-1") == "conveyor-0123456789abcdef-1"
    assert dns1123_name(long) != dns1123_name(long[:-1] + "3")  # shortened names stay distinct
    assert [cpu_quantity(c) for c in (1, 2.0, 0.5, 1.2345)] == ["1", "2", "500m", "1235m"]
    assert [memory_quantity(b) for b in (2**30, 200 * 10**6, 1536 * 2**20, 1001)] == ["1Gi", "200M", "1536Mi", "1001"]


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
