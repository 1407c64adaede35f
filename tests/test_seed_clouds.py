"""The seeds' cloud setups, as written (issue 17 §3).

ZenML's step-operator page (the seeds, shared/seeds/004_*.txt beside the repository) registers five cloud step
operators and shows an example step for each. Each test here:

- runs the seed's registration command through the real `conveyor` CLI, word for word but `zenml` → `conveyor`;
  where the seed names a real cloud endpoint or account, the suite's backend is reached through the flavor's
  documented override only (a later `conveyor step-operator update`, or the environment the SDK reads), named at
  each test;
- adds the suite's container registry (tests/fixtures/registry.py) and the artifact store the seed asks for to a
  stack, as a user does (`conveyor container-registry register`, `conveyor artifact-store register`, `conveyor
  stack register ... --set`);
- runs the seed's example code as a user script in a subprocess: the seed's lines verbatim but for the imports;
  only what the seed leaves undefined (`Model`, `Data`, `train_on_gpu`, ...) is written around it;
- asserts the step completed on the backend with an image pulled from the registry by digest, and that its
  `ResourceSettings` and flavor settings reached the backend as the flavor's docs page says.

The backends are the suite's: the Kubernetes API emulator with its Podman kubelet, moto's SageMaker with the Podman
training runner, the Vertex AI and Azure ML REST fakes with their Podman workers; Modal at its SDK boundary (no Modal
is reachable: see `test_modal_seed`). None of them has a GPU: where the seed asks for one, the test gives the backend
a node (or a capacity) that says it has one, and the container runs without it.
"""

from __future__ import annotations

import json
import os
import shlex
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import run_python

#: what the seeds leave undefined around their example steps (`Model`, `Data`, the training calls): written here
#: as a user would, so the example lines themselves stay as the seed writes them. A "model" says where it was made.
USER_HELPERS = '''
import os
import platform

Model = dict
Data = list


def load_and_preprocess() -> list:
    return [1.0, 2.0, 3.0]


def _where(data) -> dict:
    return {"sum": sum(data), "host": platform.node(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "in_container": os.path.exists("/run/.containerenv") or os.path.exists("/.dockerenv")}


train_on_gpu = train_large_model = distributed_training = train = _where
'''


def _seed_command(conveyor_cli: Callable[..., Any], command: str) -> Any:
    """Run a seed's `zenml ...` command (backslash continuations and all) as `conveyor ...`."""
    words = shlex.split(textwrap.dedent(command).replace("\\\n", " "))
    assert words[0] == "zenml", words
    return conveyor_cli(*words[1:])


def _stack(conveyor_cli: Callable[..., Any], operators: list[str], store: str, registry: str) -> None:
    conveyor_cli("stack", "register", "seed", "-o", "default", "-a", store, "-c", registry,
                 *[w for op in operators for w in ("-s", op)], "--set")


def _registry(conveyor_cli: Callable[..., Any], server: Any) -> str:
    """The suite's registry, registered as the container registry docs page says. One namespace for these tests:
    an image another test pushed is found there (one manifest HEAD), as on a team's registry."""
    namespace = "seeds"
    conveyor_cli("container-registry", "register", "images", "--flavor=default", f"--uri={server.host}/{namespace}",
                 "--insecure=true")
    return namespace


def _s3_store(conveyor_cli: Callable[..., Any], bucket: str, endpoint_url: str) -> None:
    conveyor_cli("artifact-store", "register", "cloud_store", "--flavor=s3", f"--path=s3://{bucket}/conveyor",
                 f"--endpoint_url={endpoint_url}")


def _script(seed_code: str, main: str) -> str:
    return USER_HELPERS + textwrap.dedent(seed_code) + "\n\nif __name__ == '__main__':\n" + textwrap.indent(
        textwrap.dedent(main), "    ")


def _pulled(server: Any, namespace: str) -> list[str]:
    from fixtures.registry import PULLS

    return [p for p in PULLS if p.startswith(f"{server.host}/{namespace}/") and "@sha256:" in p]


def _in_registry(server: Any, repository: str, digest: str) -> bool:
    import urllib.request

    request = urllib.request.Request(f"{server.url}/v2/{repository}/manifests/{digest}", method="HEAD", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status == 200


RUN_REPORT = '''
run = {pipeline}()
print("RESULT", json.dumps({{"status": str(run.status), "steps": {{
    name: {{"status": str(s.status), "output": s.outputs["output"].load() if s.outputs else None,
           "digest": s.attempts[-1].image_digest if s.attempts else None}}
    for name, s in run.steps.items()}}}}))
'''


def _result(stdout: str) -> dict[str, Any]:
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, stdout
    return json.loads(line[-1].removeprefix("RESULT "))


# -- Kubernetes ------------------------------------------------------------------------------------------------
K8S_REGISTER = """
zenml step-operator register k8s_step_operator --flavor=kubernetes \\
  --kubernetes_context=my-context \\
  --kubernetes_namespace=zenml
"""

# the seed's example, verbatim but for its two import lines
K8S_EXAMPLE = '''
from conveyor import step, pipeline
from conveyor.config import ResourceSettings

@step(
    step_operator="k8s_step_operator",
    settings={
        "resources": ResourceSettings(
            cpu_count=8,
            memory="32GB",
            gpu_count=1,
        )
    },
)
def gpu_training_step(data) -> Model:
    # This step runs on Kubernetes with GPU
    model = train_on_gpu(data)
    return model

@step
def preprocessing_step() -> Data:
    # This step runs on the orchestrator
    data = load_and_preprocess()
    return data

@pipeline
def training_pipeline():
    data = preprocessing_step()
    model = gpu_training_step(data)
'''


def _gpu_node(cluster: Any, allocatable: dict[str, str]) -> Callable[[], None]:
    """Make the emulator's one node (API object and kubelet) offer `allocatable`; returns the undo."""
    from fixtures.kube_emulator import NODE

    kubelet = cluster.kubelet
    before = dict(kubelet.allocatable)

    def offer(values: dict[str, str]) -> None:
        kubelet.allocatable = values
        status = {"capacity": values, "allocatable": values}
        resp = kubelet.http.patch(f"{cluster.url}/api/v1/nodes/{NODE}", json={"status": status}, timeout=10,
                                  headers={"Content-Type": "application/merge-patch+json"})
        resp.raise_for_status()

    offer({**before, **allocatable})
    return lambda: offer(before)


def test_kubernetes_seed(kube_cluster: Any, podman_engine: Any, podman_step_image: str, registry_server: Any,
                         s3_server: Any, s3_bucket: str, conveyor_cli: Callable[..., Any], project: Path,
                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    # `--kubernetes_context=my-context` names a context of the user's kubeconfig ($KUBECONFIG, the documented
    # default): here one whose context `my-context` is the emulator
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kube_cluster.kubeconfig.read_text().replace("name: emulator\n  context:",
                                                                      "name: my-context\n  context:")
                          .replace("current-context: emulator", "current-context: other"))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # the node the seed's step asks for: 8 CPUs, 32 GB and a GPU (the kubelet runs the pod without one)
    request.addfinalizer(_gpu_node(kube_cluster, {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}))

    _seed_command(conveyor_cli, K8S_REGISTER)
    # the image is built from the suite's base image on the suite's Podman (no Docker daemon, no Docker Hub here)
    conveyor_cli("step-operator", "update", "k8s_step_operator", f"--docker_host={podman_engine.docker_host}",
                 "--docker_settings=" + json.dumps({"parent_image": podman_engine.base_image}), "--poll_interval=0.2")
    namespace = _registry(conveyor_cli, registry_server)
    _s3_store(conveyor_cli, s3_bucket, s3_server.endpoint_url)
    _stack(conveyor_cli, ["k8s_step_operator"], "cloud_store", "images")
    seen = {id(r) for r in kube_cluster.kubelet.runs.values()}

    proc = run_python(_script(K8S_EXAMPLE, "import json\n" + RUN_REPORT.format(pipeline="training_pipeline")),
                      project)

    result = _result(proc.stdout)
    assert result["status"] == "completed", result
    model = result["steps"]["gpu_training_step"]["output"]
    assert model["sum"] == 6.0 and model["in_container"] and model["omp"] == "8", model
    digest = result["steps"]["gpu_training_step"]["digest"]
    assert digest and any(p.endswith("@" + digest) for p in _pulled(registry_server, namespace))
    [run] = [r for r in kube_cluster.kubelet.runs.values() if id(r) not in seen]
    assert run.namespace == "zenml"
    container = run.job_manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith("@" + digest)
    # docs/step_operators/kubernetes.md: requests = limits; cpu_count → cpu, memory → memory (an exact quantity:
    # "32GB" is 32 * 10**9 bytes), gpu_count → nvidia.com/gpu in limits
    from fixtures.kube_emulator import _bytes

    limits = container["resources"]["limits"]
    assert (limits["cpu"], _bytes(limits["memory"]), limits["nvidia.com/gpu"]) == ("8", 32 * 10**9, "1"), container
    assert {k: v for k, v in container["resources"]["requests"].items() if k != "nvidia.com/gpu"} == {
        "cpu": "8", "memory": limits["memory"]}, container


# -- SageMaker -------------------------------------------------------------------------------------------------
SAGEMAKER_REGISTER = """
zenml step-operator register sagemaker_step_operator --flavor=sagemaker \\
  --role=arn:aws:iam::123456789012:role/ZenMLSageMaker \\
  --instance_type=ml.p3.2xlarge
"""

SAGEMAKER_EXAMPLE = '''
from conveyor import step
from conveyor.step_operators.sagemaker import (
    SageMakerStepOperatorSettings,
)

sagemaker_settings = SageMakerStepOperatorSettings(
    instance_type="ml.p3.2xlarge",
    max_runtime_in_seconds=3600,
    use_spot_instances=True,
)

@step(
    step_operator="sagemaker_step_operator",
    settings={"step_operator.sagemaker": sagemaker_settings},
)
def train_on_sagemaker(data) -> Model:
    # Runs on SageMaker training instance
    model = train_large_model(data)
    return model
'''

#: the seeds show the SageMaker, Vertex and Modal steps without a pipeline: the user's own, around one of them
ONE_STEP_PIPELINE = '''
from conveyor import pipeline


@pipeline(enable_cache=False)
def seed_pipeline():
    {step}(load_and_preprocess())
'''


def test_sagemaker_seed(sagemaker_cloud: Any, podman_engine: Any, podman_step_image: str, registry_server: Any,
                        conveyor_cli: Callable[..., Any], project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures.sagemaker_runner import CREDENTIALS

    for key, value in CREDENTIALS.items():  # the AWS chain (region us-east-1): what `aws configure` would give
        monkeypatch.setenv(key, value)

    _seed_command(conveyor_cli, SAGEMAKER_REGISTER)
    # the documented endpoint override (moto's SageMaker, Secrets Manager, CloudWatch Logs and S3); the image is
    # built from the suite's base image on the suite's Podman
    conveyor_cli("step-operator", "update", "sagemaker_step_operator", f"--endpoint_url={sagemaker_cloud.endpoint_url}",
                 f"--docker_host={podman_engine.docker_host}",
                 "--docker_settings=" + json.dumps({"parent_image": podman_engine.base_image}), "--poll_interval=0.2")
    namespace = _registry(conveyor_cli, registry_server)
    _s3_store(conveyor_cli, sagemaker_cloud.new_bucket(), sagemaker_cloud.endpoint_url)  # "S3 artifact store"
    _stack(conveyor_cli, ["sagemaker_step_operator"], "cloud_store", "images")
    before = len(sagemaker_cloud.runner.requests)

    proc = run_python(_script(SAGEMAKER_EXAMPLE + ONE_STEP_PIPELINE.format(step="train_on_sagemaker"),
                              "import json\n" + RUN_REPORT.format(pipeline="seed_pipeline")), project)

    result = _result(proc.stdout)
    assert result["status"] == "completed", result
    step_run = result["steps"]["train_on_sagemaker"]
    assert step_run["output"]["sum"] == 6.0 and step_run["output"]["in_container"], step_run
    digest = step_run["digest"]
    assert digest and any(p.endswith("@" + digest) for p in _pulled(registry_server, namespace))
    [sent] = sagemaker_cloud.runner.requests[before:]
    assert sent["AlgorithmSpecification"]["TrainingImage"].endswith("@" + digest)
    assert sent["RoleArn"] == "arn:aws:iam::123456789012:role/ZenMLSageMaker"
    # docs/step_operators/sagemaker.md: the step's instance type, spot training, the runtime as the stopping
    # condition and a spot wait of at least the runtime (default: runtime + 1 h)
    assert sent["ResourceConfig"]["InstanceType"] == "ml.p3.2xlarge"
    assert sent["EnableManagedSpotTraining"] is True
    assert sent["StoppingCondition"]["MaxRuntimeInSeconds"] == 3600
    assert sent["StoppingCondition"]["MaxWaitTimeInSeconds"] >= 3600, sent["StoppingCondition"]


# -- Vertex AI -------------------------------------------------------------------------------------------------
VERTEX_REGISTER = """
zenml step-operator register vertex_step_operator --flavor=vertex \\
  --project=my-gcp-project \\
  --location=us-central1 \\
  --machine_type=n1-standard-4 \\
  --accelerator_type=NVIDIA_TESLA_T4 \\
  --accelerator_count=1
"""

VERTEX_EXAMPLE = '''
from conveyor import step
from conveyor.step_operators.vertex import (
    VertexStepOperatorSettings,
)

vertex_settings = VertexStepOperatorSettings(
    machine_type="n1-standard-8",
    accelerator_type="NVIDIA_TESLA_V100",
    accelerator_count=2,
)

@step(
    step_operator="vertex_step_operator",
    settings={"step_operator.vertex": vertex_settings},
)
def train_on_vertex(data) -> Model:
    # Runs on Vertex AI with 2 V100 GPUs
    model = distributed_training(data)
    return model
'''


def _vertex_has_gpus(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's worker runs a job asking for GPUs as one on a machine that has them (this machine has none:
    the container runs without); what the job asked for stays in the request the fake received."""
    run = fake._run

    def run_with_gpus(job: Any) -> Any:
        job.message.job_spec.worker_pool_specs[0].machine_spec.accelerator_count = 0
        return run(job)

    monkeypatch.setattr(fake, "_run", run_with_gpus)


def _gcs_store(conveyor_cli: Callable[..., Any], emulator: Any) -> Callable[[], dict[str, bytes]]:
    """The seed's "GCS artifact store": a bucket on the suite's fake-gcs-server, its token in a secret."""
    bucket = emulator.new_bucket()
    conveyor_cli("secret", "create", "gcp", "token=ya29.conveyor-seed-test")
    conveyor_cli("artifact-store", "register", "cloud_store", "--flavor=gcs", f"--path=gs://{bucket}/conveyor",
                 f"--endpoint_url={emulator.endpoint_url}", "--project=conveyor-test", "--token={{gcp.token}}")
    return lambda: emulator.objects(bucket)


def test_vertex_seed(vertex_fake: Any, gcs_emulator: Any, podman_engine: Any, registry_server: Any,
                     conveyor_cli: Callable[..., Any], project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _vertex_has_gpus(vertex_fake, monkeypatch)
    _seed_command(conveyor_cli, VERTEX_REGISTER)
    # the documented endpoint overrides (Vertex AI, Secret Manager, Cloud Logging: the fake); the image is built
    # from the suite's base image on the suite's Podman
    conveyor_cli("step-operator", "update", "vertex_step_operator", f"--api_endpoint={vertex_fake.url}",
                 f"--secret_manager_api_endpoint={vertex_fake.url}", f"--logging_api_endpoint={vertex_fake.url}",
                 f"--docker_host={podman_engine.docker_host}",
                 "--docker_settings=" + json.dumps({"parent_image": podman_engine.base_image}), "--poll_interval=0.2",
                 "--log_lag=0.3")
    namespace = _registry(conveyor_cli, registry_server)
    objects = _gcs_store(conveyor_cli, gcs_emulator)
    _stack(conveyor_cli, ["vertex_step_operator"], "cloud_store", "images")
    before = {name for name in vertex_fake.jobs}

    proc = run_python(_script(VERTEX_EXAMPLE + ONE_STEP_PIPELINE.format(step="train_on_vertex"),
                              "import json\n" + RUN_REPORT.format(pipeline="seed_pipeline")), project)

    result = _result(proc.stdout)
    assert result["status"] == "completed", result
    step_run = result["steps"]["train_on_vertex"]
    assert step_run["output"]["sum"] == 6.0 and step_run["output"]["in_container"], step_run
    assert any(name.endswith("/output") or "train_on_vertex" in name for name in objects()), sorted(objects())
    digest = step_run["digest"]
    assert digest and any(p.endswith("@" + digest) for p in _pulled(registry_server, namespace))
    [name] = [n for n in vertex_fake.jobs if n not in before]
    assert name.startswith("projects/my-gcp-project/locations/us-central1/customJobs/"), name
    [body] = [json.loads(b) for method, path, b in vertex_fake.requests
              if method == "POST" and path.endswith("/customJobs") and "train_on_vertex" in b]
    pool = body["jobSpec"]["workerPoolSpecs"][0]
    assert pool["containerSpec"]["imageUri"].endswith("@" + digest)
    # docs/step_operators/vertex.md: the step's settings win over the operator's (n1-standard-4 with one T4); the
    # SDK's REST transport sends the accelerator as its enum number
    from google.cloud.aiplatform_v1 import AcceleratorType

    assert pool["machineSpec"] == {"machineType": "n1-standard-8",
                                   "acceleratorType": AcceleratorType.NVIDIA_TESLA_V100.value,
                                   "acceleratorCount": 2}, pool


# -- Azure ML --------------------------------------------------------------------------------------------------
# the seed's placeholders `<subscription-id>`, `<resource-group>`, `<workspace-name>` filled in as a user does
AZUREML_REGISTER = """
zenml step-operator register azureml_step_operator --flavor=azureml \\
  --subscription_id=00000000-0000-0000-0000-000000000000 \\
  --resource_group=ml \\
  --workspace_name=conveyor-ws \\
  --compute_target_name=gpu-cluster
"""

# the seeds show no Azure ML step: the user's own, written as the seeds write the others
AZUREML_STEP = '''
from conveyor import pipeline, step
from conveyor.config import ResourceSettings


@step(
    step_operator="azureml_step_operator",
    settings={"resources": ResourceSettings(cpu_count=4, memory="16GB", gpu_count=1)},
)
def train_on_azureml(data) -> Model:
    return train_on_gpu(data)


@pipeline(enable_cache=False)
def seed_pipeline():
    train_on_azureml(load_and_preprocess())
'''


def _azure_store(conveyor_cli: Callable[..., Any], azurite: Any) -> Callable[[], dict[str, bytes]]:
    """The seed's "Azure Blob Storage artifact store": a container on the suite's Azurite, its key in a secret."""
    from fixtures.azurite import ACCOUNT, ACCOUNT_KEY

    container = azurite.new_container()
    conveyor_cli("secret", "create", "azure", f"key={ACCOUNT_KEY}")
    conveyor_cli("artifact-store", "register", "cloud_store", "--flavor=azure", f"--path=az://{container}/conveyor",
                 f"--endpoint_url={azurite.endpoint_url}", f"--account_name={ACCOUNT}", "--account_key={{azure.key}}")
    return lambda: azurite.objects(container)


def test_azureml_seed(azureml_fake: Any, azurite: Any, podman_engine: Any, registry_server: Any,
                      conveyor_cli: Callable[..., Any], project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in azureml_fake.env().items():  # the orchestrator's managed identity, trust in the fake's CA
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "AzureCloud")
    # the workspace's compute cluster `gpu-cluster`: one T4 per node (the fake runs its jobs without a GPU)
    monkeypatch.setattr(azureml_fake, "computes", {"gpu-cluster": "Standard_NC8as_T4_v3"})

    _seed_command(conveyor_cli, AZUREML_REGISTER)
    # the documented override of Azure's endpoints (resource manager and Key Vault: the fake), the identity the
    # job's credentials are read with; the image is built from the suite's base image on the suite's Podman
    conveyor_cli("step-operator", "update", "azureml_step_operator", f"--resource_manager_url={azureml_fake.url}",
                 f"--key_vault_url={azureml_fake.vault_url}", "--identity_client_id=conveyor-steps-identity",
                 f"--docker_host={podman_engine.docker_host}",
                 "--docker_settings=" + json.dumps({"parent_image": podman_engine.base_image}), "--poll_interval=0.2")
    namespace = _registry(conveyor_cli, registry_server)
    objects = _azure_store(conveyor_cli, azurite)
    _stack(conveyor_cli, ["azureml_step_operator"], "cloud_store", "images")
    before = set(azureml_fake.jobs)

    proc = run_python(_script(AZUREML_STEP, "import json\n" + RUN_REPORT.format(pipeline="seed_pipeline")), project)

    result = _result(proc.stdout)
    assert result["status"] == "completed", result
    step_run = result["steps"]["train_on_azureml"]
    assert step_run["output"]["sum"] == 6.0 and step_run["output"]["in_container"], step_run
    assert step_run["output"]["omp"] == "4", step_run
    assert any("train_on_azureml" in name for name in objects()), sorted(objects())
    digest = step_run["digest"]
    assert digest and any(p.endswith("@" + digest) for p in _pulled(registry_server, namespace))
    [job] = [j for n, j in azureml_fake.jobs.items() if n not in before]
    # docs/step_operators/azureml.md: a compute target runs the job on that cluster (its size checked against the
    # ResourceSettings before submission), with no serverless instance type
    assert job.properties["computeId"].endswith("/computes/gpu-cluster"), job.properties
    assert "instanceType" not in (job.properties.get("resources") or {}), job.properties


# -- Modal -----------------------------------------------------------------------------------------------------
MODAL_REGISTER = """
zenml step-operator register modal_step_operator --flavor=modal
"""

MODAL_EXAMPLE = '''
from conveyor import step
from conveyor.step_operators.modal import (
    ModalStepOperatorSettings,
)

modal_settings = ModalStepOperatorSettings(
    gpu="any",  # Request any available GPU
    cpu=4.0,
    memory=16384,  # MB
)

@step(
    step_operator="modal_step_operator",
    settings={"step_operator.modal": modal_settings},
)
def train_on_modal(data) -> Model:
    # Runs serverless on Modal with GPU
    model = train(data)
    return model
'''

#: the Modal SDK boundary in the user's interpreter: `modal token new` has no counterpart here (no Modal is
#: reachable), so the operator's one seam to the `modal` module gets the suite's fake (tests/cloud_fakes.py), which
#: records every Sandbox it is asked for and runs its command on this machine. Only the script's own process
#: installs it (the variable is taken out of the environment its children inherit).
MODAL_SEAM = '''
import atexit
import json
import os
import os
import sys

_record = os.environ.pop("SEED_MODAL_RECORD", None)
if _record:
    sys.path.insert(0, os.environ.pop("SEED_TESTS_DIR"))
    from pathlib import Path

    from cloud_fakes import FakeModal

    from conveyor.step_operators.modal.operator import ModalStepOperator

    _fake = FakeModal(Path(_record).parent / "sandboxes")
    ModalStepOperator.sdk_factory = lambda: _fake

    @atexit.register
    def _save() -> None:
        Path(_record).write_text(json.dumps(_fake.received, default=repr))
        _fake.close()
'''


def _modal_seam(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install MODAL_SEAM as the `sitecustomize` of the user's script; returns where it records the Sandboxes."""
    seam = tmp_path / "modal_seam"
    seam.mkdir()
    (seam / "sitecustomize.py").write_text(MODAL_SEAM)
    record = tmp_path / "modal" / "received.json"
    record.parent.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(seam), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SEED_MODAL_RECORD", str(record))
    monkeypatch.setenv("SEED_TESTS_DIR", str(Path(__file__).parent))
    return record


def test_modal_seed(podman_engine: Any, registry_server: Any, s3_server: Any, s3_bucket: str,
                    conveyor_cli: Callable[..., Any], project: Path, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What the SDK boundary cannot show: a Sandbox on Modal's machines (the fake runs the step's command on this
    machine, so the image is pushed but not pulled, and no GPU, CPU or memory is enforced), `modal token new`."""
    _seed_command(conveyor_cli, MODAL_REGISTER)
    # the image is built from the suite's base image on the suite's Podman
    conveyor_cli("step-operator", "update", "modal_step_operator", f"--docker_host={podman_engine.docker_host}",
                 "--poll_interval=0.1")
    namespace = _registry(conveyor_cli, registry_server)
    _s3_store(conveyor_cli, s3_bucket, s3_server.endpoint_url)
    _stack(conveyor_cli, ["modal_step_operator"], "cloud_store", "images")
    record = _modal_seam(tmp_path, monkeypatch)

    # the flavor has no docker_settings of its own: the user's pipeline says what the image is built from
    pipeline = ONE_STEP_PIPELINE.format(step="train_on_modal").replace(
        "@pipeline(enable_cache=False)",
        f"@pipeline(enable_cache=False, settings={{'docker': {{'parent_image': {podman_engine.base_image!r}}}}})")
    proc = run_python(_script(MODAL_EXAMPLE + pipeline, "import json\n" + RUN_REPORT.format(
        pipeline="seed_pipeline")), project)

    result = _result(proc.stdout)
    assert result["status"] == "completed", result
    step_run = result["steps"]["train_on_modal"]
    assert step_run["output"]["sum"] == 6.0, step_run
    digest = step_run["digest"]
    [sandbox] = json.loads(record.read_text())
    assert sandbox["image"] == f"{registry_server.host}/{namespace}/conveyor-step@{digest}", sandbox
    assert _in_registry(registry_server, f"{namespace}/conveyor-step", digest)  # pushed in pre-flight
    # docs/step_operators/modal.md: the settings' gpu, cpu (cores) and memory (MiB) reach Sandbox.create as given
    assert (sandbox.get("gpu"), sandbox.get("cpu"), sandbox.get("memory")) == ("any", 4.0, 16384), sandbox


# -- the seeds' mixed-infrastructure pipeline: SageMaker and Modal steps between in-process ones -----------------
MIXED_HELPERS = '''
Explanations = dict


def load_from_database() -> list:
    return [3.0, 1.0, 2.0]


def clean_and_transform(data: list) -> list:
    return sorted(data)


def explain_model(model: dict, data: list) -> dict:
    return {"explained": model["sum"], "n": len(data), **_where(data)}


SAVED = []
save_to_registry = save_to_database = SAVED.append
'''

MIXED_EXAMPLE = '''
from conveyor import step, pipeline

@step  # Runs on orchestrator
def load_data() -> Data:
    return load_from_database()

@step  # Runs on orchestrator
def preprocess(data: Data) -> Data:
    return clean_and_transform(data)

@step(step_operator="sagemaker_step_operator")  # Runs on SageMaker
def train_model(data: Data) -> Model:
    return train_large_model(data)

@step(step_operator="modal_step_operator")  # Runs on Modal
def generate_explanations(model: Model, data: Data) -> Explanations:
    return explain_model(model, data)

@step  # Runs on orchestrator
def save_results(model: Model, explanations: Explanations) -> None:
    save_to_registry(model)
    save_to_database(explanations)

@pipeline
def mixed_pipeline():
    data = load_data()
    processed = preprocess(data)
    model = train_model(processed)  # On SageMaker
    explanations = generate_explanations(model, processed)  # On Modal
    save_results(model, explanations)
'''


def test_mixed_infrastructure_seed(sagemaker_cloud: Any, podman_engine: Any, podman_step_image: str,
                                   registry_server: Any, conveyor_cli: Callable[..., Any], project: Path,
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures.sagemaker_runner import CREDENTIALS

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    docker = json.dumps({"parent_image": podman_engine.base_image})
    _seed_command(conveyor_cli, SAGEMAKER_REGISTER)
    conveyor_cli("step-operator", "update", "sagemaker_step_operator", f"--endpoint_url={sagemaker_cloud.endpoint_url}",
                 f"--docker_host={podman_engine.docker_host}", f"--docker_settings={docker}", "--poll_interval=0.2")
    _seed_command(conveyor_cli, MODAL_REGISTER)
    conveyor_cli("step-operator", "update", "modal_step_operator", f"--docker_host={podman_engine.docker_host}",
                 "--poll_interval=0.1")
    _registry(conveyor_cli, registry_server)
    _s3_store(conveyor_cli, sagemaker_cloud.new_bucket(), sagemaker_cloud.endpoint_url)
    _stack(conveyor_cli, ["sagemaker_step_operator", "modal_step_operator"], "cloud_store", "images")
    record = _modal_seam(tmp_path, monkeypatch)
    before = len(sagemaker_cloud.runner.requests)
    # the Modal flavor has no docker_settings of its own: the run says what its image is built from
    main = ("import json\nmixed_pipeline = mixed_pipeline.with_options(enable_cache=False, settings={'docker': "
            f"{{'parent_image': {podman_engine.base_image!r}}}}})\n" + RUN_REPORT.format(pipeline="mixed_pipeline"))

    proc = run_python(_script(MIXED_HELPERS + MIXED_EXAMPLE, main), project)

    result = _result(proc.stdout)
    assert result["status"] == "completed", result
    steps = result["steps"]
    assert {name: s["status"] for name, s in steps.items()} == dict.fromkeys(
        ["load_data", "preprocess", "train_model", "generate_explanations", "save_results"], "completed")
    assert steps["train_model"]["output"]["sum"] == 6.0 and steps["train_model"]["output"]["in_container"]
    assert steps["generate_explanations"]["output"]["explained"] == 6.0
    [sent] = sagemaker_cloud.runner.requests[before:]
    assert "--step_name" in sent["AlgorithmSpecification"]["ContainerArguments"] and \
        "train_model" in sent["AlgorithmSpecification"]["ContainerArguments"], sent["AlgorithmSpecification"]
    # the operator's instance type from the seed's command (the step gives none)
    assert sent["ResourceConfig"]["InstanceType"] == "ml.p3.2xlarge"
    [sandbox] = json.loads(record.read_text())
    assert "generate_explanations" in sandbox["args"], sandbox
    assert sandbox["image"].endswith("@" + steps["generate_explanations"]["digest"]), sandbox
