"""Stand-ins for the Azure ML and Modal SDK clients, at their client boundary (no cloud is reachable from here).

Each fake receives exactly what our operator hands the real SDK (azure-ai-ml's `Command` job entity, the Key
Vault calls; Modal's `Sandbox.create` arguments, `Image`, `Secret.from_dict`), keeps every definition it received
(`received`) so tests can search them for secret values, and **really runs** the step: the job's command is run on
this machine as a process of its own session (its interpreter replaced by this one: the image is not pulled), with
the environment the platform would give it. So a step reads its job spec, runs, writes its outputs and
`result.json`, and prints logs that the operator streams, exactly as in the cloud, minus the container.

What a platform does beyond running the command is scripted per job: time spent queued (`queue_s`), a preemption,
an out-of-memory kill, a platform timeout.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

TESTS_DIR = Path(__file__).parent


@dataclass
class Script:
    """How the fake platform treats the next job(s): what a real one would do to them."""

    queue_s: float = 0.0
    #: end the job as the platform would, after `after_s` of running: "preempted", "oom", "timeout" or None
    fate: str | None = None
    after_s: float = 0.3
    #: only the first `times` jobs get this fate (a retried attempt then runs normally)
    times: int = 1


class LocalJob:
    """One job's process: its own session, stdout and stderr into one log file, killable as a group."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, script: Script) -> None:
        self.log, self.script = log, script
        self.created = time.monotonic()
        self.proc: subprocess.Popen[bytes] | None = None
        self.fate: str | None = None
        self.cancelled = False
        self.argv, self.env = argv, env
        self._lock = threading.Lock()
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")
        threading.Thread(target=self._drive, daemon=True).start()

    def _drive(self) -> None:
        while time.monotonic() - self.created < self.script.queue_s:
            if self.cancelled:
                return
            time.sleep(0.02)
        with self._lock:
            if self.cancelled:
                return
            out = open(self.log, "ab")  # noqa: SIM115 - the child holds it
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=str(self.log.parent))
            out.close()
        if self.script.fate:
            deadline = time.monotonic() + self.script.after_s
            while time.monotonic() < deadline and self.proc.poll() is None:
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.fate = self.script.fate
                self.kill()

    @property
    def started(self) -> bool:
        return self.proc is not None

    @property
    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def kill(self) -> None:
        with self._lock:
            self.cancelled = self.cancelled or self.fate is None
            if self.proc is not None and self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def local_argv(argv: list[str]) -> list[str]:
    """The image's `python3` becomes this interpreter (which has conveyor installed), as the image's would."""
    return [sys.executable, *argv[1:]] if argv and argv[0].startswith("python") else argv


def platform_env(extra: dict[str, str]) -> dict[str, str]:
    """What a job's process gets from the platform besides the job's own variables: a PATH, and this test
    directory importable so that fake hooks (Key Vault reads) resolve."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(TESTS_DIR)}
    return {**base, **extra}


class _LogServer:
    """Serves the jobs' log files over loopback HTTP, as Azure serves them through SAS URLs."""

    def __init__(self, root: Path) -> None:
        root_dir = root

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = (root_dir / self.path.lstrip("/").split("?")[0]).resolve()
                if root_dir.resolve() not in path.parents or not path.is_file():
                    self.send_response(404)
                    self.end_headers()
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- Azure ML ---------------------------------------------------------------------------------------
class FakeVault:
    """Key Vault: secrets as 0600 files (so the job's process can read them through the reader hook)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.calls: list[tuple[str, str]] = []

    def set_secret(self, name: str, value: str, **kwargs: Any) -> Any:
        self.calls.append(("set", name))
        path = self.root / name
        path.write_text(value)
        path.chmod(0o600)
        return type("KeyVaultSecret", (), {"name": name, "value": value})()

    def get_secret(self, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        path = self.root / name
        if not path.exists():
            raise ResourceNotFoundError(f"secret {name} not found")
        return type("KeyVaultSecret", (), {"name": name, "value": path.read_text()})()

    def begin_delete_secret(self, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        self.calls.append(("delete", name))
        path = self.root / name
        if not path.exists():
            raise ResourceNotFoundError(f"secret {name} not found")
        path.unlink()
        return type("Poller", (), {"wait": lambda self, timeout=None: None})()

    def purge_deleted_secret(self, name: str) -> None:
        self.calls.append(("purge", name))

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir())


def read_vault_secret(vault_url: str, name: str) -> str:
    """The bootstrap's reader hook inside a fake job: what the managed identity would fetch from Key Vault."""
    return (Path(os.environ["CONVEYOR_FAKE_VAULT_DIR"]) / name).read_text()


@dataclass
class _AzureJob:
    entity: Any
    local: LocalJob
    status_override: str | None = None
    cancel_requested: bool = False


class _RunDetails:
    def __init__(self, status: str, log_files: dict[str, str], error: dict[str, Any] | None) -> None:
        self.status, self.log_files, self.error = status, log_files, error


class FakeAzureML:
    """`MLClient` as our operator uses it: `jobs.get/create_or_update/begin_cancel`, `jobs._runs_operations.
    get_run_details` (status, error, log SAS URLs), `compute.get`."""

    def __init__(self, root: Path, vault: FakeVault, computes: dict[str, str] | None = None) -> None:
        self.root, self.vault = root, vault
        self.jobs_by_name: dict[str, _AzureJob] = {}
        self.received: list[dict[str, Any]] = []
        self.scripts: list[Script] = []
        self.computes = computes or {}
        self.logs = _LogServer(root)
        self.jobs = _AzureJobs(self)
        self.compute = _AzureComputes(self)

    def factory(self, config: Any) -> "FakeAzureML":
        self.config = config
        return self

    def status(self, job: _AzureJob) -> str:
        if job.status_override:
            return job.status_override
        local = job.local
        if local.fate == "preempted":
            return "Failed"
        if local.fate in ("oom", "timeout"):
            return "Failed"
        if local.cancelled:
            return "Canceled" if not local.alive() else "CancelRequested"
        if not local.started:
            return "Queued"
        code = local.exit_code
        if code is None:
            return "Running"
        return "Completed" if code == 0 else "Failed"

    def error(self, job: _AzureJob) -> dict[str, Any] | None:
        fate = job.local.fate
        if fate == "preempted":
            return {"error": {"code": "UserError", "message": "The low priority node was preempted"}}
        if fate == "oom":
            return {"error": {"code": "UserError", "message": "Process was killed: out of memory (exit code 137)"}}
        if fate == "timeout":
            return {"error": {"code": "JobTimeout", "message": "The job exceeded the maximum run time"}}
        if self.status(job) == "Failed":
            return {"error": {"code": "UserError", "message": f"Execution failed with exit code {job.local.exit_code}"}}
        return None

    def close(self) -> None:
        for job in self.jobs_by_name.values():
            if job.local is not None:
                job.local.kill()
        self.logs.close()


class _AzureComputes:
    def __init__(self, fake: FakeAzureML) -> None:
        self.fake = fake

    def get(self, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        if name not in self.fake.computes:
            raise ResourceNotFoundError(f"compute {name} not found")
        return type("AmlCompute", (), {"name": name, "size": self.fake.computes[name]})()


class _AzureRuns:
    def __init__(self, fake: FakeAzureML) -> None:
        self.fake = fake

    def get_run_details(self, name: str) -> _RunDetails:
        job = self.fake.jobs._job(name)
        files = {}
        if job.local.started:
            files["user_logs/std_log.txt"] = f"{self.fake.logs.url}/{name}/std_log.txt?sig=fake"
        return _RunDetails(self.fake.status(job), files, self.fake.error(job))


class _AzureJobs:
    def __init__(self, fake: FakeAzureML) -> None:
        self.fake = fake
        self._runs_operations = _AzureRuns(fake)
        self.created: list[str] = []
        self.cancels: list[str] = []

    def _job(self, name: str) -> _AzureJob:
        from azure.core.exceptions import ResourceNotFoundError

        if name not in self.fake.jobs_by_name:
            raise ResourceNotFoundError(f"job {name} not found")
        return self.fake.jobs_by_name[name]

    def get(self, name: str) -> Any:
        job = self._job(name)
        entity = job.entity
        return type("Job", (), {"name": name, "status": self.fake.status(job), "tags": dict(entity.tags or {}),
                                "studio_url": f"https://ml.azure.example/runs/{name}"})()

    def create_or_update(self, job: Any, **kwargs: Any) -> Any:
        from conveyor.step_operators.azureml.operator import AzureMLStepOperator

        if job.name in self.fake.jobs_by_name:
            raise AssertionError(f"job {job.name} created twice")
        definition = AzureMLStepOperator.job_definition(job)
        self.fake.received.append(definition)
        self.created.append(job.name)
        script = Script()
        if self.fake.scripts:
            script = self.fake.scripts[0]
            script.times -= 1
            if script.times <= 0:
                self.fake.scripts.pop(0)
        env = platform_env({**{k: str(v) for k, v in (job.environment_variables or {}).items()},
                            "CONVEYOR_AZUREML_SECRET_READER": "cloud_fakes:read_vault_secret",
                            "CONVEYOR_FAKE_VAULT_DIR": str(self.fake.vault.root)})
        argv = local_argv(shlex.split(job.command))
        local = LocalJob(argv, env, self.fake.root / job.name / "std_log.txt", script)
        self.fake.jobs_by_name[job.name] = _AzureJob(job, local)
        return self.get(job.name)

    def begin_cancel(self, name: str) -> Any:
        job = self._job(name)
        self.cancels.append(name)
        job.local.kill()
        return type("Poller", (), {"wait": lambda self, timeout=None: None, "result": lambda self: None})()


# -- Modal ------------------------------------------------------------------------------------------
@dataclass
class _ModalResult:
    """modal_proto's GenericResult as far as the operator reads it."""

    status: int
    exception: str = ""


#: GenericResult.GenericStatus numbers (modal_proto.api_pb2)
_STATUS = {"preempted": 6, "oom": 10, "timeout": 4}


class _LogStream:
    """Iterates what the process wrote to its log file, as it comes, until the process has ended."""

    def __init__(self, job: LocalJob) -> None:
        self.job = job

    def __iter__(self) -> Any:
        sent = 0
        while True:
            done = self.job.started and not self.job.alive() or self.job.cancelled and not self.job.started
            data = self.job.log.read_bytes() if self.job.log.exists() else b""
            if len(data) > sent:
                yield data[sent:].decode("utf-8", "replace")
                sent = len(data)
            if done:
                return
            time.sleep(0.05)


class _FakeSandbox:
    def __init__(self, fake: "FakeModal", job: LocalJob, spec: dict[str, Any]) -> None:
        self.fake, self.local, self.spec = fake, job, spec
        self.object_id = new_id("sb")
        self.terminated = False

    @property
    def _impl(self) -> Any:
        return type("Impl", (), {"result": self._result()})()

    def _result(self) -> _ModalResult | None:
        if self.poll() is None:
            return None
        if self.terminated:
            return _ModalResult(3)
        if self.local.fate:
            return _ModalResult(_STATUS[self.local.fate], f"fake platform: {self.local.fate}")
        return _ModalResult(1 if self.local.exit_code == 0 else 2)

    def poll(self) -> int | None:
        if self.terminated and not self.local.alive():
            return 137 if self.local.exit_code is None else self.local.exit_code
        return self.local.exit_code

    def terminate(self) -> None:
        self.fake.terminations.append(self.object_id)
        self.terminated = True
        self.local.kill()

    def get_tags(self) -> dict[str, str]:
        return dict(self.spec["tags"])

    @property
    def stdout(self) -> _LogStream:
        return _LogStream(self.local)

    @property
    def stderr(self) -> list[str]:
        return []  # the fake runs the process with stderr joined to stdout


class FakeModal:
    """The `modal` module as our operator uses it: `App.lookup`, `Image.from_registry`, `Secret.from_dict /
    from_name`, `Sandbox.create / from_id / from_name`, `Client.from_credentials`."""

    def __init__(self, root: Path) -> None:
        from modal.exception import NotFoundError

        self.root = root
        self.NotFoundError = NotFoundError
        self.sandboxes: dict[str, _FakeSandbox] = {}
        self.received: list[dict[str, Any]] = []
        self.secret_values: list[dict[str, str]] = []
        self.scripts: list[Script] = []
        self.terminations: list[str] = []
        self.clients: list[tuple[str, str]] = []
        fake = self

        class App:
            @staticmethod
            def lookup(name: str, *, create_if_missing: bool = False, **kwargs: Any) -> Any:
                assert create_if_missing
                return type("App", (), {"name": name, "app_id": f"ap-{name}"})()

        class Image:
            @staticmethod
            def from_registry(tag: str, secret: Any = None, **kwargs: Any) -> Any:
                return type("Image", (), {"tag": tag, "registry_secret": secret})()

        class Secret:
            @staticmethod
            def from_dict(env_dict: dict[str, str]) -> Any:
                fake.secret_values.append(dict(env_dict))
                return type("Secret", (), {"values": dict(env_dict), "name": None})()

            @staticmethod
            def from_name(name: str, **kwargs: Any) -> Any:
                return type("Secret", (), {"values": {}, "name": name})()

        class Client:
            @staticmethod
            def from_credentials(token_id: str, token_secret: str) -> Any:
                fake.clients.append((token_id, token_secret))
                return object()

        class Sandbox:
            @staticmethod
            def create(*args: str, app: Any, name: str, tags: dict[str, str], image: Any, env: dict[str, str],
                       secrets: list[Any], timeout: int, **kwargs: Any) -> _FakeSandbox:
                return fake._create(args, app, name, tags, image, env, secrets, timeout, kwargs)

            @staticmethod
            def from_id(sandbox_id: str, **kwargs: Any) -> _FakeSandbox:
                if sandbox_id not in fake.sandboxes:
                    raise fake.NotFoundError(f"Sandbox {sandbox_id} not found")
                return fake.sandboxes[sandbox_id]

            @staticmethod
            def from_name(app_name: str, name: str, **kwargs: Any) -> _FakeSandbox:
                for sb in fake.sandboxes.values():
                    if sb.spec["app"] == app_name and sb.spec["name"] == name and sb.poll() is None:
                        return sb
                raise fake.NotFoundError(f"no running Sandbox {name} in app {app_name}")

        self.App, self.Image, self.Secret, self.Client, self.Sandbox = App, Image, Secret, Client, Sandbox

    def _create(self, args: tuple[str, ...], app: Any, name: str, tags: dict[str, str], image: Any,
                env: dict[str, str], secrets: list[Any], timeout: int, options: dict[str, Any]) -> _FakeSandbox:
        spec = {"app": app.name, "name": name, "args": list(args), "image": image.tag, "env": dict(env),
                "tags": dict(tags), "timeout": timeout, "secrets": [s.name or sorted(s.values) for s in secrets],
                **{k: v for k, v in options.items() if k != "client"}}
        self.received.append(spec)
        script = Script()
        if self.scripts:
            script = self.scripts[0]
            script.times -= 1
            if script.times <= 0:
                self.scripts.pop(0)
        merged: dict[str, str] = {}
        for secret in secrets:
            merged.update(secret.values)
        job_env = platform_env({**merged, **env})
        sandbox = _FakeSandbox(self, LocalJob(local_argv(list(args)), job_env, self.root / name / "output.txt",
                                              script), spec)
        self.sandboxes[sandbox.object_id] = sandbox
        return sandbox

    def close(self) -> None:
        for sb in self.sandboxes.values():
            sb.local.kill()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def dumps(value: Any) -> str:
    return json.dumps(value, default=repr, sort_keys=True)
