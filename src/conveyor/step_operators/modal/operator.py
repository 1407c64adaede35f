"""The Modal step operator: one Sandbox per step attempt (`modal.Sandbox.create`), followed by its id.

The Sandbox runs the step's entrypoint in the step's registry image with cpu/memory/gpu from `ResourceSettings`.
Only identifiers travel as its `env`; every other variable (the step's secrets, the artifact store's credentials
and options) goes in a `modal.Secret.from_dict` made for this Sandbox, which is Modal's own secret mechanism: the
values are sent to Modal in that call, never in the Sandbox's command, image or env. Logs are read live from the
Sandbox's stdout and stderr; cancel is `terminate()`; a restarted orchestrator finds the Sandbox again by its
deterministic name within the app (`Sandbox.from_name`) or by the id in the receipt (`Sandbox.from_id`).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError
from conveyor.step_operators.container import ContainerStepOperator
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission
from conveyor.step_operators.modal.flavor import ModalStepOperatorConfig, ModalStepOperatorSettings

MIB = 2**20
#: Modal's per-container maximums: GPUs per container, CPU cores, memory (MiB)
MAX_GPUS, MAX_CPU, MAX_MEMORY_MIB = 8, 64.0, 336 * 1024
STEP_RUN_TAG = "conveyor.step_run_id"
#: modal_proto GenericResult.GenericStatus values the operator tells apart
TERMINATED, TIMEOUT, INIT_FAILURE, INTERNAL_FAILURE = 3, 4, 5, 6
MEMORY_STATUSES = frozenset({8, 9, 10})  # memory-manager eviction, memory thrashing eviction, kernel OOM kill
UNREACHABLE_GRACE_S = 60.0


def _describe(resources: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in resources.model_dump(exclude_none=True).items()) or "no resources"


@dataclass
class SandboxSpec:
    """What one `Sandbox.create` call gets, in plain values (the dry run shows it with secret values left out)."""

    app_name: str
    name: str
    args: list[str]
    image: str
    env: dict[str, str]
    secret_values: dict[str, str] = field(default_factory=dict)
    secret_names: list[str] = field(default_factory=list)
    registry_secret: str | None = None
    timeout: int = 300
    gpu: str | None = None
    cpu: float | None = None
    memory: int | None = None
    region: str | list[str] | None = None
    cloud: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None

    def shown(self) -> dict[str, Any]:
        """The spec with each secret's keys but none of its values."""
        out: dict[str, Any] = {
            "app": self.app_name, "name": self.name, "args": self.args,
            "image": {"from_registry": self.image, "secret": self.registry_secret}, "env": dict(sorted(self.env.items())),
            "secrets": {"from_dict": sorted(self.secret_values), "from_name": self.secret_names},
            "timeout": self.timeout, "tags": dict(sorted(self.tags.items()))}
        for key in ("gpu", "cpu", "memory", "region", "cloud", "workdir"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class ModalStepOperator(ContainerStepOperator):
    #: seam for tests: returns an object with the `modal` module's `App`, `Image`, `Secret`, `Sandbox` and `Client`
    sdk_factory: ClassVar[Callable[[], Any] | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._sdk_cache: Any = None
        self._client_cache: Any = None
        self._sandboxes: dict[str, Any] = {}
        self._cancelled: set[str] = set()
        self._unreachable: dict[str, float] = {}

    @property
    def config(self) -> ModalStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    # -- the SDK ----------------------------------------------------------------------------------
    def _sdk(self) -> Any:
        with self._lock:
            if self._sdk_cache is None:
                factory = type(self).sdk_factory
                if factory is not None:
                    self._sdk_cache = factory()
                else:
                    import modal

                    self._sdk_cache = modal
            return self._sdk_cache

    def _client_kwargs(self) -> dict[str, Any]:
        """`client=` for every call when the config holds a token; otherwise the SDK's own (env, ~/.modal.toml)."""
        c = self.config
        if not (c.token_id and c.token_secret):
            return {}
        modal = self._sdk()
        with self._lock:
            if self._client_cache is None:
                self._client_cache = modal.Client.from_credentials(c.token_id, c.token_secret)
            return {"client": self._client_cache}

    # -- what is sent -----------------------------------------------------------------------------
    @staticmethod
    def _settings(info: StepRunInfo) -> ModalStepOperatorSettings:
        return info.config.operator_settings or ModalStepOperatorSettings()  # type: ignore[return-value]

    def resources(self, info: StepRunInfo) -> tuple[str | None, float | None, int | None]:
        """(gpu, cpu, memory MiB): ResourceSettings first, then the step's settings, then the operator's config.

        A GPU type with a count ('A100:2') is taken as is; otherwise `gpu_count` sets the count ('any' type when
        none is configured)."""
        s, c, r = self._settings(info), self.config, info.resources
        where = f"step {info.pipeline_step_name!r}"
        gpu_type = s.gpu or c.gpu
        gpu: str | None = None
        count = r.gpu_count or 0
        if gpu_type and ":" in gpu_type:
            kind, _, n = gpu_type.partition(":")
            if count and count != int(n):
                raise ResourceUnavailableError(f"{where}: gpu {gpu_type!r} disagrees with ResourceSettings "
                                               f"gpu_count={count}; give the count in one place")
            gpu, count = gpu_type, int(n)
        elif count:
            gpu = f"{gpu_type or 'any'}:{count}" if count > 1 else (gpu_type or "any")
        elif s.gpu:
            gpu, count = s.gpu, 1
        if count > MAX_GPUS:
            raise ResourceUnavailableError(f"{where}: {_describe(r)} asks for {count} GPUs; a Modal container has at "
                                           f"most {MAX_GPUS}")
        cpu = r.cpu_count if r.cpu_count is not None else (s.cpu or c.cpu)
        if cpu is not None and cpu > MAX_CPU:
            raise ResourceUnavailableError(f"{where}: {_describe(r)} asks for {cpu:g} CPU cores; a Modal container "
                                           f"has at most {MAX_CPU:g}")
        memory = math.ceil(r.memory_bytes / MIB) if r.memory_bytes is not None else (s.memory or c.memory)
        if memory is not None and memory > MAX_MEMORY_MIB:
            raise ResourceUnavailableError(f"{where}: {_describe(r)} asks for {memory} MiB; a Modal container has at "
                                           f"most {MAX_MEMORY_MIB} MiB")
        return gpu, cpu, memory

    def check_resources(self, info: StepRunInfo) -> None:
        self.resources(info)

    def render(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str],
               image: str) -> SandboxSpec:
        s, c = self._settings(info), self.config
        gpu, cpu, memory = self.resources(info)
        container = self.step_container(info, entrypoint_command, environment)
        env = dict(container.environment)
        if cpu:
            env["OMP_NUM_THREADS"] = str(max(1, math.ceil(cpu)))
        plain, secret = self.split_environment(env)
        timeout = s.timeout or c.timeout
        if info.config.timeout:
            # the launcher stops the step at its timeout; Modal's own limit is a backstop a little later
            timeout = min(timeout, int(math.ceil(info.config.timeout)) + 60)
        return SandboxSpec(
            app_name=c.app_name, name=info.job_name, args=container.command, image=image, env=plain,
            secret_values=secret, secret_names=[*c.secrets, *s.secrets], registry_secret=c.registry_secret,
            timeout=timeout, gpu=gpu, cpu=cpu, memory=memory, region=s.region or c.region, cloud=s.cloud or c.cloud,
            tags={STEP_RUN_TAG: info.step_run_id, "conveyor.run_id": info.run_id,
                  "conveyor.step": info.pipeline_step_name, "conveyor.attempt": str(info.attempt)},
            workdir=container.working_dir)

    def _create(self, spec: SandboxSpec) -> Any:
        modal, client = self._sdk(), self._client_kwargs()
        env_name = {"environment_name": self.config.environment_name} if self.config.environment_name else {}
        app = modal.App.lookup(spec.app_name, create_if_missing=True, **env_name, **client)
        registry = modal.Secret.from_name(spec.registry_secret, **env_name) if spec.registry_secret else None
        image = modal.Image.from_registry(spec.image, secret=registry) if registry else \
            modal.Image.from_registry(spec.image)
        secrets = [modal.Secret.from_name(n, **env_name) for n in spec.secret_names]
        if spec.secret_values:
            secrets.append(modal.Secret.from_dict(dict(spec.secret_values)))
        options: dict[str, Any] = {k: v for k, v in (("gpu", spec.gpu), ("cpu", spec.cpu), ("memory", spec.memory),
                                                      ("region", spec.region), ("cloud", spec.cloud),
                                                      ("workdir", spec.workdir)) if v is not None}
        return modal.Sandbox.create(*spec.args, app=app, name=spec.name, tags=spec.tags, image=image, env=spec.env,
                                    secrets=secrets, timeout=spec.timeout, **options, **env_name, **client)

    def _find(self, spec: SandboxSpec) -> Any | None:
        """The Sandbox a previous orchestrator created for this attempt, if Modal still runs it."""
        modal = self._sdk()
        env_name = {"environment_name": self.config.environment_name} if self.config.environment_name else {}
        try:
            return modal.Sandbox.from_name(spec.app_name, spec.name, **env_name, **self._client_kwargs())
        except Exception as err:  # noqa: BLE001 - NotFoundError: none running under that name
            if type(err).__name__ != "NotFoundError":
                raise
            return None

    # -- lifecycle --------------------------------------------------------------------------------
    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        spec = self.render(info, entrypoint_command, environment, self.submit_image(info))
        sandbox = self._find(spec)
        reattached = sandbox is not None
        if sandbox is not None:
            tags = sandbox.get_tags() if hasattr(sandbox, "get_tags") else {}
            if tags.get(STEP_RUN_TAG) != info.step_run_id:
                raise RuntimeError(f"a Modal Sandbox named {spec.name} already runs in app {spec.app_name} and is "
                                   "not this step's")
        else:
            sandbox = self._create(spec)
        sandbox_id = sandbox.object_id
        self._sandboxes[sandbox_id] = sandbox
        return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=sandbox_id,
                          data={"sandbox_id": sandbox_id, "app_name": spec.app_name, "name": spec.name,
                                "timeout": info.config.timeout, "sandbox_timeout": spec.timeout,
                                "reattached": reattached})

    def _sandbox(self, submission: Submission) -> Any:
        sandbox_id = submission.data.get("sandbox_id") or submission.backend_id
        if sandbox_id not in self._sandboxes:
            self._sandboxes[sandbox_id] = self._sdk().Sandbox.from_id(sandbox_id, **self._client_kwargs())
        return self._sandboxes[sandbox_id]

    @staticmethod
    def _result(sandbox: Any) -> Any:
        """The Sandbox's GenericResult (status, exception) once it ended: the SDK keeps it on its implementation."""
        return getattr(getattr(sandbox, "_impl", None), "result", None)

    def get_status(self, submission: Submission) -> StatusReport:
        sandbox_id = submission.data.get("sandbox_id") or submission.backend_id or ""
        try:
            sandbox = self._sandbox(submission)
            code = sandbox.poll()
        except Exception as err:  # noqa: BLE001 - NotFoundError, or the API blipping
            if type(err).__name__ == "NotFoundError":
                if sandbox_id in self._cancelled:
                    return StatusReport("cancelled", f"Modal Sandbox {sandbox_id} is gone")
                return StatusReport("lost", f"Modal no longer knows Sandbox {sandbox_id}")
            since = self._unreachable.setdefault(sandbox_id, time.monotonic())
            if time.monotonic() - since < UNREACHABLE_GRACE_S:
                return StatusReport("running", f"cannot reach Modal: {err}")
            return StatusReport("lost", f"cannot reach Modal to follow Sandbox {sandbox_id} for "
                                f"{UNREACHABLE_GRACE_S:g}s: {err}")
        self._unreachable.pop(sandbox_id, None)
        if code is None:
            # Modal does not say whether the container is scheduled yet: a created Sandbox counts as running
            return StatusReport("running", f"Modal Sandbox {sandbox_id}")
        return self._ended(sandbox_id, code, self._result(sandbox), submission.data)

    def _ended(self, sandbox_id: str, code: int, result: Any, data: dict[str, Any]) -> StatusReport:
        status = getattr(result, "status", None)
        detail = str(getattr(result, "exception", "") or "")
        where = f"Modal Sandbox {sandbox_id}"
        if sandbox_id in self._cancelled or status == TERMINATED:
            return StatusReport("cancelled", f"{where} was terminated", exit_code=code)
        if status == TIMEOUT:
            timeout = data.get("timeout")
            what = f"timed out after {timeout:g}s" if timeout else "timed out"
            return StatusReport("failed", f"{what}: {where} reached its {data.get('sandbox_timeout')}s lifetime",
                                exit_code=code, kind="timeout")
        if status in MEMORY_STATUSES:
            return StatusReport("failed", f"{MEMORY_ADVICE} ({where} was killed for memory{': ' + detail if detail else ''})",
                                exit_code=code, kind="memory")
        if status == INTERNAL_FAILURE:
            return StatusReport("preempted", f"{where} ended by a Modal infrastructure failure: {detail}".rstrip(": "),
                                exit_code=code)
        if status == INIT_FAILURE:
            return StatusReport("failed", f"{where} could not start: {detail}".rstrip(": "), exit_code=code,
                                kind="pending")
        if code == 0:
            return StatusReport("completed", exit_code=0)
        return StatusReport("failed", f"{where} exited with code {code}{': ' + detail if detail else ''}",
                            exit_code=code)

    def cancel(self, submission: Submission) -> None:
        sandbox_id = submission.data.get("sandbox_id") or submission.backend_id
        if not sandbox_id:
            return
        self._cancelled.add(sandbox_id)
        try:
            sandbox = self._sandbox(submission)
            if sandbox.poll() is None:
                sandbox.terminate()
            deadline = time.monotonic() + self.config.stop_timeout
            while sandbox.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        except Exception as err:  # noqa: BLE001 - idempotent: already gone is fine
            if type(err).__name__ != "NotFoundError":
                raise

    def cleanup(self, submission: Submission) -> None:
        sandbox_id = submission.data.get("sandbox_id") or submission.backend_id or ""
        self._sandboxes.pop(sandbox_id, None)
        self._unreachable.pop(sandbox_id, None)
        self._cancelled.discard(sandbox_id)

    # -- logs -------------------------------------------------------------------------------------
    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        """stdout and stderr as they come (each read by a thread of its own); without `follow`, only what a
        finished Sandbox printed."""
        try:
            sandbox = self._sandbox(submission)
            if not follow and sandbox.poll() is None:
                return
        except Exception as err:  # noqa: BLE001
            if type(err).__name__ == "NotFoundError":
                return
            raise
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(stream: Any) -> None:
            try:
                for chunk in stream:
                    lines.put(chunk)
            except Exception:  # noqa: BLE001 - the Sandbox went away: end of this stream
                pass
            finally:
                lines.put(None)

        streams = [sandbox.stdout, sandbox.stderr]
        for stream in streams:
            threading.Thread(target=pump, args=(stream,), daemon=True, name="modal-logs").start()
        open_streams = len(streams)
        while open_streams:
            chunk = lines.get()
            if chunk is None:
                open_streams -= 1
            elif chunk:
                yield chunk

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        spec = self.render(info, entrypoint_command, environment, self.step_image(info, build=False))
        return {"flavor": self.flavor, "job_name": info.job_name, "sandbox": spec.shown()}
