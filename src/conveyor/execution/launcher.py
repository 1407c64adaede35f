"""The launcher: cache, retries, timeout, and hand-off of one step to a step operator or to this process."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError, StepFailedError
from conveyor.execution.jobspec import (JOB_SPEC_VERSION, JobSpecError, parse_result, store_exit_message,
                                        sys_exit_message)
from conveyor.secrets.runtime import mark_for_redaction, redact
from conveyor.store.store import new_id, now

if TYPE_CHECKING:
    from conveyor.artifact_stores.base import BaseArtifactStore
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution.display import Display
    from conveyor.pipelines.compiler import Snapshot
    from conveyor.stack.stack import Stack
    from conveyor.steps.context import StepContext, StepRecord
    from conveyor.steps.hooks import StepHooks
    from conveyor.step_operators.base import BaseStepOperator
    from conveyor.step_operators.entrypoint import StepOperatorEntrypointConfiguration
    from conveyor.step_operators.info import LogWriter, StatusReport, StepRunInfo, Submission
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


def cache_key(spec: Any, inputs: dict[str, str], artifact_store: "ArtifactStore") -> str:
    """What a cached result must match: the code (function, same-module helpers, imported project modules), the
    step's `cache_version`, parameters, input artifacts, outputs and the artifact store holding them (docs/caching.md)."""
    payload = {"code": spec["code_hash"], "fingerprint": spec.get("code_fingerprint"),
               "cache_version": spec.get("cache_version"), "step": spec["step"], "parameters": spec["parameters"],
               "inputs": dict(sorted(inputs.items())), "outputs": spec["outputs"],
               "artifact_store": store_identity(artifact_store)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def store_identity(artifacts: "ArtifactStore") -> str:
    """The root URI, and the endpoint for an S3-compatible store (the same bucket name on two services differs)."""
    client = artifacts.storage_options.get("client_kwargs") or {}
    endpoint = artifacts.storage_options.get("endpoint_url") or client.get("endpoint_url")
    return f"{artifacts.root} @ {endpoint}" if endpoint else artifacts.root


def unusable_cache_hit(artifacts: "ArtifactStore", outputs: dict[str, dict[str, Any]]) -> str | None:
    """Why a cache hit's outputs cannot be reused (gone, damaged, or not the recorded ones); None if they can."""
    from conveyor.artifacts.materializers import ArtifactCorruptedError, check_artifact
    from conveyor.artifacts.store import ArtifactStoreError

    for name in sorted(outputs):
        row = outputs[name]
        try:
            check_artifact(row["uri"], artifacts, row.get("checksum"), label=f"output {name!r}")
        except (ArtifactStoreError, ArtifactCorruptedError) as err:
            return str(err)
    return None


def build_step_info(stack: "Stack", snapshot: "Snapshot", name: str, operator: "BaseStepOperator", *, run_id: str,
                    run_name: str, step_run_id: str, attempt: int, attempt_uri: str) -> "StepRunInfo":
    """What a step operator is told about one attempt of one step."""
    from conveyor.config.settings import docker_settings, operator_settings, resource_settings
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
        config=config, pipeline=PipelineConfig(snapshot.pipeline_name, thaw(snapshot.spec["settings"]),
                                               docker_settings=docker_settings(settings)),
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
    """An in-process step's environment: seen by the step's thread (and what it starts) only, for its duration.

    Never written into the process environment, which other steps and the processes started for them share
    (see `conveyor.execution.step_environ`).
    """
    from conveyor.execution.step_environ import step_variables

    with step_variables(env):
        yield


def entrypoint_request(info: "StepRunInfo", store: "BaseArtifactStore",
                       entrypoint_config: "type[StepOperatorEntrypointConfiguration] | None" = None,
                       ) -> tuple[list[str], dict[str, str]]:
    """The command and environment every step operator is handed for one attempt.

    The command comes from the operator's `entrypoint_config_class` (`entrypoint_config`), so a custom flavor's
    extra entrypoint options reach it. The environment carries the artifact store's credentials (never the job
    spec or argv), for each backend to deliver through its secret mechanism, and the store's non-secret fsspec
    options for opening the job spec.
    """
    from conveyor.step_operators.entrypoint import StepOperatorEntrypointConfiguration

    EP = entrypoint_config or StepOperatorEntrypointConfiguration
    command = EP.get_entrypoint_command() + EP.get_entrypoint_arguments(
        job=info.job_uri, step_name=info.pipeline_step_name, step_run_id=info.step_run_id)
    environment = {"CONVEYOR_RUN_ID": info.run_id, "CONVEYOR_STEP_RUN_ID": info.step_run_id,
                   "CONVEYOR_STEP_NAME": info.pipeline_step_name, **store.config.remote_environment()}
    options = store.config.remote_options()
    if options:
        environment[STORAGE_OPTIONS_ENV] = json.dumps(options, sort_keys=True)
    return command, environment


def _as_store_error(write: Any, artifacts: "ArtifactStore", uri: str) -> Any:
    """`write` (to the step's stored log), raising an OSError as the store's error that names the log."""
    def wrapped(*args: Any) -> Any:
        try:
            return write(*args)
        except OSError as exc:
            raise artifacts.error_for("write", uri, exc) from exc

    return wrapped


class StepLauncher:
    def __init__(self, state: RunState, name: str) -> None:
        self.s = state
        self.name = name
        self.spec = state.snapshot.step_spec(name)
        self.step_run_id = state.step_ids[name]
        self.resolved = state.resolved[name]
        self._recorded: "StepRecord | None" = None

    # -- entry ------------------------------------------------------------------------------------
    def launch(self) -> str:
        """Run the step to an end state; returns "completed" or "cached", raises StepFailedError otherwise."""
        inputs = {arg: self.s.outputs[src["step"]][src["output"]] for arg, src in self.spec["inputs"].items()}
        input_ids = {arg: a["id"] for arg, a in inputs.items()}
        key = cache_key(self.spec, input_ids, self.s.artifacts)
        reattach = self.s.reattach.pop(self.name, None)
        if self.spec["enable_cache"] and reattach is None:  # a job still running is followed, never abandoned
            hit = self.s.store.find_cached(key)
            if hit is not None and set(hit["outputs"]) == set(self.spec["outputs"]):
                problem = unusable_cache_hit(self.s.artifacts, hit["outputs"])  # deleted, damaged or swapped outputs
                if problem is None:
                    ts = now()
                    self.s.store.finish_step(self.step_run_id, status="cached", inputs=input_ids,
                                             outputs=hit["outputs"], cache_key=key, cached_from=hit["step_run_id"],
                                             start_time=ts, end_time=ts)
                    self.s.outputs[self.name] = hit["outputs"]
                    self.s.display.update(self.name, "cached")
                    return "cached"
                self.s.display.log(self.name, f"cached result not used, running the step again: {problem}")
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
            self._recorded = None  # what this attempt logs and saves (log_metadata, save_artifact)
            try:
                if operator is None:
                    metas = self._run_in_process(inputs, outputs, attempt_uri, attempt)
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
        names = self.spec.get("artifact_names") or {}
        for name, meta in metas.items():
            rows[name] = {"id": new_id(), "uri": outputs[name]["uri"], "materializer": meta["materializer"],
                          "data_type": meta["data_type"], "checksum": meta.get("checksum"), "size": meta.get("size"),
                          "name": names.get(name)}
        from conveyor.metadata import MetadataTargetError
        from conveyor.store.store import ArtifactVersionTakenError

        try:
            saved, metadata = self._recorded_rows(rows)
            self.s.store.finish_step(self.step_run_id, status="completed", inputs=input_ids, outputs=rows,
                                     new_artifacts=list(rows.values()) + saved, metadata=metadata, end_time=now())
        except (ArtifactVersionTakenError, MetadataTargetError) as err:  # what the step recorded cannot be
            self._recorded = None
            self._finish_failed("failed", _Failure(str(err), "user"), input_ids)
            raise StepFailedError(self.name, str(err), None, "user") from None
        self._index(list(rows.values()) + saved)
        self.s.outputs[self.name] = rows
        self.s.display.update(self.name, "completed")

    def _finish_failed(self, status: str, failure: _Failure, input_ids: dict[str, str]) -> None:
        failure.message = redact(failure.message)
        failure.traceback = redact(failure.traceback) if failure.traceback else failure.traceback
        saved, metadata = self._recorded_rows_of_failed_step()
        self.s.store.finish_step(self.step_run_id, status=status, inputs=input_ids, outputs={}, end_time=now(),
                                 error=failure.message, failure_kind=failure.kind, traceback=failure.traceback,
                                 new_artifacts=saved, metadata=metadata)
        self._index(saved)
        self.s.display.update(self.name, status, failure.message.splitlines()[0] if failure.message else "")

    def _log_sink(self, log_uri: str | None, writer: "LogWriter | None" = None) -> tuple[Any, Any]:
        """A sink that appends to the stored log (none if `log_uri` is None) and echoes complete lines to the
        display; call close() at the end, which flushes what is still held. `writer` (the step's
        `info.force_write_logs`) is bound to store the log so far at once.

        Secret values are redacted from the stream as a whole (`StreamRedactor`): a value printed in pieces is
        caught too. A remote store (S3) has no append: the log so far is rewritten at most once per
        LIVE_LOG_FLUSH_S while the step runs, so `conveyor run logs` and other processes see it live there too.
        """
        from conveyor.secrets.runtime import known
        from conveyor.secrets.stream_redaction import StreamRedactor

        path = self.s.artifacts.local_path(log_uri) if log_uri else None
        buffer: list[str] = []
        pending = [""]
        fh = None
        if path:
            fh = self.s.artifacts.open(log_uri, "a")  # noqa: SIM115 - closed by close()
        redactor = StreamRedactor(known)
        lock = threading.Lock()
        flushing = threading.Lock()
        live: dict[str, Any] = {"timer": None, "last": 0.0, "closed": False}

        def flush_remote() -> None:
            assert log_uri is not None
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

        def store(text: str) -> list[str]:
            """Under `lock`: keep `text`; the display lines it completes."""
            if fh is not None:
                fh.write(text)
                fh.flush()
            elif log_uri is not None:
                buffer.append(text)
                if live["timer"] is None and not live["closed"]:
                    wait = max(0.0, LIVE_LOG_FLUSH_S - (time.monotonic() - live["last"]))
                    live["timer"] = threading.Timer(wait, flush_remote)
                    live["timer"].daemon = True
                    live["timer"].start()
            pending[0] += text
            *lines, pending[0] = pending[0].split("\n")
            return lines

        def sink(text: str) -> None:
            with lock:
                lines = store(redactor.feed(text))
            for line in lines:
                self.s.display.log(self.name, line)

        def write_now() -> None:
            """info.force_write_logs(): the log so far, stored now rather than at the next timer tick."""
            with lock:
                if live["closed"]:
                    return
                if fh is not None:
                    fh.flush()
                    return
                timer, live["timer"] = live["timer"], None
            if timer is not None:
                timer.cancel()
            if log_uri is not None:
                flush_remote()

        if writer is not None:
            writer.bind(write_now)

        def close() -> None:
            if writer is not None:
                writer.bind(None)
            with lock:
                live["closed"] = True
                if live["timer"] is not None:
                    live["timer"].cancel()
            with flushing, lock:
                for line in store(redactor.finish()):
                    self.s.display.log(self.name, line)
                if pending[0]:
                    self.s.display.log(self.name, pending[0])
                    pending[0] = ""
                if fh is not None:
                    fh.close()
                elif buffer and log_uri is not None:
                    self.s.artifacts.write_text(log_uri, "".join(buffer))

        return sink, close

    # -- in process -------------------------------------------------------------------------------
    def _run_in_process(self, inputs: dict[str, dict[str, Any]], outputs: dict[str, dict[str, str]],
                        attempt_uri: str, attempt: int = 1) -> dict[str, dict[str, Any]]:
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
        # a log that cannot be written (the disk filled) is the store's failure, not the step's nor ours
        sink, close = _as_store_error(sink, self.s.artifacts, log_uri), _as_store_error(close, self.s.artifacts, log_uri)
        func = self.s.snapshot.steps[self.name].entrypoint
        context = self._step_context(attempt, attempt_uri, outputs)
        try:
            self.s.in_process_threads[self.name] = threading.get_ident()
            try:
                with capture.capture_thread(sink), Watchdog(self.spec["timeout"]), \
                        process_environment(step_environment(self.spec["settings"])):
                    values = load_inputs(inputs, self.s.artifacts)
                    metas = run_function(func, self.name, self.spec["parameters"], values, outputs, self.s.artifacts,
                                         context=context, hooks=self._in_process_hooks())
            finally:
                self.s.in_process_threads.pop(self.name, None)
                self._recorded = context.record
        except StepInterrupted as err:
            if err.reason == "timeout":
                raise _Failure(f"timed out after {self.spec['timeout']:g}s", "timeout") from None
            raise _Failure("stopped", "stopped") from None
        except MemoryError as err:
            raise _Failure(f"{MEMORY_ADVICE}: {err}", "memory", traceback.format_exc()) from None
        except ArtifactStoreError as err:  # the store, not the step's code: full, read-only, unreachable
            raise _Failure(str(err), "store", traceback.format_exc()) from None
        except SystemExit as err:  # not ours to exit on: the step failed, whatever the code
            raise _Failure(sys_exit_message(err.code), "user", traceback.format_exc()) from None
        except Exception as err:  # noqa: BLE001 - user code
            raise _Failure(f"{type(err).__name__}: {err}", "user", traceback.format_exc()) from None
        finally:
            try:
                close()
            except ArtifactStoreError as err:  # the log's last lines did not fit: fails a step that had not failed
                if sys.exc_info()[1] is None:
                    raise _Failure(str(err), "store") from None
        return {n: m._asdict() if hasattr(m, "_asdict") else dict(vars(m)) for n, m in metas.items()}

    # -- the in-step API: context, hooks, and what the step recorded (conveyor.steps.context) -----------------
    def _step_context(self, attempt: int, attempt_uri: str, outputs: dict[str, dict[str, str]]) -> "StepContext":
        from conveyor.steps.context import StepContext

        return StepContext(pipeline_name=self.s.snapshot.pipeline_name, run_id=self.s.run_id, run_name=self.s.run_name,
                           step_name=self.name, step_run_id=self.step_run_id, attempt=attempt, attempt_uri=attempt_uri,
                           output_uris={o: v["uri"] for o, v in outputs.items()},
                           artifact_names=self.spec.get("artifact_names") or {}, artifact_store=self.s.artifacts)

    def _in_process_hooks(self) -> "StepHooks":
        """The step object's own hooks; a resumed run's step (rebuilt from the stored snapshot) loads them."""
        from conveyor.pipelines.compiler import thaw
        from conveyor.steps.hooks import load_hooks, step_hooks

        hooks = step_hooks(self.s.snapshot.steps[self.name])
        return hooks if hooks or not self.spec.get("hooks") else load_hooks(thaw(self.spec["hooks"]))

    def _recorded_rows(self, outputs: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The artifacts the step saved and the metadata it logged, as the store records them (targets resolved:
        this step, its outputs, what it saved, or an explicit run, step run or artifact)."""
        from conveyor.metadata import resolve_target

        record = self._recorded
        if not record:
            return [], []
        saved = [{"id": a.id, "uri": a.uri, "materializer": a.materializer, "data_type": a.data_type,
                  "checksum": a.checksum, "size": a.size, "name": a.name, "version": a.version} for a in record.saved]
        ours = {a["id"] for a in saved} | {row["id"] for row in outputs.values()}
        entries = []
        for m in record.metadata:
            if m.target == "step":
                target = {"step_run_id": self.step_run_id}
            elif m.target == "output":
                if m.output not in outputs:  # a failed step has no outputs to attach to
                    continue
                target = {"artifact_id": outputs[m.output]["id"]}
            elif m.target == "artifact" and m.artifact_id in ours:
                target = {"artifact_id": m.artifact_id}
            else:
                target = resolve_target(self.s.store, m)
            entries.append({**target, "values": m.values})
        return saved, entries

    def _recorded_rows_of_failed_step(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What a failed step recorded before it failed, kept as far as it can be."""
        from conveyor.metadata import MetadataTargetError

        try:
            return self._recorded_rows({})
        except MetadataTargetError as err:
            self.s.display.log(self.name, f"(the metadata the step logged is not recorded: {err})")
            return [], []

    def _index(self, rows: list[dict[str, Any]]) -> None:
        """Index the named versions just recorded, for `load_artifact` in steps that have no metadata store."""
        from conveyor.artifacts.registry import index_entries
        from conveyor.artifacts.store import ArtifactStoreError

        try:
            index_entries(self.s.artifacts, rows)
        except ArtifactStoreError as err:  # recorded already; only loading by name inside a step misses it
            self.s.display.log(self.name, f"(artifact index not updated: {err})")

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
            # the checksum recorded for each input: the remote side refuses a folder that is not that artifact
            "inputs": {arg: {"uri": a["uri"], "materializer": a["materializer"], "data_type": a["data_type"],
                             "checksum": a.get("checksum")} for arg, a in inputs.items()},
            "outputs": outputs, "settings": thaw(self.spec["settings"]),
            # get_step_context()'s artifact names, and the hooks to run there (conveyor.steps.hooks)
            "artifact_names": thaw(self.spec.get("artifact_names") or {}), "hooks": thaw(self.spec.get("hooks") or {}),
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
        command, environment = entrypoint_request(info, self.s.stack.artifact_store, operator.entrypoint_config_class)
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
            # an operator that stores the log itself (the step's process redacts it there): only displayed here
            stored_by_operator = getattr(operator, "stores_logs", False) and self.s.artifacts.is_local
            from conveyor.step_operators.info import LogWriter

            writer = info.force_write_logs if isinstance(info.force_write_logs, LogWriter) else None
            sink, close = self._log_sink(None if stored_by_operator else log_uri, writer)
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
        """Chunks go to the sink as they come, not cut into lines: a chunk may end mid-line (or mid-value)."""
        try:
            for chunk in operator.logs(submission, follow=True):
                sink(chunk)
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
        from conveyor.artifacts.store import ArtifactStoreError

        result_uri = f"{info.attempt_uri}/result.json"
        result = None
        try:
            if self.s.artifacts.exists(result_uri):
                # bytes: a result that is not UTF-8 is a JobSpecError too, not an internal error
                result = parse_result(self.s.artifacts.read_bytes(result_uri), result_uri)
        except JobSpecError as err:
            raise _Failure(str(err), "infrastructure" if report.state in ("preempted", "lost") else "result") from None
        except ArtifactStoreError as err:
            raise _Failure(str(err), "store") from None
        if result is not None:
            from conveyor.steps.context import StepRecord

            try:  # recorded when the step is finished
                self._recorded = StepRecord.from_json(result.get("recorded"))
            except (TypeError, ValueError, AttributeError) as err:
                self.s.display.log(self.name, f"(what the step logged and saved is unreadable, not recorded: {err})")
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
        store_failure = store_exit_message(code, self.s.artifacts.root, result_uri) if report.state == "failed" else None
        if store_failure:  # the step's process could not write its result (nor, perhaps, its log): a full disk
            raise _Failure(store_failure, "store")
        if report.state == "completed" and code == 0:
            # the step ran to its end: running it again (as for a lost job) would run the user's code again
            raise _Failure(f"the step's process ended normally (exit code 0) but there is no result at {result_uri}: "
                           "something moved or deleted it, or the step wrote it elsewhere; check what else writes "
                           "to the artifact store, then run the pipeline again", "result")
        detail = f" (exit code {code})" if code is not None else ""
        raise _Failure(f"the step ended without a result{detail}: {report.message or 'see the step logs'}", "infrastructure"
                       if report.state != "failed" else "crash")

    @staticmethod
    def _raise(message: str, kind: str, traceback: str | None) -> Any:
        raise _Failure(message, kind, traceback)
