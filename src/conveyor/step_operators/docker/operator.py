"""The Docker step operator: one container per step attempt on a Docker-compatible engine (Docker, Podman)."""

from __future__ import annotations

import codecs
import math
import os
import threading
import time
from typing import Any, ClassVar, Iterator

from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError
from conveyor.images.settings import DockerSettings
from conveyor.step_operators.container import ContainerStepOperator
from conveyor.step_operators.docker.flavor import DockerStepOperatorConfig, DockerStepOperatorSettings
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission

LABEL = "conveyor.step_run_id"
ENGINE_TTL_S = 60.0


def _parse_ulimit(name: str, value: str | int) -> tuple[int, int]:
    soft, _, hard = str(value).partition(":")
    try:
        return int(soft), int(hard or soft)
    except ValueError:
        raise ValueError(f"ulimit {name}={value!r}: write it as 'soft:hard' or a number") from None


class DockerStepOperator(ContainerStepOperator):
    #: the engine that builds the image runs it: nothing is pushed, no container registry is needed
    pulls_from_registry: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._engine: tuple[float, dict[str, Any]] | None = None
        self._cancelled: set[str] = set()

    @property
    def config(self) -> DockerStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    # -- helpers ----------------------------------------------------------------------------------
    def client(self, docker_host: str | None = None) -> Any:
        host = docker_host if docker_host is not None else self.config.docker_host
        with self._lock:
            client = self._clients.get(host or "")
            if client is None:
                from conveyor.images.build import docker_client

                client = self._clients[host or ""] = docker_client(host, timeout=120)
            return client

    def engine(self) -> dict[str, Any]:
        """CPUs, memory and GPU support of the engine (cached a minute)."""
        if self._engine is not None and time.monotonic() - self._engine[0] < ENGINE_TTL_S:
            return self._engine[1]
        client = self.client()
        info, version = client.info(), client.version()
        components = [c.get("Name", "") for c in version.get("Components") or []]
        podman = any("podman" in name.lower() for name in components)
        runtimes = info.get("Runtimes") or {}
        engine = {"name": f"Podman {version.get('Version')}" if podman else f"Docker {version.get('Version')}",
                  "ncpu": int(info.get("NCPU") or 0), "mem_total": int(info.get("MemTotal") or 0),
                  # Podman's Docker-compatible API silently ignores device requests; Docker honours them with the
                  # NVIDIA runtime or CDI
                  "gpus": not podman and ("nvidia" in runtimes or bool(info.get("CDISpecDirs")))}
        self._engine = (time.monotonic(), engine)
        return engine

    def where(self) -> str:
        return self.config.docker_host or os.environ.get("DOCKER_HOST") or "the default Docker socket"

    @staticmethod
    def _settings(info: StepRunInfo) -> DockerStepOperatorSettings:
        return info.config.operator_settings or DockerStepOperatorSettings()  # type: ignore[return-value]

    def docker_settings(self, info: StepRunInfo) -> DockerSettings:
        """As every container flavor's, but never None: without any, the step's image is built from the defaults."""
        return super().docker_settings(info) or DockerSettings()

    def _mounts(self, info: StepRunInfo) -> list[tuple[str, str, bool]]:
        """(source, target, read_only) bind mounts: the config's, the step's, and a local artifact store."""
        mounts: list[tuple[str, str, bool]] = []
        for spec in [*self.config.mounts, *self._settings(info).mounts]:
            parts = spec.split(":")
            source = os.path.expanduser(parts[0])
            target = parts[1] if len(parts) > 1 and parts[1] not in ("ro", "rw") else source
            mounts.append((source, target, parts[-1] == "ro" and len(parts) > 1))
        root = self.local_store_root(info) if self.config.mount_artifact_store else None
        if root and not any(root == s or root.startswith(s.rstrip("/") + "/") for s, t, _ in mounts if s == t):
            mounts.append((root, root, False))
        return mounts

    def container_spec(self, info: StepRunInfo, image: str, entrypoint_command: list[str],
                       environment: dict[str, str]) -> dict[str, Any]:
        """The container as JSON-able create arguments (`dry_run` shows this; `submit` sends it)."""
        r = info.config.resource_settings
        settings = self._settings(info)
        container = self.step_container(info, entrypoint_command, environment)
        env = {**container.environment, **settings.environment}
        if r.cpu_count is not None:
            env.setdefault("OMP_NUM_THREADS", str(max(1, math.floor(r.cpu_count))))
        spec: dict[str, Any] = {
            "name": info.job_name, "image": image, "command": container.command, "environment": env,
            "working_dir": container.working_dir, "init": True,
            "labels": {LABEL: info.step_run_id, "conveyor.run_id": info.run_id,
                       "conveyor.step": info.pipeline_step_name, "conveyor.attempt": str(info.attempt)},
            "mounts": [{"source": s, "target": t, "read_only": ro} for s, t, ro in self._mounts(info)],
        }
        network = settings.network_mode or self.config.network_mode
        if network:
            spec["network_mode"] = network
        if self.config.user:
            spec["user"] = self.config.user
        if r.cpu_count is not None:
            spec["nano_cpus"] = int(round(r.cpu_count * 1e9))
        if r.memory_bytes is not None:
            spec["mem_limit"] = spec["memswap_limit"] = r.memory_bytes  # no swap beyond the limit
        if r.gpu_count:
            spec["device_requests"] = [{"count": r.gpu_count, "capabilities": [["gpu"]]}]
        if self.config.ulimits:
            spec["ulimits"] = {n: ":".join(map(str, _parse_ulimit(n, v))) for n, v in sorted(self.config.ulimits.items())}
        return spec

    @staticmethod
    def _create_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
        from docker.types import DeviceRequest, Mount, Ulimit

        kwargs = {k: v for k, v in spec.items() if k not in ("mounts", "device_requests", "ulimits")}
        kwargs["mounts"] = [Mount(target=m["target"], source=m["source"], type="bind", read_only=m["read_only"])
                            for m in spec["mounts"]]
        if "device_requests" in spec:
            kwargs["device_requests"] = [DeviceRequest(**d) for d in spec["device_requests"]]
        if "ulimits" in spec:
            kwargs["ulimits"] = [Ulimit(name=n, soft=s, hard=h) for n, s, h in
                                 ((n, *_parse_ulimit(n, v)) for n, v in spec["ulimits"].items())]
        return kwargs

    # -- checks -----------------------------------------------------------------------------------
    def check_resources(self, info: StepRunInfo) -> None:
        r = info.config.resource_settings
        if r.cpu_count is None and r.memory_bytes is None and not r.gpu_count:
            return
        engine = self.engine()
        step, where = info.pipeline_step_name, f"the engine at {self.where()} ({engine['name']})"
        if r.gpu_count and not engine["gpus"]:
            raise ResourceUnavailableError(
                f"step {step!r} asks for gpu_count={r.gpu_count}, but {where} cannot give containers GPUs: "
                + ("Podman's Docker-compatible API ignores device requests" if engine["name"].startswith("Podman")
                   else "it has neither the NVIDIA container runtime nor CDI devices")
                + ". Use a Docker engine with the NVIDIA Container Toolkit, or drop gpu_count")
        if r.cpu_count is not None and engine["ncpu"] and r.cpu_count > engine["ncpu"]:
            raise ResourceUnavailableError(f"step {step!r} asks for cpu_count={r.cpu_count:g}, but {where} has "
                                           f"{engine['ncpu']} CPUs; lower the request")
        if r.memory_bytes is not None and engine["mem_total"] and r.memory_bytes > engine["mem_total"]:
            raise ResourceUnavailableError(f"step {step!r} asks for memory={r.memory}, but {where} has "
                                           f"{engine['mem_total'] // 2**20} MiB; lower the request")

    # -- full contract ----------------------------------------------------------------------------
    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        import docker

        image = self.submit_image(info)
        spec = self.container_spec(info, image, entrypoint_command, environment)
        client = self.client()
        reattached = False
        try:
            container = client.containers.get(info.job_name)
            reattached = True  # a restarted orchestrator: follow the container already there, never run twice
        except docker.errors.NotFound:
            container = client.containers.create(detach=True, **self._create_kwargs(spec))
        if container.status == "created":
            container.start()
        keep = self._settings(info).keep_container
        return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=container.id,
                          data={"container": info.job_name, "docker_host": self.config.docker_host,
                                "image": image, "image_digest": container.attrs.get("Image"),
                                "reattached": reattached,
                                "memory_limit": spec.get("mem_limit"),
                                "keep": self.config.keep_container if keep is None else keep})

    def _container(self, submission: Submission) -> Any:
        return self.client(submission.data.get("docker_host")).containers.get(submission.data["container"])

    def get_status(self, submission: Submission) -> StatusReport:
        import docker

        name = submission.data["container"]
        try:
            container = self._container(submission)
        except docker.errors.NotFound:
            if name in self._cancelled:
                return StatusReport("cancelled", f"container {name} was stopped")
            return StatusReport("lost", f"container {name} is gone (removed outside Conveyor?)")
        state = container.attrs.get("State") or {}
        status = state.get("Status") or container.status
        if status in ("created", "configured"):
            return StatusReport("queued", f"container {name} is created, not started yet")
        if status in ("running", "paused", "restarting", "removing"):
            return StatusReport("running")
        code = state.get("ExitCode")
        if name in self._cancelled:
            return StatusReport("cancelled", f"container {name} was stopped", exit_code=code)
        if code == 0:
            return StatusReport("completed", exit_code=0)
        limit = submission.data.get("memory_limit")
        if state.get("OOMKilled") or (code == 137 and limit):
            # cgroup v1 Podman does not set OOMKilled: a SIGKILL under a memory limit is the kernel's OOM killer
            return StatusReport("failed", f"{MEMORY_ADVICE} (container {name} exceeded its memory limit of "
                                f"{limit // 2**20 if limit else '?'} MiB and was killed, exit code {code})",
                                exit_code=code, kind="memory")
        detail = f": {state['Error']}" if state.get("Error") else ""
        return StatusReport("failed", f"container {name} exited with code {code}{detail}", exit_code=code)

    def cancel(self, submission: Submission) -> None:
        """Stop the container (its init process passes the signal on, so this is immediate) and remove it."""
        import docker

        name = submission.data.get("container")
        if not name:
            return
        self._cancelled.add(name)
        try:
            container = self._container(submission)
            if container.status in ("running", "created", "paused", "restarting"):
                container.stop(timeout=int(math.ceil(self.config.stop_timeout)))
            if not submission.data.get("keep"):
                container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            if getattr(err, "status_code", None) not in (404, 409):  # gone, or removal already in progress
                raise

    def cleanup(self, submission: Submission) -> None:
        import docker

        name = submission.data.get("container")
        self._cancelled.discard(name or "")
        if not name or submission.data.get("keep"):
            return
        try:
            self._container(submission).remove(force=True)
        except (docker.errors.NotFound, docker.errors.APIError):
            pass

    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        import docker

        try:
            container = self._container(submission)
        except docker.errors.NotFound:
            return
        if not follow:
            yield container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
            return
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                text = decoder.decode(chunk)
                if text:
                    yield text
        except (docker.errors.NotFound, docker.errors.APIError):
            return
        rest = decoder.decode(b"", final=True)
        if rest:
            yield rest

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        settings = self.docker_settings(info)
        image = settings.image or f"{settings.target_repository}:<content hash>"
        spec = self.container_spec(info, image, entrypoint_command, environment)
        spec["environment"] = sorted(spec["environment"])  # names only: values may be credentials
        return {"flavor": self.flavor, "job_name": info.job_name, "docker_host": self.config.docker_host,
                "image_settings": settings.model_dump(exclude_defaults=True), "create": spec}
