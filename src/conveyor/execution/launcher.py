"""The launcher: cache, retries, timeout, and hand-off of one step to a step operator or to this process."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError, StepFailedError
from conveyor.execution.jobspec import JOB_SPEC_VERSION, JobSpecError, parse_result
from conveyor.secrets.runtime import mark_for_redaction, redact
from conveyor.store.store import new_id, now

if TYPE_CHECKING:
    from conveyor.artifact_stores.base import BaseArtifactStore
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution.display import Display
    from conveyor.pipelines.compiler import Snapshot
    from conveyor.stack.stack import Stack
    from conveyor.step_operators.base import BaseStepOperator
    from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission
    from conveyor.store.store import MetadataStore

POLL_START, POLL_MAX = 0.05, 2.0
#: how often a log stored in a remote artifact store (no append) is rewritten while the step runs
LIVE_LOG_FLUSH_S = 1.0
STORAGE_OPTIONS_ENV = "CONVEYOR_STORAGE_OPTIONS"
#: failures StepRetryConfig retries: the step's own doing. Preemption and lost jobs have their own budget;
#: a refused submission, an impossible request or a stop are never retried.
USER_RETRYABLE = frozenset({"user", "memory", "crash", "timeout"})


@dataclass
class ResolvedStep:
    name: str
    operator: str | None
    flavor: str | None
    config: dict[str, Any]  # what the store and the Client show


@dataclass
class RunState:
    """Everything the launchers of one run share."""

    store: "MetadataStore"
    artifacts: "ArtifactStore"
    stack: "Stack"
    snapshot: "Snapshot"
    run_id: str
    run_name: str
    step_ids: dict[str, str]
    resolved: dict[str, ResolvedStep]
    display: "Display"
    stop_event: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    in_process_threads: dict[str, int] = field(default_factory=dict)
    #: on resume: step name -> {"attempt": n, "submission": receipt} of a backend job to follow, not resubmit
    reattach: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: on resume: step name -> attempts already made, so new attempts get new directories
    previous_attempts: dict[str, int] = field(default_factory=dict)


class _Failure(Exception):
    def __init__(self, message: str, kind: str, traceback: str | None = None) -> None:
        super().__init__(message)
        self.message, self.kind, self.traceback = message, kind, traceback


def cache_key(spec: Any, inputs: dict[str, str]) -> str:
    payload = {"code": spec["code_hash"], "step": spec["step"], "parameters": spec["parameters"],
               "inputs": dict(sorted(inputs.items())), "outputs": spec["outputs"]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def build_step_info(stack: "Stack", snapshot: "Snapshot", name: str, operator: "BaseStepOperator", *, run_id: str,
                    run_name: str, step_run_id: str, attempt: int, attempt_uri: str) -> "StepRunInfo":
    """What a step operator is told about one attempt of one step."""
    from conveyor.config.settings import operator_settings, resource_settings
    from conveyor.pipelines.compiler import thaw
    from conveyor.step_operators.info import PipelineConfig, StepConfig, StepRunInfo

    spec = snapshot.step_spec(name)
    settings = thaw(spec["settings"])
    flavor = stack._registry.get("step_operator", operator.flavor)
    config = StepConfig(
        name=name, step_operator=operator.name, resource_settings=resource_settings(settings),
        settings=settings, operator_settings=operator_settings(settings, flavor, f"step {name!r}"),
        timeout=spec["timeout"], enable_cache=spec["enable_cache"])
    return StepRunInfo(
        config=config, pipeline=PipelineConfig(snapshot.pipeline_name, thaw(snapshot.spec["settings"])),
        run_name=run_name, pipeline_step_name=name, run_id=run_id, step_run_id=step_run_id,
        attempt=attempt, job_name=f"conveyor-{step_run_id[:16]}-{attempt}",
        job_uri=f"{attempt_uri}/job.json", attempt_uri=attempt_uri)


def step_environment(settings: Any, resolve: bool = True) -> dict[str, str]:
    """settings["environment"], with secret references resolved (only now, at launch) unless asked not to."""
    from conveyor.pipelines.compiler import thaw

    env = dict(thaw(settings.get("environment") or {}))
    if env and resolve:
        from conveyor.secrets.runtime import resolve as resolve_secrets

        env = resolve_secrets(env)
    return env


@contextmanager
def process_environment(env: dict[str, str]) -> Iterator[None]:
    """An in-process step's environment: set for its duration, then restored (shared by concurrent steps)."""
    if not env:
        yield
        return
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def entrypoint_request(info: "StepRunInfo", store: "BaseArtifactStore") -> tuple[list[str], dict[str, str]]:
    """The command and environment every step operator is handed for one attempt.

    The environment carries the artifact store's credentials (never the job spec or argv), for each backend to
    deliver through its secret mechanism, and the store's non-secret fsspec options for opening the job spec.
    """
    from conveyor.step_operators.entrypoint import StepOperatorEntrypointConfiguration as EP

    command = EP.get_entrypoint_command() + EP.get_entrypoint_arguments(
        job=info.job_uri, step_name=info.pipeline_step_name, step_run_id=info.step_run_id)
    environment = {"CONVEYOR_RUN_ID": info.run_id, "CONVEYOR_STEP_RUN_ID": info.step_run_id,
                   "CONVEYOR_STEP_NAME": info.pipeline_step_name, **store.config.remote_environment()}
    options = store.config.remote_options()
    if options:
        environment[STORAGE_OPTIONS_ENV] = json.dumps(options, sort_keys=True)
    return command, environment


class StepLauncher:
    def __init__(self, state: RunState, name: str) -> None:
        self.s = state
        self.name = name
        self.spec = state.snapshot.step_spec(name)
        self.step_run_id = state.step_ids[name]
        self.resolved = state.resolved[name]

    # -- entry ------------------------------------------------------------------------------------
    def launch(self) -> str:
        """Run the step to an end state; returns "completed" or "cached", raises StepFailedError otherwise."""
        inputs = {arg: self.s.outputs[src["step"]][src["output"]] for arg, src in self.spec["inputs"].items()}
        input_ids = {arg: a["id"] for arg, a in inputs.items()}
        key = cache_key(self.spec, input_ids)
        reattach = self.s.reattach.pop(self.name, None)
        if self.spec["enable_cache"] and reattach is None:  # a job still running is followed, never abandoned
            hit = self.s.store.find_cached(key)
            if hit is not None and set(hit["outputs"]) == set(self.spec["outputs"]):
                ts = now()
                self.s.store.finish_step(self.step_run_id, status="cached", inputs=input_ids, outputs=hit["outputs"],
                                         cache_key=key, cached_from=hit["step_run_id"], start_time=ts, end_time=ts)
                self.s.outputs[self.name] = hit["outputs"]
                self.s.display.update(self.name, "cached")
                return "cached"
        retry = self.spec["retry"] or {"max_retries": 0, "delay": 0.0, "backoff": 1.0}
        operator = self.s.stack.step_operator(self.resolved.operator) if self.resolved.operator else None
        infra_budget = operator.config.infrastructure_retries if operator is not None else 0
        user_retries = infra_retries = 0
        attempt = self.s.previous_attempts.get(self.name, 0)
        started = now()
        while True:
            receipt = None
            if reattach is not None:
                attempt, receipt, reattach = reattach["attempt"], reattach["submission"], None
            else:
                attempt += 1
            self.s.store.update_step_run(self.step_run_id, status="running", attempt=attempt, start_time=started,
                                         cache_key=key, error=None, failure_kind=None, traceback=None)
            self.s.display.update(self.name, "running", f"attempt {attempt}" if attempt > 1 else "")
            attempt_uri = self.s.artifacts.join("runs", self.s.run_id, "steps", self.name, f"attempt-{attempt}")
            outputs = {o: {"uri": f"{attempt_uri}/outputs/{o}", "type": t} for o, t in self.spec["outputs"].items()}
            try:
                if operator is None:
                    metas = self._run_in_process(inputs, outputs, attempt_uri)
                else:
                    metas = self._run_with_operator(operator, attempt, attempt_uri, inputs, outputs, receipt)
            except _Failure as failure:
                if failure.kind == "stopped" or self.s.stop_event.is_set() or self.s.store.stop_requested(self.s.run_id):
                    self._finish_failed("stopped", failure, input_ids)
                    raise StepFailedError(self.name, failure.message, failure.traceback, "stopped") from None
                if failure.kind == "infrastructure" and receipt is not None:
                    # the job we were to re-attach to is gone (or died with its orchestrator): submit it anew
                    self.s.display.update(self.name, "running", f"re-submitting: {failure.message}")
                    continue
                if failure.kind == "infrastructure" and infra_retries < infra_budget:
                    infra_retries += 1
                    self.s.display.update(self.name, "running", f"infrastructure failure, re-submitting: {failure.message}")
                    continue
                if failure.kind in USER_RETRYABLE and user_retries < retry["max_retries"]:
                    user_retries += 1
                    delay = retry["delay"] * retry["backoff"] ** (user_retries - 1)
                    self.s.display.update(self.name, "running", f"failed, retry {user_retries}/{retry['max_retries']} in {delay:g}s")
                    if self.s.stop_event.wait(delay):
                        self._finish_failed("stopped", _Failure("run stopped while waiting to retry", "stopped"), input_ids)
                        raise StepFailedError(self.name, "stopped", None, "stopped") from None
                    continue
                self._finish_failed("failed", failure, input_ids)
                raise StepFailedError(self.name, failure.message, failure.traceback, failure.kind) from None
            self._finish_completed(metas, input_ids, outputs)
            return "completed"

    # -- bookkeeping ------------------------------------------------------------------------------
    def _finish_completed(self, metas: dict[str, dict[str, Any]], input_ids: dict[str, str],
                          outputs: dict[str, dict[str, str]]) -> None:
        rows = {}
        for name, meta in metas.items():
            rows[name] = {"id": new_id(), "uri": outputs[name]["uri"], "materializer": meta["materializer"],
                          "data_type": meta["data_type"], "checksum": meta.get("checksum"), "size": meta.get("size")}
        self.s.store.finish_step(self.step_run_id, status="completed", inputs=input_ids, outputs=rows,
                                 new_artifacts=list(rows.values()), end_time=now())
        self.s.outputs[self.name] = rows
        self.s.display.update(self.name, "completed")

    def _finish_failed(self, status: str, failure: _Failure, input_ids: dict[str, str]) -> None:
        failure.message = redact(failure.message)
        failure.traceback = redact(failure.traceback) if failure.traceback else failure.traceback
        self.s.store.finish_step(self.step_run_id, status=status, inputs=input_ids, outputs={}, end_time=now(),
                                 error=failure.message, failure_kind=failure.kind, traceback=failure.traceback)
        self.s.display.update(self.name, status, failure.message.splitlines()[0] if failure.message else "")

    def _log_sink(self, log_uri: str) -> tuple[Any, Any]:
        """A sink that appends to the stored log and echoes complete lines to the display.

        A remote store (S3) has no append: the log so far is rewritten at most once per LIVE_LOG_FLUSH_S while
        the step runs, so `conveyor run logs` and other processes see it live there too.
        """
        path = self.s.artifacts.local_path(log_uri)
        buffer: list[str] = []
        pending = [""]
        fh = None
        if path:
            fh = self.s.artifacts.open(log_uri, "a")  # noqa: SIM115 - closed by close()
        lock = threading.Lock()
        flushing = threading.Lock()
        live: dict[str, Any] = {"timer": None, "last": 0.0, "closed": False}

        def flush_remote() -> None:
            with flushing:  # one write at a time, each with everything so far: never an older log over a newer
                with lock:
                    live["timer"] = None
                    if live["closed"]:
                        return
                    text = "".join(buffer)
                    live["last"] = time.monotonic()
                try:
                    self.s.artifacts.write_text(log_uri, text)
                except Exception:  # noqa: BLE001 - best effort while running; close() writes the whole log
                    pass

        def sink(text: str) -> None:
            text = redact(text)
            with lock:
                if fh is not None:
                    fh.write(text)
                    fh.flush()
                else:
                    buffer.append(text)
                    if live["timer"] is None and not live["closed"]:
                        wait = max(0.0, LIVE_LOG_FLUSH_S - (time.monotonic() - live["last"]))
                        live["timer"] = threading.Timer(wait, flush_remote)
                        live["timer"].daemon = True
                        live["timer"].start()
                pending[0] += text
                *lines, pending[0] = pending[0].split("\n")
            for line in lines:
                self.s.display.log(self.name, line)

        def close() -> None:
            with lock:
                live["closed"] = True
                if live["timer"] is not None:
                    live["timer"].cancel()
            with flushing, lock:
                if pending[0]:
                    self.s.display.log(self.name, pending[0])
                    pending[0] = ""
                if fh is not None:
                    fh.close()
                elif buffer:
                    self.s.artifacts.write_text(log_uri, "".join(buffer))

        return sink, close

    # -- in process -------------------------------------------------------------------------------
    def _run_in_process(self, inputs: dict[str, dict[str, Any]], outputs: dict[str, dict[str, str]],
                        attempt_uri: str) -> dict[str, dict[str, Any]]:
        import traceback

        from conveyor.execution import capture
        from conveyor.execution.interrupt import StepInterrupted, Watchdog
        from conveyor.execution.runner import load_inputs, run_function

        from conveyor.artifacts.store import ArtifactStoreError

        log_uri = f"{attempt_uri}/logs.txt"
        self.s.store.update_step_run(self.step_run_id, logs_uri=log_uri)
        try:
            sink, close = self._log_sink(log_uri)
        except ArtifactStoreError as err:
            raise _Failure(str(err), "store") from None
        func = self.s.snapshot.steps[self.name].entrypoint
        try:
            self.s.in_process_threads[self.name] = threading.get_ident()
            try:
                with capture.capture_thread(sink), Watchdog(self.spec["timeout"]), \
                        process_environment(step_environment(self.spec["settings"])):
                    values = load_inputs(inputs, self.s.artifacts)
                    metas = run_function(func, self.name, self.spec["parameters"], values, outputs, self.s.artifacts)
            finally:
                self.s.in_process_threads.pop(self.name, None)
        except StepInterrupted as err:
            if err.reason == "timeout":
                raise _Failure(f"timed out after {self.spec['timeout']:g}s", "timeout") from None
            raise _Failure("stopped", "stopped") from None
        except MemoryError as err:
            raise _Failure(f"{MEMORY_ADVICE}: {err}", "memory", traceback.format_exc()) from None
        except ArtifactStoreError as err:  # the store, not the step's code: full, read-only, unreachable
            raise _Failure(str(err), "store", traceback.format_exc()) from None
        except Exception as err:  # noqa: BLE001 - user code
            raise _Failure(f"{type(err).__name__}: {err}", "user", traceback.format_exc()) from None
        finally:
            close()
        return {n: m._asdict() if hasattr(m, "_asdict") else dict(vars(m)) for n, m in metas.items()}

    # -- through a step operator ------------------------------------------------------------------
    def build_info(self, operator: "BaseStepOperator", attempt: int, attempt_uri: str) -> "StepRunInfo":
        return build_step_info(self.s.stack, self.s.snapshot, self.name, operator, run_id=self.s.run_id,
                               run_name=self.s.run_name, step_run_id=self.step_run_id, attempt=attempt,
                               attempt_uri=attempt_uri)

    def job_spec(self, info: "StepRunInfo", inputs: dict[str, dict[str, Any]], outputs: dict[str, dict[str, str]],
                 log_uri: str | None) -> dict[str, Any]:
        from conveyor.pipelines.compiler import thaw

        return {
            "version": JOB_SPEC_VERSION, "run_id": self.s.run_id, "run_name": self.s.run_name,
            "pipeline": self.s.snapshot.pipeline_name, "step_name": self.name, "step_run_id": self.step_run_id,
            "attempt": info.attempt, "source": thaw(self.spec["source"]), "parameters": thaw(self.spec["parameters"]),
            "inputs": {arg: {"uri": a["uri"], "materializer": a["materializer"], "data_type": a["data_type"]}
                       for arg, a in inputs.items()},
            "outputs": outputs, "settings": thaw(self.spec["settings"]),
            "resources": info.config.resource_settings.model_dump(exclude_none=True),
            "artifact_store": {"root": self.s.artifacts.root,
                               "storage_options": self.s.stack.artifact_store.config.remote_options()},
            "result_uri": f"{info.attempt_uri}/result.json", "log_uri": log_uri,
        }

    def _run_with_operator(self, operator: "BaseStepOperator", attempt: int, attempt_uri: str,
                           inputs: dict[str, dict[str, Any]], outputs: dict[str, dict[str, str]],
                           receipt: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        from conveyor.step_operators.info import Submission

        info = self.build_info(operator, attempt, attempt_uri)
        log_uri = f"{attempt_uri}/logs.txt"
        if receipt is not None:  # resume: follow the job an earlier orchestrator submitted
            submission = Submission.from_json(receipt)
            self.s.display.update(self.name, "running", f"re-attached to job {submission.job_name}")
            report, reason = self._wait(operator, submission, info, log_uri)
            return self._outcome(operator, report, reason, info)
        spec = self.job_spec(info, inputs, outputs, None if operator.streams_logs else log_uri)
        if operator.needs_code_archive and spec["source"].get("code_root"):
            from conveyor.execution.code_archive import upload

            spec["source"]["code_archive"] = upload(self.s.artifacts, spec["source"]["code_root"])
        self.s.artifacts.write_text(info.job_uri, json.dumps(spec))
        command, environment = entrypoint_request(info, self.s.stack.artifact_store)
        environment.update(step_environment(self.spec["settings"]))
        mark_for_redaction(environment)
        sealed_key = None
        if operator.exposes_environment:
            from conveyor.secrets.envelope import seal

            key_uri = f"{attempt_uri}/envelope.key"
            store_vars = set(self.s.stack.artifact_store.config.remote_environment())
            sealed_key = key_uri if seal(environment, self.s.artifacts, key_uri, store_vars) else None
        try:
            operator.check_resources(info)
        except ResourceUnavailableError as err:
            raise _Failure(str(err), "resources") from None
        self.s.store.update_step_run(self.step_run_id, logs_uri=log_uri,
                                     submission={"flavor": operator.flavor, "job_name": info.job_name,
                                                 "data": {"state": "submitting"}})
        try:
            submission: Submission = operator.submit(info, command, environment)
        except Exception as err:  # noqa: BLE001 - a backend refusing the job
            raise _Failure(f"submission to step operator {operator.name!r} failed: {type(err).__name__}: {err}",
                           "submit") from None
        self.s.store.update_step_run(self.step_run_id, submission=submission.to_json())
        try:
            report, reason = self._wait(operator, submission, info, log_uri)
        finally:
            if sealed_key is not None and self.s.artifacts.exists(sealed_key):  # the step never opened it
                self.s.artifacts.rm(sealed_key)
        return self._outcome(operator, report, reason, info)

    def _wait(self, operator: "BaseStepOperator", submission: "Submission", info: "StepRunInfo",
              log_uri: str) -> tuple["StatusReport", str | None]:
        """Poll from 50 ms backing off to 2 s; stream logs; enforce stop, timeout and pending timeout."""
        from conveyor.step_operators.info import StatusReport

        log_thread = None
        close = None
        if operator.streams_logs:
            if getattr(operator, "stores_logs", False) and self.s.artifacts.is_local:
                sink = lambda text: [self.s.display.log(self.name, ln) for ln in redact(text).splitlines()]  # noqa: E731
            else:
                sink, close = self._log_sink(log_uri)
            log_thread = threading.Thread(target=self._pump_logs, args=(operator, submission, sink), daemon=True,
                                          name=f"logs-{self.name}")
            log_thread.start()
        delay = POLL_START
        start = time.monotonic()
        running_since: float | None = None
        pending_timeout = operator.config.pending_timeout
        timeout = self.spec["timeout"]
        reason: str | None = None
        shown = "running"
        try:
            while True:
                report = operator.get_status(submission)
                if report.terminal:
                    break
                if report.state != shown:
                    shown = report.state
                    self.s.display.update(self.name, report.state, report.message)
                t = time.monotonic()
                if report.state == "running" and running_since is None:
                    running_since = t
                if self.s.stop_event.is_set():
                    reason = "stopped"
                elif timeout and running_since is not None and t - running_since > timeout:
                    reason = "timeout"
                elif pending_timeout and running_since is None and t - start > pending_timeout:
                    reason = "pending"
                if reason:
                    operator.cancel(submission)
                    after = operator.get_status(submission)
                    report = StatusReport(after.state, report.message or after.message, after.exit_code, after.kind)
                    break
                waiter = getattr(operator, "wait_for_change", None)
                if waiter is not None:  # the backend can tell us the moment the job ends
                    waiter(submission, min(delay, 0.2))
                elif self.s.stop_event.wait(delay):
                    continue
                delay = min(delay * 1.5, getattr(operator.config, "poll_interval", POLL_MAX))
        except BaseException:
            operator.cancel(submission)
            raise
        finally:
            if log_thread is not None:
                log_thread.join(timeout=5)
            if close is not None:
                close()
            operator.cleanup(submission)
        return report, reason

    def _pump_logs(self, operator: "BaseStepOperator", submission: "Submission", sink: Any) -> None:
        try:
            for chunk in operator.logs(submission, follow=True):
                sink(chunk if chunk.endswith("\n") else chunk + "\n")
        except Exception as err:  # noqa: BLE001 - losing the log stream must not fail the step
            self.s.display.log(self.name, f"(log streaming stopped: {err})")

    def _outcome(self, operator: "BaseStepOperator", report: "StatusReport", reason: str | None,
                 info: "StepRunInfo") -> dict[str, dict[str, Any]]:
        if reason == "stopped":
            raise _Failure("stopped", "stopped")
        if reason == "timeout":
            raise _Failure(f"timed out after {self.spec['timeout']:g}s: the job was cancelled", "timeout")
        if reason == "pending":
            raise _Failure(f"still waiting in the queue after {operator.config.pending_timeout:g}s (pending timeout): "
                           f"{report.message or 'the backend could not place it'}", "pending")
        result_uri = f"{info.attempt_uri}/result.json"
        result = None
        if self.s.artifacts.exists(result_uri):
            try:
                result = parse_result(self.s.artifacts.read_text(result_uri), result_uri)
            except JobSpecError as err:
                raise _Failure(str(err), "infrastructure" if report.state in ("preempted", "lost") else "result") from None
        if result is not None:
            if result["status"] == "completed":
                return result.get("outputs") or {}
            error = result.get("error") or {}
            kind = error.get("kind", "user")
            return self._raise(f"{error.get('type', 'Error')}: {error.get('message', '')}" if kind != "memory"
                               else error.get("message", MEMORY_ADVICE), kind, error.get("traceback"))
        if report.state in ("preempted", "lost"):
            raise _Failure(f"job {report.state}: {report.message}".rstrip(": "), "infrastructure")
        if report.state == "cancelled":
            raise _Failure(f"job was cancelled outside Conveyor: {report.message}".rstrip(": "), "stopped")
        code = report.exit_code
        if report.kind in ("memory", "timeout", "pending"):
            raise _Failure(report.message or MEMORY_ADVICE, report.kind)
        if code in (137, -9) and "memory" in report.message:
            raise _Failure(report.message, "memory")
        detail = f" (exit code {code})" if code is not None else ""
        raise _Failure(f"the step ended without a result{detail}: {report.message or 'see the step logs'}", "infrastructure"
                       if report.state != "failed" else "crash")

    @staticmethod
    def _raise(message: str, kind: str, traceback: str | None) -> Any:
        raise _Failure(message, kind, traceback)
