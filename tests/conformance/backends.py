"""One entry per step operator flavor: how to register it, and how to ask its backend what is still running."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from conveyor.client import StepRunView
from conveyor.utils.procs import alive, pids_with_marker


def local_leftovers(step_run: StepRunView) -> list[str]:
    left = [f"pid {p} (carries the step run id)" for p in pids_with_marker(f"--step_run_id {step_run.id}")]
    pid = ((step_run.submission or {}).get("data") or {}).get("pid")
    if pid is not None and alive(int(pid)):
        left.append(f"pid {pid} (from the receipt)")
    return left


def check_local_cpus(seen: dict[str, Any]) -> None:
    assert seen["affinity"] == 1 and seen["omp"] == "1", seen


@dataclass
class Backend:
    flavor: str
    operator: str
    config: dict[str, Any]
    leftovers: Callable[[StepRunView], list[str]]
    check_cpus: Callable[[dict[str, Any]], None]
    #: ResourceSettings no machine of the backend can ever satisfy
    impossible: dict[str, Any] = field(default_factory=lambda: {"cpu_count": 4096})
    #: (operator config, step settings) under which a job is accepted but can never start ("never_starts" capability)
    never_starts: tuple[dict[str, Any], dict[str, Any]] | None = None
    #: the failure kind a memory overrun ends as
    memory_kind: str = "memory"
    setup: Callable[[], None] | None = None
    #: (where, text) of what the backend keeps about a step beyond files named in its receipt: rendered
    #: scripts, manifests; a secret's value must appear in none of it
    texts: Callable[[StepRunView], list[tuple[str, str]]] = lambda step_run: []


def slurm_backend(request: Any) -> Backend:
    cluster = request.getfixturevalue("slurm_cluster")

    def leftovers(step_run: StepRunView) -> list[str]:
        job_id = ((step_run.submission or {}).get("data") or {}).get("job_id")
        left = [f"Slurm job {j}" for j in cluster.jobs() if j == job_id]
        return left + [f"pid {p} (carries the step run id)" for p in pids_with_marker(f"--step_run_id {step_run.id}")]

    def check_cpus(seen: dict[str, Any]) -> None:
        assert seen["slurm_cpus"] == "1", seen  # task/none: Slurm allocates the CPU and says so, without pinning

    return Backend("slurm", "conform_slurm", {"partition": cluster.partition, "poll_interval": 0.5}, leftovers, check_cpus,
                   never_starts=({}, {"step_operator.slurm": {"partition": cluster.tiny_partition, "time_limit": "10"}}))


def ssh_backend(request: Any) -> Backend:
    import os
    import stat
    from pathlib import Path

    if request.node.originalname == "test_dry_run_matches_the_golden_file":
        # dry_run never connects; the live server's port, key and interpreter paths change every session
        config = {"hostname": "gpu-box.example", "port": 22, "username": "conveyor", "python": "python3",
                  "key_file": "~/.ssh/id_ed25519"}
        return Backend("ssh", "conform_ssh", config, lambda step_run: [], check_local_cpus)
    server = request.getfixturevalue("sshd_server")
    # The host is this machine and the step runs as the unprivileged test user: the paths the conformance steps
    # take as parameters (a sentinel, a counter under tmp_path) must be reachable by that user.
    tmp = Path(request.getfixturevalue("tmp_path"))
    tmp.chmod(0o777)
    for parent in tmp.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        if parent == Path("/tmp") or parent == Path("/"):
            break

    def leftovers(step_run: StepRunView) -> list[str]:
        pid = ((step_run.submission or {}).get("data") or {}).get("pid")
        left = []
        for line in server.processes():
            found, _, args = line.partition(" ")
            if f"--step_run_id {step_run.id}" in args:
                left.append(f"remote pid {found} (carries the step run id): {args}")
            elif pid is not None and found == str(pid):
                left.append(f"remote pid {found} (from the receipt): {args}")
        return left

    config = {"hostname": server.host, "port": server.port, "username": server.username,
              "key_file": str(server.key_path), "known_hosts": str(server.known_hosts), "python": server.python,
              "remote_dir": os.path.join(server.remote_dir, "conformance"), "poll_interval": 0.2}
    # never starts: the operator's only GPU is held for good (by PID 1, which never ends) in the host's allocation
    # table, so the job waits `queued` until the pending timeout cancels it
    held = os.path.join(server.remote_dir, "gpu-held")
    server.run(f"mkdir -p {held} && echo '{{\"1\": {{\"cpus\": [], \"gpus\": [0]}}}}' > {held}/alloc.json", check=True)
    never = ({"pending_timeout": "1s", "gpu_indices": [0], "remote_dir": held}, {"resources": {"gpu_count": 1}})
    return Backend("ssh", "conform_ssh", config, leftovers, check_local_cpus, never_starts=never)


def ray_backend(request: Any) -> Backend:
    if request.node.originalname == "test_dry_run_matches_the_golden_file":
        # dry_run never connects; the live head's port changes every session
        return Backend("ray", "conform_ray", {"address": "http://ray-head.example:8265"}, lambda step_run: [],
                       check_local_cpus)
    cluster = request.getfixturevalue("ray_cluster")

    def leftovers(step_run: StepRunView) -> list[str]:
        sid = ((step_run.submission or {}).get("data") or {}).get("submission_id")
        left = [f"Ray job {j} (still running)" for j in cluster.running_jobs() if j == sid]
        return left + [f"pid {p} (carries the step run id)" for p in pids_with_marker(f"--step_run_id {step_run.id}")]

    def check_cpus(seen: dict[str, Any]) -> None:
        # Ray pins no CPU (no affinity): it reserves the CPUs for the entrypoint in its own accounting (the job's
        # supervisor actor holds them, so other work cannot take them) and sets OMP_NUM_THREADS to match.
        assert seen["omp"] == "1", seen
        jobs = [j for j in cluster.jobs() if "--step_name resources_seen" in j["entrypoint"]]
        latest = max(jobs, key=lambda j: j["start_time"] or 0)
        assert cluster.supervisor_resources(latest["submission_id"]).get("CPU") == 1.0, latest

    return Backend("ray", "conform_ray", {"address": cluster.address, "poll_interval": 0.2}, leftovers, check_cpus)


def spark_backend(request: Any) -> Backend:
    if request.node.originalname == "test_dry_run_matches_the_golden_file":
        # dry_run never connects; the live master's ports change every session
        return Backend("spark", "conform_spark", {"master": "spark://spark-master.example:7077"},
                       lambda step_run: [], check_local_cpus)
    cluster = request.getfixturevalue("spark_cluster")

    def leftovers(step_run: StepRunView) -> list[str]:
        data = (step_run.submission or {}).get("data") or {}
        left = [f"Spark application {a['id']} (still running)" for a in cluster.apps_named(data.get("app_name", ""))
                if a["active"]]
        pid = data.get("pid")
        if pid is not None and alive(int(pid)):
            left.append(f"spark-submit pid {pid} (from the receipt)")
        return left + [f"pid {p} (carries the step run id)" for p in pids_with_marker(f"--step_run_id {step_run.id}")]

    def check_cpus(seen: dict[str, Any]) -> None:
        # The step is the driver, on this machine (client mode), unpinned: its thread pools get OMP_NUM_THREADS=1.
        # The executors' size (spark.executor.cores=1) is checked on the master in test_spark_operator.py.
        assert seen["omp"] == "1", seen

    return Backend("spark", "conform_spark", cluster.operator_config, leftovers, check_cpus)


def docker_backend(request: Any) -> Backend:
    if request.node.originalname == "test_dry_run_matches_the_golden_file":
        # dry_run never connects or builds; the live socket and tmp paths change every session
        config = {"docker_host": "unix:///run/podman/podman.sock", "network_mode": "none",
                  "docker_settings": {"parent_image": "localhost/conveyor-test/bookworm-python:1"},
                  "ulimits": {"nofile": "1024:4096"}, "mounts": ["/srv/shared:ro"]}
        return Backend("docker", "conform_docker", config, lambda step_run: [], check_local_cpus)
    engine = request.getfixturevalue("podman_engine")
    request.getfixturevalue("podman_step_image")  # built (or found) once per session, before any timed test
    tmp = str(request.getfixturevalue("tmp_path"))

    def leftovers(step_run: StepRunView) -> list[str]:
        mine = engine.containers(all=True, label=f"conveyor.step_run_id={step_run.id}")
        return [f"container {c.name} ({c.status})" for c in mine]

    def check_cpus(seen: dict[str, Any]) -> None:
        # a CPU quota (nano_cpus), not pinning: the cgroup inside the container allows one CPU's worth of time
        assert seen["cpu_quota"] == 1.0 and seen["omp"] == "1", seen

    # the steps' sentinel and counter files live under tmp_path (which also holds the project's artifact store)
    config = {"docker_host": engine.docker_host, "network_mode": "none", "ulimits": engine.ulimits,
              "docker_settings": {"parent_image": engine.base_image}, "mounts": [tmp], "poll_interval": 0.2}
    return Backend("docker", "conform_docker", config, leftovers, check_cpus)


def kubernetes_backend(request: Any) -> Backend:
    """Kubernetes on kmock's in-memory API emulator, whose pods a test-side kubelet runs in Podman."""
    if request.node.originalname == "test_dry_run_matches_the_golden_file":
        # dry_run never connects; the emulator's kubeconfig and the built image's tag change every session
        config = {"kubernetes_namespace": "ml", "image": "registry.example/conveyor-step:1",
                  "service_account_name": "conveyor-steps", "mount_local_artifact_store": True}
        return Backend("kubernetes", "conform_kubernetes", config, lambda step_run: [], check_local_cpus)
    cluster = request.getfixturevalue("kube_cluster")
    engine = request.getfixturevalue("podman_engine")
    request.getfixturevalue("podman_step_image")  # the same content hash as the steps' image: built once, up front
    from fixtures.registry import use_container_registry

    use_container_registry(request.getfixturevalue("registry_server").host, "conformance")
    tmp = str(request.getfixturevalue("tmp_path"))

    def leftovers(step_run: StepRunView) -> list[str]:
        job = ((step_run.submission or {}).get("data") or {}).get("job")
        left = [f"container {c.name} ({c.status})" for c in cluster.containers(step_run.id)]
        left += [f"pod {p['metadata']['name']} ({(p.get('status') or {}).get('phase')})" for p in cluster.pods()
                 if (p["metadata"].get("labels") or {}).get("job-name") == job
                 and (p.get("status") or {}).get("phase") in ("Pending", "Running")]
        return left

    def check_cpus(seen: dict[str, Any]) -> None:
        # limits.cpu becomes a CPU quota (no pinning) and the operator sets OMP_NUM_THREADS to match
        assert seen["omp"] == "1", seen
        runs = [r for r in cluster.runs.values() if r.create_kwargs.get("environment", {}).get("CONVEYOR_STEP_NAME")
                == "resources_seen"]
        assert runs and all(r.create_kwargs["nano_cpus"] == 10**9 for r in runs), runs

    # the steps' sentinel and counter files live under tmp_path, which also holds the project's artifact store
    pod = {"volumes": [{"name": "work", "hostPath": {"path": tmp, "type": "Directory"}}],
           "volume_mounts": [{"name": "work", "mountPath": tmp}]}
    # the steps' image is built from docker settings, pushed to the suite's registry in pre-flight, and pulled
    # from it by the kubelet by digest: the whole way from a user's @step to a pulled image
    config = {"kubeconfig": str(cluster.kubeconfig), "docker_host": engine.docker_host,
              "docker_settings": {"parent_image": engine.base_image}, "pod_settings": pod, "poll_interval": 0.2,
              "stop_timeout": 30}
    never = ({"pending_timeout": "1s"},
             {"step_operator.kubernetes": {"pod_settings": {"node_selectors": {"conveyor.test/pool": "a100"}}}})
    def texts(step_run: StepRunView) -> list[tuple[str, str]]:
        """Every Job manifest the API received and every object it holds now, Secrets aside (their data is the
        secret mechanism itself)."""
        import json

        seen = [(f"Job {r.job} as submitted", json.dumps(r.job_manifest)) for r in cluster.runs.values()]
        return seen + [(f"{o['kind'] if 'kind' in o else 'object'} {o['metadata']['name']}", json.dumps(o))
                       for o in cluster.jobs() + cluster.pods()]

    return Backend("kubernetes", "conform_kubernetes", config, leftovers, check_cpus, never_starts=never,
                   texts=texts)


def sagemaker_backend(request: Any) -> Backend:
    """SageMaker on moto (in this process, real HTTP) with a test-side training-job runner that runs each job's
    container in Podman; the project's artifact store is S3 on the same moto."""
    role = "arn:aws:iam::123456789012:role/conveyor-steps"
    if request.node.originalname == "test_dry_run_matches_the_golden_file":
        # dry_run never connects; the live endpoint and the built image's tag change every session
        config = {"role": role, "region": "eu-west-1", "bucket": "conveyor-ml",
                  "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/conveyor-step:1"}
        return Backend("sagemaker", "conform_sagemaker", config, lambda step_run: [], check_local_cpus)
    from fixtures.sagemaker_runner import CREDENTIALS

    cloud = request.getfixturevalue("sagemaker_cloud")
    monkeypatch = request.getfixturevalue("monkeypatch")
    for key, value in CREDENTIALS.items():  # the AWS chain of the orchestrating process (and its subprocesses)
        monkeypatch.setenv(key, value)
    bucket = cloud.new_bucket()
    use_s3_artifact_store(f"s3://{bucket}/conveyor", cloud.endpoint_url)

    def leftovers(step_run: StepRunView) -> list[str]:
        data = (step_run.submission or {}).get("data") or {}
        left = [f"container {c.name} ({c.status})" for c in cloud.runner.containers(step_run.id)]
        job = data.get("job")
        if job:
            status = cloud.client("sagemaker").describe_training_job(TrainingJobName=job)["TrainingJobStatus"]
            if status in ("InProgress", "Stopping"):
                left.append(f"training job {job} ({status})")
        secret = data.get("secret")
        if secret and secret.split(":")[-1].rsplit("-", 1)[0] in cloud.secrets():
            left.append(f"secret {secret}")
        return left

    def check_cpus(seen: dict[str, Any]) -> None:
        # cpu_count=1 picks ml.m5.large (2 vCPUs, the smallest type of the table); the runner gives the container
        # that instance's CPUs as a quota, and the operator sets OMP_NUM_THREADS to the request
        import os

        assert seen["omp"] == "1", seen
        runs = [r for r in cloud.runner.runs.values()
                if (r.request.get("Environment") or {}).get("CONVEYOR_STEP_NAME") == "resources_seen"]
        assert runs and all(r.request["ResourceConfig"]["InstanceType"] == "ml.m5.large" for r in runs), runs
        assert seen["cpu_quota"] == min(2.0, float(len(os.sched_getaffinity(0)))), seen

    def texts(step_run: StepRunView) -> list[tuple[str, str]]:
        """Every CreateTrainingJob request sent, every object of the S3 artifact store, the CloudWatch logs."""
        import json

        seen = [(f"CreateTrainingJob {r['TrainingJobName']}", json.dumps(r)) for r in cloud.runner.requests]
        seen += [(where, data.decode("utf-8", "replace")) for where, data in cloud.objects(bucket)]
        return seen + [(f"CloudWatch logs of {name}", cloud.log_text(name)) for name in cloud.runner.runs]

    # the steps' image (cloud.image's content hash: built once, up front) is built from docker settings, pushed to
    # the suite's registry in pre-flight and pulled from it by the runner, as SageMaker pulls from ECR
    from fixtures.registry import use_container_registry

    use_container_registry(request.getfixturevalue("registry_server").host, "conformance")
    engine = request.getfixturevalue("podman_engine")
    config = {"role": role, "region": "us-east-1", "endpoint_url": cloud.endpoint_url,
              "docker_host": engine.docker_host, "docker_settings": {"parent_image": engine.base_image},
              "poll_interval": 0.2, "stop_timeout": 60}
    return Backend("sagemaker", "conform_sagemaker", config, leftovers, check_cpus, texts=texts)


def use_artifact_store(name: str, flavor: str, config: dict[str, Any],
                       secrets: dict[str, dict[str, str]] | None = None) -> None:
    """Make the project's default stack keep its artifacts in a remote store (a remote job cannot see a local
    directory), its credentials first stored as the Conveyor secrets the config refers to."""
    from conveyor.context import get_context, reset_contexts

    ctx = get_context()
    ctx.ensure_defaults()
    for secret, values in (secrets or {}).items():
        ctx.vault.set(secret, values, replace=False)
    store_id = ctx.store.create_component("artifact_store", name, flavor, config)
    ids = [c["id"] for c in ctx.store.get_stack("default")["components"] if c["type"] != "artifact_store"]
    ctx.store.set_stack_components("default", [*ids, store_id])
    reset_contexts()


def use_s3_artifact_store(path: str, endpoint_url: str) -> None:
    """Make the project's default stack keep its artifacts in S3."""
    use_artifact_store("s3store", "s3", {"path": path, "endpoint_url": endpoint_url})


def vertex_backend(request: Any) -> Backend:
    """Vertex AI through the official SDK's clients pointed at a local fake of its REST endpoints
    (tests/fixtures/vertex_fake.py), whose worker runs each CustomJob's container in Podman; the project's artifact
    store is `gcs` on fake-gcs-server, its OAuth2 token (a Conveyor secret) travels with the step's other secret
    variables through the fake's Secret Manager."""
    if request.node.originalname == "test_dry_run_matches_the_golden_file":
        # dry_run never connects; the fake's port and the built image's tag change every session
        config = {"project": "ml-project", "location": "europe-west4", "use_preemptible": True,
                  "image": "europe-west4-docker.pkg.dev/ml-project/steps/conveyor-step:1",
                  "service_account": "steps@ml-project.iam.gserviceaccount.com", "labels": {"team": "ml"}}
        return Backend("vertex", "conform_vertex", config, lambda step_run: [], check_local_cpus)
    import json
    import os
    import uuid

    from fixtures.vertex_fake import TERMINAL

    from conveyor.images.build import ensure_image
    from conveyor.images.settings import DockerSettings

    fake = request.getfixturevalue("vertex_fake")
    engine = request.getfixturevalue("podman_engine")
    gcs = request.getfixturevalue("gcs_emulator")
    bucket = gcs.new_bucket()
    # the conformance steps' sentinel and counter files live under tmp_path: the fake's worker shares it (and
    # runs the job with host networking: the emulator on 127.0.0.1 is the container's too)
    fake.shared_paths = [str(request.getfixturevalue("tmp_path"))]
    token = f"ya29.conveyor-conformance-{uuid.uuid4().hex}"  # an OAuth2 access token; the emulator checks none
    use_artifact_store("vertex_gcs", "gcs", {"path": f"gs://{bucket}/conveyor", "endpoint_url": gcs.endpoint_url,
                                             "project": "conveyor-test", "token": "{{gcp.token}}"},
                       {"gcp": {"token": token}})
    # built once per content hash, before any timed test; pre-flight pushes it to the suite's registry, the fake
    # pulls it from there by digest
    docker = {"parent_image": engine.base_image}
    ensure_image(DockerSettings(**docker), engine.docker_host, extra_requirements=["gcsfs"])
    from fixtures.registry import use_container_registry

    use_container_registry(request.getfixturevalue("registry_server").host, "conformance")

    def leftovers(step_run: StepRunView) -> list[str]:
        data = (step_run.submission or {}).get("data") or {}
        left = [f"container {c.name} ({c.status})" for c in fake.containers(step_run.id)]
        job = fake.jobs.get(data.get("job") or "")
        if job is not None and job.state not in TERMINAL:
            left.append(f"CustomJob {job.name} ({job.state})")
        secret = fake.secrets.get(data.get("secret") or "")
        if secret is not None and not secret.deleted:
            left.append(f"secret {secret.name}")
        return left

    def check_cpus(seen: dict[str, Any]) -> None:
        # cpu_count=1 picks n1-highmem-2 (the smallest machine type of the table); the fake gives the container
        # that machine's vCPUs as a quota, and the operator sets OMP_NUM_THREADS to the request
        assert seen["omp"] == "1", seen
        jobs = [j for j in fake.jobs.values() if any(e.name == "CONVEYOR_STEP_NAME" and e.value == "resources_seen"
                                                     for e in j.message.job_spec.worker_pool_specs[0].container_spec.env)]
        assert jobs and all(j.message.job_spec.worker_pool_specs[0].machine_spec.machine_type == "n1-highmem-2"
                            for j in jobs), jobs
        assert seen["cpu_quota"] == min(2.0, float(os.cpu_count() or 1)), seen

    def texts(step_run: StepRunView) -> list[tuple[str, str]]:
        """Every request the fake received (CustomJobs, secret metadata, log reads; the secret versions' payloads
        aside: they are the secret mechanism itself), every log entry, every object of the GCS artifact store."""
        seen = [(f"{method} {path}", body) for method, path, body in fake.requests]
        seen += [(f"log entry {e['insertId']}", json.dumps(e)) for e in fake.entries]
        return seen + [(f"gs://{bucket}/{name}", data.decode("utf-8", "replace"))
                       for name, data in gcs.objects(bucket).items()]

    config = {"project": "conveyor-test", "location": "us-central1", "api_endpoint": fake.url,
              "secret_manager_api_endpoint": fake.url, "logging_api_endpoint": fake.url,
              "docker_host": engine.docker_host, "docker_settings": docker, "poll_interval": 0.2, "stop_timeout": 30,
              "log_lag": 0.3}
    # no GPU in the fake: a job asking for one waits PENDING, as in a stockout
    never = ({"pending_timeout": "1s"},
             {"step_operator.vertex": {"accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 1}})
    return Backend("vertex", "conform_vertex", config, leftovers, check_cpus, never_starts=never, texts=texts)


def azureml_backend(request: Any) -> Backend:
    """Azure ML through the official SDK (`MLClient`, Key Vault's `SecretClient`, `DefaultAzureCredential`) pointed
    at a local HTTPS fake of its REST endpoints (tests/fixtures/azureml_fake.py), whose runner runs each command
    job's container in Podman; the project's artifact store is `azure` on Azurite, its account key (a Conveyor
    secret) travels with the step's other secret variables through the fake's Key Vault."""
    if request.node.originalname == "test_dry_run_matches_the_golden_file":
        # dry_run never connects; the fake's port and the built image's tag change every session
        config = {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "ml",
                  "workspace_name": "conveyor-ws", "image": "conveyor.azurecr.io/conveyor-step:1",
                  "key_vault_url": "https://conveyor-kv.vault.azure.net", "identity_client_id": "conveyor-steps-identity"}
        return Backend("azureml", "conform_azureml", config, lambda step_run: [], check_local_cpus)
    import json
    import os

    from fixtures.azureml_fake import TERMINAL
    from fixtures.azurite import ACCOUNT, ACCOUNT_KEY

    from conveyor.images.build import ensure_image
    from conveyor.images.settings import DockerSettings

    fake = request.getfixturevalue("azureml_fake")
    engine = request.getfixturevalue("podman_engine")
    azurite = request.getfixturevalue("azurite")
    container = azurite.new_container()
    monkeypatch = request.getfixturevalue("monkeypatch")
    for key, value in fake.env().items():  # the orchestrator's managed identity, and trust in the fake's CA
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "AzureCloud")  # MLClient sets it process-wide: undone after
    # the conformance steps' sentinel and counter files live under tmp_path: the fake's runner shares it
    fake.shared_paths = [str(request.getfixturevalue("tmp_path"))]
    use_artifact_store("azureml_blob", "azure", {"path": f"az://{container}/conveyor",
                                                 "endpoint_url": azurite.endpoint_url, "account_name": ACCOUNT,
                                                 "account_key": "{{azure.key}}"},
                       {"azure": {"key": ACCOUNT_KEY}})
    # the step image, built once per content hash before any timed test; pre-flight pushes it to the suite's
    # registry (as to the workspace's ACR) and the fake pulls it from there by digest
    ensure_image(DockerSettings(parent_image=engine.base_image), engine.docker_host,
                 extra_requirements=["adlfs", "azure-identity", "azure-keyvault-secrets"])
    from fixtures.registry import use_container_registry

    use_container_registry(request.getfixturevalue("registry_server").host, "conformance")

    def leftovers(step_run: StepRunView) -> list[str]:
        data = (step_run.submission or {}).get("data") or {}
        left = [f"container {c.name} ({c.status})" for c in fake.containers(step_run.id)]
        job = fake.jobs.get(data.get("job") or "")
        if job is not None and job.status not in TERMINAL:
            left.append(f"Azure ML job {job.name} ({job.status})")
        left += [f"Key Vault secret {n}" for n in data.get("secrets") or [] if n in fake.live_secrets()]
        return left

    def check_cpus(seen: dict[str, Any]) -> None:
        # cpu_count=1 picks Standard_DS2_v2 (2 vCPUs, the smallest size of the table); the fake gives the
        # container that size's vCPUs as a quota, and the operator sets OMP_NUM_THREADS to the request
        assert seen["omp"] == "1", seen
        jobs = [j for j in fake.jobs.values()
                if (j.properties.get("environmentVariables") or {}).get("CONVEYOR_STEP_NAME") == "resources_seen"]
        assert jobs and all(j.properties["resources"]["instanceType"] == "Standard_DS2_v2" for j in jobs), jobs
        assert seen["cpu_quota"] == min(2.0, float(os.cpu_count() or 1)), seen

    def texts(step_run: StepRunView) -> list[tuple[str, str]]:
        """Every request the fake received (job definitions, environments, Key Vault calls with the secret
        values themselves left out: they are the secret mechanism), every job's std_log, every blob of the store."""
        seen = [(f"{method} {path}", body) for method, path, body in fake.requests]
        seen += [(f"job {j.name} as stored", json.dumps(j.body)) for j in fake.jobs.values()]
        seen += [(f"std_log of {j.name}", j.log) for j in fake.jobs.values()]
        return seen + [(f"az://{container}/{name}", data.decode("utf-8", "replace"))
                       for name, data in azurite.objects(container).items()]

    config = {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "ml",
              "workspace_name": "conveyor-ws", "resource_manager_url": fake.url, "docker_host": engine.docker_host,
              "docker_settings": {"parent_image": engine.base_image},
              "key_vault_url": fake.vault_url, "identity_client_id": "conveyor-steps-identity", "poll_interval": 0.2,
              "stop_timeout": 30}
    # no GPU in the fake: a job on a GPU size waits Queued, as while Azure has no capacity for it
    never = ({"pending_timeout": "1s"}, {"resources": {"gpu_count": 1}})
    return Backend("azureml", "conform_azureml", config, leftovers, check_cpus, never_starts=never, texts=texts)


def modal_backend(request: Any) -> Backend:
    """Modal: request only (no Modal reachable). The lifecycle runs against a fake of the `modal` module's API in
    tests/test_modal_operator.py: docs/step_operators/modal.md says what that covers."""
    config = {"image": "ghcr.io/acme/conveyor-step:1", "app_name": "conveyor-steps", "secrets": ["wandb"],
              "gpu": "A100"}
    return Backend("modal", "conform_modal", config, lambda step_run: [], check_local_cpus)


#: what each backend can show; a test that needs a capability runs only where it exists
CAPABILITIES: dict[str, set[str]] = {
    # request only: see REQUEST_ONLY
    "modal": set(),
    "local": {"memory_enforced", "resume"},
    "fault": {"never_starts", "memory_enforced"},
    "slurm": {"never_starts", "memory_enforced", "resume"},
    "ssh": {"never_starts", "memory_enforced", "resume"},
    # Ray enforces no `memory` (a scheduling hint) and cannot stop a job still pending: docs/step_operators/ray.md
    "ray": {"resume"},
    # the emulator's kubelet enforces limits.memory as a cgroup limit (OOMKilled), reports an unschedulable pod,
    # and serves every process from one loopback API: docs/step_operators/kubernetes.md
    "kubernetes": {"memory_enforced", "never_starts", "resume"},
    # Spark enforces no `memory` on the step: the step is the driver's Python process, which no Spark setting
    # limits (spark.driver.memory sizes the driver JVM's heap, spark.executor.memory the executors'); and a client
    # mode driver starts at once, there is no queue to wait in: docs/step_operators/spark.md
    "spark": {"resume"},
    # a container starts at once (no queue to wait in); memory is a cgroup limit: docs/step_operators/docker.md
    "docker": {"memory_enforced", "resume"},
    # a job gets a whole machine type (no memory limit below it); the fake has no GPU, so a job asking for one
    # waits PENDING as in a stockout: docs/step_operators/vertex.md
    "vertex": {"never_starts", "resume"},
    # an instance cannot have less memory than its type, and the runner starts every job at once (no capacity
    # queue): docs/step_operators/sagemaker.md
    "sagemaker": {"resume"},
    # a job gets a whole VM size (Azure ML caps no command job's memory below it); the fake has no GPU, so a job
    # on a GPU size waits Queued: docs/step_operators/azureml.md
    "azureml": {"never_starts", "resume"},
}

#: flavors whose service cannot run here: the suite checks only their request (the golden dry run); their
#: submit -> poll -> logs -> cancel lifecycle is tested at the SDK's client boundary in tests/test_<flavor>_operator.py
REQUEST_ONLY: frozenset[str] = frozenset({"modal"})

BACKENDS: dict[str, Callable[[Any], Backend]] = {
    "azureml": azureml_backend,
    "modal": modal_backend,
    "local": lambda request: Backend("local", "conform_local", {}, local_leftovers, check_local_cpus),
    "fault": lambda request: Backend(
        "fault", "conform_fault", {"fault": "none"}, local_leftovers, check_local_cpus,
        never_starts=({"pending_timeout": "1s"}, {"step_operator.fault": {"fault": "stuck_pending"}})),
    "slurm": slurm_backend,
    "ssh": ssh_backend,
    "ray": ray_backend,
    "kubernetes": kubernetes_backend,
    "spark": spark_backend,
    "docker": docker_backend,
    "vertex": vertex_backend,
    "sagemaker": sagemaker_backend,
}
