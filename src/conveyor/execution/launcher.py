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

from conveyor.artifacts.layout import AttemptLayout
from conveyor.enums import FailureKind, StepStatus
from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError, StepFailedError
from conveyor.execution.attempt_record import AttemptRecord, this_host
from conveyor.execution.handover import Handover, can_hand_over
from conveyor.execution.jobspec import ArtifactRef, JobSpec, JobSpecError, OutputSlot, StepResult, sys_exit_message
from conveyor.secrets.runtime import mark_for_redaction, redact
from conveyor.step_operators.polling import POLL_START, next_poll_delay
from conveyor.store.store import new_id, now

if TYPE_CHECKING:
    from conveyor.artifact_stores.base import BaseArtifactStore
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution.display import Display
    from conveyor.execution.logs import StepLog
    from conveyor.execution.outcome import Failed, ResultUnreadable
    from conveyor.pipelines.compiler import Snapshot
    from conveyor.stack.stack import Stack
    from conveyor.steps.context import StepContext, StepRecord
    from conveyor.steps.hooks import StepHooks
    from conveyor.step_operators.base import BaseStepOperator
    from conveyor.step_operators.entrypoint import StepOperatorEntrypointConfiguration
    from conveyor.step_operators.info import LogWriter, StatusReport, StepRunInfo, Submission
    from conveyor.store.store import MetadataStore

STORAGE_OPTIONS_ENV = "CONVEYOR_STORAGE_OPTIONS"
#: failures StepRetryConfig retries: the step's own doing. Preemption and lost jobs have their own budget;
#: a refused submission, an impossible request or a stop are never retried.
USER_RETRYABLE = frozenset({FailureKind.USER, FailureKind.MEMORY, FailureKind.CRASH, FailureKind.TIMEOUT})


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
    #: step name -> output name -> the artifact it produced (a cache hit's, or an earlier attempt's on resume)
    outputs: dict[str, dict[str, ArtifactRef]] = field(default_factory=dict)
    statuses: dict[str, StepStatus | str] = field(default_factory=dict)
    in_process_threads: dict[str, int] = field(default_factory=dict)
    #: large arrays passed from an in-process step to its one in-process reader in memory (execution/handover.py)
    handover: Handover = field(default_factory=Handover)
    #: on resume: step name -> {"attempt": n, "submission": receipt} of a backend job to follow, not resubmit
    reattach: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: on resume: step name -> attempts already made, so new attempts get new directories
    previous_attempts: dict[str, int] = field(default_factory=dict)


class _Failure(Exception):
    def __init__(self, message: str, kind: FailureKind | str, traceback: str | None = None) -> None:
        super().__init__(message)
        self.message, self.kind, self.traceback = message, kind, traceback

    @classmethod
    def of(cls, failed: "Failed") -> "_Failure":
        return cls(failed.message, failed.kind, failed.traceback)


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


def unusable_cache_hit(artifacts: "ArtifactStore", outputs: dict[str, ArtifactRef]) -> str | None:
    """Why a cache hit's outputs cannot be reused (gone, damaged, or not the recorded ones); None if they can."""
    from conveyor.artifacts.materializers import ArtifactCorruptedError, check_artifact
    from conveyor.artifacts.store import ArtifactStoreError

    for name in sorted(outputs):
        ref = outputs[name]
        try:
            check_artifact(ref.uri, artifacts, ref.checksum, label=f"output {name!r}")
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
        from conveyor.context import get_context
        from conveyor.secrets.runtime import resolve as resolve_secrets

        env = resolve_secrets(env, get_context().vault)
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


class StepLauncher:
    def __init__(self, state: RunState, name: str) -> None:
        self.s = state
        self.name = name
        self.spec = state.snapshot.step_spec(name)
        self.step_run_id = state.step_ids[name]
        self.resolved = state.resolved[name]
        self._recorded: "StepRecord | None" = None
        self._attempt = AttemptRecord.new(0)  # the attempt under way (store table step_attempts)

    # -- entry ------------------------------------------------------------------------------------
    def launch(self) -> str:
        """Run the step to an end state; returns "completed" or "cached", raises StepFailedError otherwise."""
        inputs = {arg: self.s.outputs[src["step"]][src["output"]] for arg, src in self.spec["inputs"].items()}
        input_ids = {arg: str(a.id) for arg, a in inputs.items()}
        key = cache_key(self.spec, input_ids, self.s.artifacts)
        reattach = self.s.reattach.pop(self.name, None)
        if self.spec["enable_cache"] and reattach is None:  # a job still running is followed, never abandoned
            hit = self.s.store.find_cached(key)
            if hit is not None and set(hit["outputs"]) == set(self.spec["outputs"]):
                cached = {name: ArtifactRef.from_json(row) for name, row in hit["outputs"].items()}
                problem = unusable_cache_hit(self.s.artifacts, cached)  # deleted, damaged or swapped outputs
                if problem is None:
                    ts = now()
                    self.s.store.finish_step(self.step_run_id, status=StepStatus.CACHED, inputs=input_ids,
                                             outputs={n: ref.to_json() for n, ref in cached.items()}, cache_key=key,
                                             cached_from=hit["step_run_id"], start_time=ts, end_time=ts)
                    self.s.outputs[self.name] = cached
                    self.s.display.update(self.name, StepStatus.CACHED)
                    return StepStatus.CACHED
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
            layout = AttemptLayout(self.s.artifacts.root, self.s.run_id, self.name, attempt)
            # an in-process step's log is where the attempt is: recorded in the same write
            log_field = {"logs_uri": layout.logs} if operator is None else {}
            self._start_attempt(attempt, operator, layout, receipt is not None, status=StepStatus.RUNNING,
                                attempt=attempt, start_time=started, cache_key=key, error=None, failure_kind=None,
                                traceback=None, **log_field)
            self.s.display.update(self.name, StepStatus.RUNNING, attempt=attempt,  # "attempt n/N" in the live view
                                  attempts=self.s.previous_attempts.get(self.name, 0) + retry["max_retries"] + 1
                                  + infra_retries)
            outputs = {o: OutputSlot(layout.output(o), t) for o, t in self.spec["outputs"].items()}
            self._recorded = None  # what this attempt logs and saves (log_metadata, save_artifact)
            try:
                if operator is None:
                    cpu_before = time.thread_time()
                    try:
                        produced = self._run_in_process(inputs, outputs, layout)
                    finally:  # the step's own thread: its CPU time is the step's (its peak RSS is the process's)
                        self._attempt.set(finished=now(), cpu_seconds=round(time.thread_time() - cpu_before, 6))
                else:
                    produced = self._run_with_operator(operator, layout, inputs, outputs, receipt)
            except _Failure as failure:
                if (failure.kind == FailureKind.STOPPED or self.s.stop_event.is_set()
                        or self.s.store.stop_requested(self.s.run_id)):
                    self._finish_failed(StepStatus.STOPPED, failure, input_ids)
                    raise StepFailedError(self.name, failure.message, failure.traceback, FailureKind.STOPPED) from None
                if failure.kind == FailureKind.INFRASTRUCTURE and receipt is not None:
                    # the job we were to re-attach to is gone (or died with its orchestrator): submit it anew
                    self._end_retried_attempt(failure)
                    self.s.display.update(self.name, StepStatus.RUNNING, f"re-submitting: {failure.message}",
                                          traceback=failure.traceback)
                    continue
                if failure.kind == FailureKind.INFRASTRUCTURE and infra_retries < infra_budget:
                    infra_retries += 1
                    self._end_retried_attempt(failure)
                    what = ("preempted, retrying" if failure.message.startswith("job preempted")
                            else "infrastructure failure, re-submitting")
                    self.s.display.update(self.name, StepStatus.RUNNING, f"{what}: {failure.message}",
                                          traceback=failure.traceback)
                    continue
                if failure.kind in USER_RETRYABLE and user_retries < retry["max_retries"]:
                    user_retries += 1
                    self._end_retried_attempt(failure)
                    delay = retry["delay"] * retry["backoff"] ** (user_retries - 1)
                    why = failure.message.splitlines()[0] if failure.message else failure.kind
                    self.s.display.update(self.name, StepStatus.RUNNING,
                                          f"failed ({why}), retry {user_retries}/{retry['max_retries']} in {delay:g}s",
                                          traceback=failure.traceback)
                    if self.s.stop_event.wait(delay):
                        self._finish_failed(StepStatus.STOPPED, _Failure("run stopped while waiting to retry",
                                                                         FailureKind.STOPPED), input_ids)
                        raise StepFailedError(self.name, "stopped", None, FailureKind.STOPPED) from None
                    continue
                self._finish_failed(StepStatus.FAILED, failure, input_ids)
                raise StepFailedError(self.name, failure.message, failure.traceback, failure.kind) from None
            except BaseException as err:  # a bug of ours, or the process ending: the attempt's row says so
                self._end_attempt_quietly(err)
                raise
            self._finish_completed(produced, input_ids, outputs)
            return StepStatus.COMPLETED

    # -- the attempt's record (store table step_attempts; execution/attempt_record.py) ---------------------------
    def _start_attempt(self, number: int, operator: "BaseStepOperator | None", layout: AttemptLayout,
                       reattached: bool, **step_fields: Any) -> None:
        """Record the attempt in the write that marks the step running; re-attached to a job an earlier
        orchestrator submitted, continue that attempt's row."""
        earlier = self.s.store.find_attempt(self.step_run_id, number) if reattached else None
        if earlier is not None:
            self._attempt = AttemptRecord.from_row(earlier)
            self._attempt.set(status=StepStatus.RUNNING)
            self.s.store.update_step_run(self.step_run_id, with_attempt=(self._attempt.id, self._attempt.pending()),
                                         **step_fields)
            self._attempt.written()
            return
        ts = now()
        in_process = {"submitted": ts, "started": ts, "host": this_host()} if operator is None else {}
        self._attempt = AttemptRecord.new(
            number, operator=self.resolved.operator, operator_flavor=self.resolved.flavor, logs_uri=layout.logs,
            requested=dict(self.resolved.config.get("resource_settings") or {}), code_hash=self.spec.get("code_hash"),
            **in_process)
        self.s.store.start_attempt(self.step_run_id, self._attempt.row(), **step_fields)
        self._attempt.written()

    def _write_attempt(self) -> None:
        fields = self._attempt.pending()
        if fields:
            self.s.store.update_attempt(self._attempt.id, **fields)
            self._attempt.written()

    def _failure_outcome(self, status: str, failure: _Failure) -> dict[str, Any]:
        return self._attempt.outcome(status, failure.kind, redact(failure.message),
                                     redact(failure.traceback) if failure.traceback else failure.traceback)

    def _end_attempt(self, status: str, failure: _Failure) -> None:
        """Write a failed attempt's outcome on its own (not with the step run's end)."""
        fields = self._failure_outcome(status, failure)
        self.s.store.update_attempt(self._attempt.id, **fields)
        self._attempt.written(fields)

    def _end_retried_attempt(self, failure: _Failure) -> None:
        """A failed attempt that another follows: its outcome is written now (the step run is not finished)."""
        self._end_attempt(StepStatus.FAILED, failure)

    def _end_attempt_quietly(self, err: BaseException) -> None:
        """Best effort on the way out of an unexpected error: the error itself is what the caller must see."""
        if not self._attempt.open or not self._attempt.number:
            return
        kind = FailureKind.STOPPED if isinstance(err, KeyboardInterrupt) else FailureKind.INTERNAL
        status = StepStatus.STOPPED if kind == FailureKind.STOPPED else StepStatus.FAILED
        try:
            self._end_attempt(status, _Failure(f"{type(err).__name__}: {err}", kind))
        except Exception:  # noqa: BLE001, S110 - the store may be what failed
            pass

    # -- bookkeeping ------------------------------------------------------------------------------
    def _finish_completed(self, produced: dict[str, ArtifactRef], input_ids: dict[str, str],
                          outputs: dict[str, OutputSlot]) -> None:
        names = self.spec.get("artifact_names") or {}
        # at the URI this side planned: a step operator may have had it written elsewhere and copied back (ssh)
        refs = {name: ref.recorded(new_id(), names.get(name), outputs[name].uri) for name, ref in produced.items()}
        rows = {name: ref.to_json() for name, ref in refs.items()}
        from conveyor.metadata import MetadataTargetError
        from conveyor.store.store import ArtifactVersionTakenError

        try:
            saved, metadata = self._recorded_rows(rows)
            ended = self._attempt.outcome(StepStatus.COMPLETED)  # published with the outputs, in the same write
            self.s.store.finish_step(self.step_run_id, status=StepStatus.COMPLETED, inputs=input_ids, outputs=rows,
                                     new_artifacts=list(rows.values()) + saved, metadata=metadata, end_time=now(),
                                     with_attempt=(self._attempt.id, ended))
            self._attempt.written(ended)
        except (ArtifactVersionTakenError, MetadataTargetError) as err:  # what the step recorded cannot be
            self._recorded = None
            self._finish_failed(StepStatus.FAILED, _Failure(str(err), FailureKind.USER), input_ids)
            raise StepFailedError(self.name, str(err), None, FailureKind.USER) from None
        self._index(list(rows.values()) + saved)
        self.s.outputs[self.name] = refs
        self.s.display.update(self.name, StepStatus.COMPLETED)

    def _finish_failed(self, status: StepStatus, failure: _Failure, input_ids: dict[str, str]) -> None:
        failure.message = redact(failure.message)
        failure.traceback = redact(failure.traceback) if failure.traceback else failure.traceback
        saved, metadata = self._recorded_rows_of_failed_step()
        # the attempt's outcome, unless it ended already (a retried attempt, then the run stopped during the delay)
        ended = self._failure_outcome(status, failure) if self._attempt.open else {}
        self.s.store.finish_step(self.step_run_id, status=status, inputs=input_ids, outputs={}, end_time=now(),
                                 error=failure.message, failure_kind=failure.kind, traceback=failure.traceback,
                                 new_artifacts=saved, metadata=metadata,
                                 with_attempt=(self._attempt.id, ended) if self._attempt.number else None)
        self._attempt.written(ended)
        self._index(saved)
        self.s.display.update(self.name, status, failure.message.splitlines()[0] if failure.message else "",
                              traceback=failure.traceback)  # the run's error prints it once: not its echo too

    def _open_log(self, log_uri: str | None, writer: "LogWriter | None" = None) -> "StepLog":
        """The attempt's stored log (execution/logs.py; nothing stored if `log_uri` is None), redacted as a
        stream and echoed line by line to the display; `writer` (`info.force_write_logs`) stores it at once."""
        from conveyor.execution.logs import StepLog
        from conveyor.secrets.runtime import known

        return StepLog(self.s.artifacts, log_uri, secrets=known, force_write=writer,
                       echo=lambda line: self.s.display.log(self.name, line))

    # -- in process -------------------------------------------------------------------------------
    def _run_in_process(self, inputs: dict[str, ArtifactRef], outputs: dict[str, OutputSlot],
                        layout: AttemptLayout) -> dict[str, ArtifactRef]:
        import traceback

        from conveyor.execution import capture
        from conveyor.execution.interrupt import StepInterrupted, Watchdog
        from conveyor.execution.runner import load_inputs, run_function

        from conveyor.artifacts.store import ArtifactStoreError

        log_uri = layout.logs  # recorded on the step run when the attempt started
        try:
            # a log that cannot be written (the disk filled) is the store's failure, not the step's nor ours
            log = self._open_log(log_uri)
        except ArtifactStoreError as err:
            raise _Failure(str(err), FailureKind.STORE) from None
        func = self.s.snapshot.steps[self.name].entrypoint
        context = self._step_context(layout, outputs)
        try:
            self.s.in_process_threads[self.name] = threading.get_ident()
            try:
                with capture.capture_thread(log.append), Watchdog(self.spec["timeout"]), \
                        process_environment(step_environment(self.spec["settings"])):
                    values = self.s.handover.take({arg: ref.uri for arg, ref in inputs.items()})
                    values.update(load_inputs({a: r for a, r in inputs.items() if a not in values}, self.s.artifacts))
                    kept: dict[str, Any] = {}
                    metas = run_function(func, self.name, self.spec["parameters"], values, outputs, self.s.artifacts,
                                         context=context, hooks=self._in_process_hooks(),
                                         keep=lambda name, value: self._keep(name, value, kept))
                    del values
            finally:
                self.s.in_process_threads.pop(self.name, None)
                self._recorded = context.record
        except StepInterrupted as err:
            if err.reason == "timeout":
                raise _Failure(f"timed out after {self.spec['timeout']:g}s", FailureKind.TIMEOUT) from None
            raise _Failure("stopped", FailureKind.STOPPED) from None
        except MemoryError as err:
            raise _Failure(f"{MEMORY_ADVICE}: {err}", FailureKind.MEMORY, traceback.format_exc()) from None
        except ArtifactStoreError as err:  # the store, not the step's code: full, read-only, unreachable
            raise _Failure(str(err), FailureKind.STORE, traceback.format_exc()) from None
        except SystemExit as err:  # not ours to exit on: the step failed, whatever the code
            raise _Failure(sys_exit_message(err.code), FailureKind.USER, traceback.format_exc()) from None
        except Exception as err:  # noqa: BLE001 - user code
            raise _Failure(f"{type(err).__name__}: {err}", FailureKind.USER, traceback.format_exc()) from None
        finally:
            try:
                log.close()
            except ArtifactStoreError as err:  # the log's last lines did not fit: fails a step that had not failed
                if sys.exc_info()[1] is None:
                    raise _Failure(str(err), FailureKind.STORE) from None
        self.s.handover.offer({outputs[n].uri: value for n, value in kept.items()})
        return {n: ArtifactRef.saved(outputs[n].uri, m) for n, m in metas.items()}

    def _keep(self, output: str, value: Any, kept: dict[str, Any]) -> bool:
        """Whether `value` goes to its reader in memory: a large array read by exactly one step, which runs in this
        process too (execution/handover.py); offered once this attempt has succeeded."""
        if not can_hand_over(value):
            return False
        readers = [step for step in self.s.snapshot.order for src in self.s.snapshot.step_spec(step)["inputs"].values()
                   if src["step"] == self.name and src["output"] == output]
        if len(readers) != 1 or self.s.resolved[readers[0]].operator is not None:
            return False
        kept[output] = value
        return True

    # -- the in-step API: context, hooks, and what the step recorded (conveyor.steps.context) -----------------
    def _step_context(self, layout: AttemptLayout, outputs: dict[str, OutputSlot]) -> "StepContext":
        from conveyor.steps.context import StepContext

        return StepContext(pipeline_name=self.s.snapshot.pipeline_name, run_id=self.s.run_id, run_name=self.s.run_name,
                           step_name=self.name, step_run_id=self.step_run_id, attempt=layout.attempt,
                           attempt_uri=layout.uri, output_uris={o: slot.uri for o, slot in outputs.items()},
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

    def job_spec(self, info: "StepRunInfo", inputs: dict[str, ArtifactRef], outputs: dict[str, OutputSlot],
                 log_uri: str | None) -> JobSpec:
        from conveyor.pipelines.compiler import thaw

        return JobSpec(
            run_id=self.s.run_id, run_name=self.s.run_name, pipeline=self.s.snapshot.pipeline_name,
            step_name=self.name, step_run_id=self.step_run_id, attempt=info.attempt,
            source=thaw(self.spec["source"]), parameters=thaw(self.spec["parameters"]),
            # with the checksum recorded for each input: the remote side refuses a folder that is not that artifact
            inputs=dict(inputs), outputs=dict(outputs), settings=thaw(self.spec["settings"]),
            # get_step_context()'s artifact names, and the hooks to run there (conveyor.steps.hooks)
            artifact_names=thaw(self.spec.get("artifact_names") or {}), hooks=thaw(self.spec.get("hooks") or {}),
            artifact_uris={name: slot.uri for name, slot in outputs.items()},
            resources=info.config.resource_settings.model_dump(exclude_none=True),
            artifact_store_root=self.s.artifacts.root,
            storage_options=self.s.stack.artifact_store.config.remote_options(),
            result_uri=AttemptLayout.of(info).result, log_uri=log_uri)

    def _run_with_operator(self, operator: "BaseStepOperator", layout: AttemptLayout, inputs: dict[str, ArtifactRef],
                           outputs: dict[str, OutputSlot], receipt: dict[str, Any] | None = None,
                           ) -> dict[str, ArtifactRef]:
        from dataclasses import replace

        from conveyor.step_operators.info import Submission

        info = self.build_info(operator, layout.attempt, layout.uri)
        log_uri = layout.logs
        if receipt is not None:  # resume: follow the job an earlier orchestrator submitted
            submission = Submission.from_json(receipt)
            self.s.display.update(self.name, StepStatus.RUNNING, f"re-attached to job {submission.job_name}")
            report, reason = self._wait(operator, submission, info, log_uri)
            return self._outcome(operator, report, reason, layout)
        spec = self.job_spec(info, inputs, outputs, None if operator.streams_logs else log_uri)
        if operator.needs_code_archive and spec.source.get("code_root"):
            from conveyor.artifacts.code_archive import upload

            spec = replace(spec, source={**spec.source, "code_archive": upload(self.s.artifacts, spec.source["code_root"])})
            # the archive is named by its content hash: exactly the code the attempt ran
            self._attempt.set(code_hash=spec.source["code_archive"].rsplit("/", 1)[-1].removesuffix(".zip"))
        self.s.artifacts.write_text(info.job_uri, json.dumps(spec.to_json()))
        command, environment = entrypoint_request(info, self.s.stack.artifact_store, operator.entrypoint_config_class)
        environment.update(step_environment(self.spec["settings"]))
        mark_for_redaction(environment)
        sealed_key = None
        if operator.exposes_environment:
            from conveyor.secrets.envelope import seal

            key_uri = layout.envelope_key
            store_vars = set(self.s.stack.artifact_store.config.remote_environment())
            sealed_key = key_uri if seal(environment, self.s.artifacts, key_uri, store_vars) else None
        try:
            operator.check_resources(info)
        except ResourceUnavailableError as err:
            raise _Failure(str(err), FailureKind.RESOURCES) from None
        self.s.store.update_step_run(self.step_run_id, logs_uri=log_uri,
                                     submission={"flavor": operator.flavor, "job_name": info.job_name,
                                                 "data": {"state": "submitting"}})
        self._attempt.set(submitted=now())
        try:
            submission: Submission = operator.submit(info, command, environment)
        except Exception as err:  # noqa: BLE001 - a backend refusing the job
            raise _Failure(f"submission to step operator {operator.name!r} failed: {type(err).__name__}: {err}",
                           FailureKind.SUBMIT) from None
        self._attempt.set(backend_job_id=submission.backend_id or submission.job_name,
                          **self._details(operator, submission))
        self.s.store.update_step_run(self.step_run_id, submission=submission.to_json(),
                                     with_attempt=(self._attempt.id, self._attempt.pending()))
        self._attempt.written()
        try:
            report, reason = self._wait(operator, submission, info, log_uri)
        finally:
            if sealed_key is not None and self.s.artifacts.exists(sealed_key):  # the step never opened it
                self.s.artifacts.rm(sealed_key)
        return self._outcome(operator, report, reason, layout)

    def _wait(self, operator: "BaseStepOperator", submission: "Submission", info: "StepRunInfo",
              log_uri: str) -> tuple["StatusReport", FailureKind | None]:
        """Poll from 50 ms backing off to 2 s; stream logs; enforce stop, timeout and pending timeout."""
        from conveyor.step_operators.info import JobState, StatusReport

        log_thread = None
        log = None
        if operator.streams_logs:
            # an operator that stores the log itself (the step's process redacts it there): only displayed here
            stored_by_operator = operator.stores_logs and self.s.artifacts.is_local
            from conveyor.step_operators.info import LogWriter

            writer = info.force_write_logs if isinstance(info.force_write_logs, LogWriter) else None
            log = self._open_log(None if stored_by_operator else log_uri, writer)
            log_thread = threading.Thread(target=self._pump_logs, args=(operator, submission, log), daemon=True,
                                          name=f"logs-{self.name}")
            log_thread.start()
        delay = POLL_START
        start = time.monotonic()
        running_since: float | None = None
        pending_timeout = operator.config.pending_timeout
        timeout = self.spec["timeout"]
        reason: FailureKind | None = None
        shown: str = StepStatus.RUNNING
        try:
            while True:
                report = operator.get_status(submission)
                if self._attempt.saw(report):  # queued, a new queue reason, running: shown while the job goes on
                    self._write_attempt()
                if report.terminal:
                    break
                if report.state != shown:
                    shown = report.state
                    self.s.display.update(self.name, report.state, report.message)
                t = time.monotonic()
                if report.state == JobState.RUNNING and running_since is None:
                    running_since = t
                if self.s.stop_event.is_set():
                    reason = FailureKind.STOPPED
                elif timeout and running_since is not None and t - running_since > timeout:
                    reason = FailureKind.TIMEOUT
                elif pending_timeout and running_since is None and t - start > pending_timeout:
                    reason = FailureKind.PENDING
                if reason:
                    operator.cancel(submission)
                    after = operator.get_status(submission)
                    report = StatusReport(after.state, report.message or after.message, after.exit_code, after.kind)
                    self._attempt.saw(report)
                    break
                # the backend may tell us the moment the job ends; if it cannot wait, sleep (a stop wakes us)
                if operator.wait_for_change(submission, min(delay, 0.2)) is False and self.s.stop_event.wait(delay):
                    continue
                delay = next_poll_delay(delay, operator.poll_interval)
        except BaseException:
            operator.cancel(submission)
            raise
        finally:
            if log_thread is not None:
                log_thread.join(timeout=5)
            if log is not None:
                log.close()
            operator.cleanup(submission)
        return report, reason

    def _details(self, operator: "BaseStepOperator", submission: "Submission") -> dict[str, Any]:
        """The flavor's `attempt_details` (image digest, node), only the fields an attempt has; a flavor failing
        to say must not fail the step."""
        try:
            details = operator.attempt_details(submission) or {}
        except Exception as err:  # noqa: BLE001 - a custom flavor's bug
            self.s.display.log(self.name, f"(attempt details not recorded: {type(err).__name__}: {err})")
            return {}
        return {k: v for k, v in details.items() if k in ("image_digest", "host", "backend_job_id") and v is not None}

    def _pump_logs(self, operator: "BaseStepOperator", submission: "Submission", log: "StepLog") -> None:
        """Chunks go to the log as they come, not cut into lines: a chunk may end mid-line (or mid-value)."""
        try:
            for chunk in operator.logs(submission, follow=True):
                log.append(chunk)
        except Exception as err:  # noqa: BLE001 - losing the log stream must not fail the step
            self.s.display.log(self.name, f"(log streaming stopped: {err})")

    def _outcome(self, operator: "BaseStepOperator", report: "StatusReport", reason: FailureKind | None,
                 layout: AttemptLayout) -> dict[str, ArtifactRef]:
        """The attempt's outputs, or _Failure: read result.json (unless we cancelled the job), then classify."""
        from conveyor.execution.outcome import Completed, classify

        result = None if reason is not None else self._read_result(layout.result)
        if isinstance(result, StepResult):
            self._keep_recorded(result)
            self._attempt.took_result(result)  # host, peak RSS, CPU seconds: from the step's own process
        outcome = classify(report, result, reason, timeout=self.spec["timeout"],
                           pending_timeout=operator.config.pending_timeout, store_root=self.s.artifacts.root,
                           result_uri=layout.result)
        if isinstance(outcome, Completed):
            return outcome.outputs
        raise _Failure.of(outcome)

    def _read_result(self, result_uri: str) -> "StepResult | ResultUnreadable | None":
        import errno

        from conveyor.artifacts.store import ArtifactStoreError
        from conveyor.execution.outcome import ResultUnreadable

        try:
            data = self.s.artifacts.read_bytes(result_uri)  # one request: no exists() first; absent is ENOENT
        except ArtifactStoreError as err:
            return None if err.errno == errno.ENOENT else ResultUnreadable(str(err), store=True)
        try:
            # bytes: a result that is not UTF-8 is a JobSpecError too, not an internal error
            return StepResult.parse(data, result_uri)
        except JobSpecError as err:
            return ResultUnreadable(str(err))

    def _keep_recorded(self, result: StepResult) -> None:
        """What the step logged and saved, recorded when the step is finished."""
        from conveyor.steps.context import StepRecord

        try:
            self._recorded = StepRecord.from_json(result.recorded)
        except (TypeError, ValueError, AttributeError) as err:
            self.s.display.log(self.name, f"(what the step logged and saved is unreadable, not recorded: {err})")
