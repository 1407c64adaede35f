"""The Ray step operator: submit the step as a Ray job through the Jobs API, follow it, stream its logs, stop it."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shlex
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, ClassVar, Iterator

from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError
from conveyor.step_operators.base import BaseStepOperator
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission
from conveyor.step_operators.ray.flavor import RayStepOperatorConfig, RayStepOperatorSettings

#: runtime_env keys that give the job an interpreter of its own: the entrypoint then runs `python` from its PATH
OWN_INTERPRETER = ("pip", "uv", "conda", "py_executable", "container", "image_uri")
#: Ray's error_type when the job's supervisor could not be placed within RAY_JOB_START_TIMEOUT_SECONDS
NEVER_PLACED = {"JOB_SUPERVISOR_ACTOR_START_TIMEOUT", "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE"}
NODES_TTL_S = 30.0
#: dropped in the attempt folder by cancel(); the job's guard then exits instead of running the step
CANCEL_MARKER = "ray-cancelled"
#: how long cancel() waits for a stopped job that is still pending (not yet placed) before giving up
PENDING_STOP_WAIT_S = 2.0
#: how long the Jobs API may be unreachable before a job is reported lost (and re-submitted as a new attempt)
UNREACHABLE_GRACE_S = 60.0


def _is_missing(err: BaseException) -> bool:
    text = str(err)
    return "does not exist" in text or "404" in text.split(":", 1)[0]


class RayStepOperator(BaseStepOperator):
    streams_logs: ClassVar[bool] = True
    stores_logs: ClassVar[bool] = False
    #: the job runs the unchanged entrypoint on a Ray node that shares this machine's paths (code and artifact store)
    needs_code_archive: ClassVar[bool] = False
    #: runtime_env env_vars appear in the argv of Ray's worker processes
    exposes_environment: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[str, Any] = {}
        self._client_lock = threading.Lock()
        self._nodes: tuple[float, list[dict[str, Any]]] | None = None
        self._done: set[str] = set()
        self._unreachable: dict[str, float] = {}
        self._last: dict[str, str] = {}

    @property
    def config(self) -> RayStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    # -- helpers ----------------------------------------------------------------------------------
    def _client(self, address: str | None = None) -> Any:
        address = address or self.config.address
        with self._client_lock:
            client = self._clients.get(address)
            if client is None:
                from ray.job_submission import JobSubmissionClient

                client = self._clients[address] = JobSubmissionClient(address)
            return client

    @staticmethod
    def _settings(info: StepRunInfo) -> RayStepOperatorSettings:
        return info.config.operator_settings or RayStepOperatorSettings()  # type: ignore[return-value]

    def runtime_env(self, info: StepRunInfo, environment: dict[str, str]) -> dict[str, Any]:
        """The operator's runtime_env, the step's additions, and the step's environment as env_vars (last: they win)."""
        env: dict[str, Any] = json.loads(json.dumps(self.config.runtime_env))
        for key, value in self._settings(info).runtime_env.items():
            if key == "env_vars":
                env["env_vars"] = {**env.get("env_vars", {}), **value}
            elif key == "pip" and isinstance(value, list) and isinstance(env.get("pip"), list):
                env["pip"] = [*env["pip"], *value]
            else:
                env[key] = value
        env["env_vars"] = {**{k: str(v) for k, v in env.get("env_vars", {}).items()}, **environment}
        return env

    @staticmethod
    def cancel_marker(info: StepRunInfo) -> str | None:
        """The file cancel() drops so that a job Ray starts after it was cancelled does not run the step."""
        if not info.attempt_uri or "://" in info.attempt_uri:
            return None  # a remote artifact store: no shared path to leave the marker at
        return os.path.join(info.attempt_uri, CANCEL_MARKER)

    def entrypoint(self, entrypoint_command: list[str], runtime_env: dict[str, Any], marker: str | None = None) -> str:
        command = list(entrypoint_command)
        if self.config.python:
            command[0] = self.config.python
        elif any(key in runtime_env for key in OWN_INTERPRETER):
            command[0] = "python"
        else:
            command[0] = sys.executable
        if marker:
            command = [command[0], "-m", "conveyor.step_operators.ray.guard", marker, "--", *command]
        return shlex.join(command)

    def entrypoint_resources(self, info: StepRunInfo) -> dict[str, Any]:
        """ResourceSettings as submit_job's entrypoint_* arguments (None: not requested)."""
        r = info.config.resource_settings
        settings = self._settings(info)
        custom = {k: float(v) for k, v in settings.resources.items()}
        if settings.accelerator_type:
            custom[f"accelerator_type:{settings.accelerator_type}"] = 0.001
        return {
            "entrypoint_num_cpus": r.cpu_count,
            "entrypoint_num_gpus": r.gpu_count or None,
            "entrypoint_memory": r.memory_bytes,
            "entrypoint_resources": custom or None,
        }

    def request(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        runtime_env = self.runtime_env(info, environment)
        marker = self.cancel_marker(info)
        return {"entrypoint": self.entrypoint(entrypoint_command, runtime_env, marker), "submission_id": info.job_name,
                "runtime_env": runtime_env, "metadata": {"conveyor_run_id": info.run_id,
                                                         "conveyor_step_run_id": info.step_run_id,
                                                         "conveyor_step": info.pipeline_step_name,
                                                         "conveyor_attempt": str(info.attempt)},
                **{k: v for k, v in self.entrypoint_resources(info).items() if v is not None}}

    # -- checks -----------------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, float]]:
        """resources_total of every alive node, read from the dashboard's state API (no driver connection)."""
        if self._nodes is not None and time.monotonic() - self._nodes[0] < NODES_TTL_S:
            return self._nodes[1]
        url = f"{self.config.address}/api/v0/nodes?limit=10000&timeout=10"
        try:
            with urllib.request.urlopen(url, timeout=15) as resp:  # noqa: S310 - the configured cluster address
                body = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise ResourceUnavailableError(
                f"cannot read the resources of the Ray cluster at {self.config.address}: {err}. "
                "Is the head running and `address` its dashboard address (default port 8265)?") from None
        rows = ((body.get("data") or {}).get("result") or {}).get("result") or []
        nodes = [dict(row.get("resources_total") or {}) for row in rows if row.get("state") == "ALIVE"]
        self._nodes = (time.monotonic(), nodes)
        return nodes

    def check_resources(self, info: StepRunInfo) -> None:
        wanted = {k: v for k, v in self.entrypoint_resources(info).items() if v}
        if not wanted:
            return
        nodes = self.nodes()
        step = info.pipeline_step_name
        if not nodes:
            raise ResourceUnavailableError(f"step {step!r}: the Ray cluster at {self.config.address} has no alive node")
        r = info.config.resource_settings

        def largest(key: str) -> float:
            return max(n.get(key, 0.0) for n in nodes)

        def fits(node: dict[str, float]) -> bool:
            need = {"CPU": wanted.get("entrypoint_num_cpus") or 0, "GPU": wanted.get("entrypoint_num_gpus") or 0,
                    "memory": wanted.get("entrypoint_memory") or 0, **(wanted.get("entrypoint_resources") or {})}
            return all(node.get(k, 0.0) + 1e-9 >= v for k, v in need.items() if v)

        if any(fits(n) for n in nodes):
            return
        asks = []
        if r.cpu_count is not None and r.cpu_count > largest("CPU"):
            asks.append(f"cpu_count={r.cpu_count:g} (largest node: {largest('CPU'):g} CPUs)")
        if r.gpu_count and r.gpu_count > largest("GPU"):
            asks.append(f"gpu_count={r.gpu_count} (largest node: {largest('GPU'):g} GPUs)")
        if r.memory_bytes is not None and r.memory_bytes > largest("memory"):
            asks.append(f"memory={r.memory} (largest node: {math.floor(largest('memory') / 2**20)} MiB of Ray memory)")
        for key, value in (wanted.get("entrypoint_resources") or {}).items():
            if value > largest(key):
                name = key.split(":", 1)[1] if key.startswith("accelerator_type:") else key
                asks.append(f"accelerator_type={name!r}" if key.startswith("accelerator_type:")
                            else f"resource {name}={value:g} (largest node: {largest(key):g})")
        what = ", ".join(asks) or "this combination of resources"
        raise ResourceUnavailableError(
            f"step {step!r} asks for {what}, more than any node of the Ray cluster at {self.config.address} has: "
            "Ray would leave the job pending forever, so it is not submitted; lower the request")

    # -- full contract ----------------------------------------------------------------------------
    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        request = self.request(info, entrypoint_command, environment)
        client = self._client()
        reattached = False
        try:
            client.submit_job(**request)
        except RuntimeError as err:
            if "already exists" not in str(err):
                raise
            reattached = True  # a restarted orchestrator: follow the job already submitted, never submit twice
        sid = request["submission_id"]
        return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=sid,
                          data={"submission_id": sid, "address": self.config.address, "reattached": reattached,
                                "cancel_marker": self.cancel_marker(info)})

    def _job(self, submission: Submission) -> Any:
        return self._client(submission.data.get("address")).get_job_info(submission.data["submission_id"])

    def get_status(self, submission: Submission) -> StatusReport:
        sid = submission.data["submission_id"]
        try:
            job = self._job(submission)
        except Exception as err:  # noqa: BLE001 - HTTP errors surface as RuntimeError or requests errors
            if _is_missing(err):
                self._done.add(sid)
                return StatusReport("lost", f"the Ray cluster no longer knows job {sid}")
            # the dashboard may restart or blip: keep the last known state for a while rather than call the job
            # lost (which re-submits it) while it may still be running
            since = self._unreachable.setdefault(sid, time.monotonic())
            last = self._last.get(sid, "queued")
            if time.monotonic() - since < UNREACHABLE_GRACE_S:
                return StatusReport(last, f"cannot reach the Ray cluster at {submission.data.get('address')}: {err}")
            self._done.add(sid)
            return StatusReport("lost", f"cannot reach the Ray cluster to follow job {sid} for "
                                f"{UNREACHABLE_GRACE_S:g}s: {err}")
        self._unreachable.pop(sid, None)
        report = self._report(sid, job)
        self._last[sid] = report.state
        if report.terminal:
            self._done.add(sid)
        return report

    @staticmethod
    def _report(sid: str, job: Any) -> StatusReport:
        status = str(getattr(job.status, "value", job.status))
        message = (job.message or "").strip()
        if status == "PENDING":
            return StatusReport("queued", message or f"Ray job {sid} is pending")
        if status == "RUNNING":
            return StatusReport("running")
        code = getattr(job, "driver_exit_code", None)
        if status == "SUCCEEDED":
            return StatusReport("completed", exit_code=code if code is not None else 0)
        if status == "STOPPED":
            return StatusReport("cancelled", f"Ray job {sid} was stopped", exit_code=code)
        error_type = str(getattr(job, "error_type", "") or "")
        first = message.splitlines()[0] if message else ""
        if error_type in NEVER_PLACED:
            return StatusReport("failed", f"Ray job {sid} could never be placed: {first}", exit_code=code,
                                kind="pending")
        if "OutOfMemoryError" in message or "memory monitor" in message.lower():
            return StatusReport("failed", f"{MEMORY_ADVICE} (Ray's memory monitor killed job {sid})",
                                exit_code=code, kind="memory")
        detail = f" ({error_type})" if error_type else ""
        return StatusReport("failed", f"Ray job {sid} failed{detail}: {first}", exit_code=code)

    def cancel(self, submission: Submission) -> None:
        sid = submission.data.get("submission_id")
        if not sid:
            return
        client = self._client(submission.data.get("address"))
        try:
            if client.get_job_status(sid).is_terminal():
                return
            self._drop_marker(submission.data.get("cancel_marker"))
            client.stop_job(sid)
        except Exception as err:  # noqa: BLE001 - cancel is idempotent and best effort
            if _is_missing(err):
                return
            raise
        asked = time.monotonic()
        while time.monotonic() - asked < self.config.stop_timeout:
            try:
                status = client.get_job_status(sid)
            except Exception:  # noqa: BLE001
                return
            if status.is_terminal():
                break
            if str(getattr(status, "value", status)) == "PENDING" and time.monotonic() - asked > PENDING_STOP_WAIT_S:
                # Ray hands the stop to the job's supervisor actor, which acts only once it is placed, and the
                # entrypoint then still starts: the guard finds the cancel marker and exits (docs: ray.md)
                break
            time.sleep(0.1)
        self._done.add(sid)

    @staticmethod
    def _drop_marker(marker: str | None) -> None:
        """A job Ray places after this (it was still pending) exits at once instead of running the step."""
        if marker:
            try:
                os.makedirs(os.path.dirname(marker), exist_ok=True)
                with open(marker, "w") as fh:
                    fh.write("cancelled\n")
            except OSError:
                pass

    def cleanup(self, submission: Submission) -> None:
        sid = submission.data.get("submission_id", "")
        self._done.discard(sid)
        for table in (self._unreachable, self._last):
            table.pop(sid, None)

    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        sid = submission.data["submission_id"]
        client = self._client(submission.data.get("address"))
        if not follow:
            try:
                text = client.get_job_logs(sid)
            except Exception:  # noqa: BLE001
                return
            if text:
                yield text
            return
        sent = 0
        try:
            for chunk in self._tail(client, sid):
                sent += len(chunk)
                yield chunk
            return
        except Exception:  # noqa: BLE001 - no websocket (a proxy?): poll the whole log instead
            pass
        yield from self._poll_logs(client, sid, sent)

    def _tail(self, client: Any, sid: str) -> Iterator[str]:
        """Follow `tail_job_logs` (an async generator) from this thread, on an event loop of its own."""
        loop = asyncio.new_event_loop()
        agen = client.tail_job_logs(sid)
        task: asyncio.Task[str] | None = None
        sent = 0
        try:
            while True:
                if task is None:
                    task = loop.create_task(agen.__anext__())
                loop.run_until_complete(asyncio.wait({task}, timeout=0.1 if sid in self._done else 0.5))
                if not task.done():
                    if sid in self._done:
                        # The job has ended but Ray's log websocket often stays open: take the rest of the log
                        # in one request instead of waiting for the socket.
                        rest = client.get_job_logs(sid) or ""
                        if len(rest) > sent:
                            yield rest[sent:]
                        return
                    continue
                try:
                    chunk = task.result()
                except StopAsyncIteration:
                    return
                task = None
                if chunk:
                    sent += len(chunk)
                    yield chunk
        finally:
            if task is not None and not task.done():
                task.cancel()
                loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
            loop.run_until_complete(asyncio.gather(agen.aclose(), return_exceptions=True))
            loop.close()

    def _poll_logs(self, client: Any, sid: str, offset: int) -> Iterator[str]:
        while True:
            try:
                text = client.get_job_logs(sid)
                done = client.get_job_status(sid).is_terminal()
            except Exception:  # noqa: BLE001
                return
            if len(text) > offset:
                yield text[offset:]
                offset = len(text)
            if done:
                return
            time.sleep(0.2)

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        request = self.request(info, entrypoint_command, environment)
        request["runtime_env"]["env_vars"] = sorted(request["runtime_env"]["env_vars"])  # names only
        return {"flavor": self.flavor, "job_name": info.job_name, "address": self.config.address,
                "submit_job": request}
