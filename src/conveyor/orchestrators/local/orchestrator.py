"""Runs the DAG with one daemon thread per running step (every ready step at once, unless `max_parallelism` caps them); Ctrl-C, SIGTERM and `conveyor run stop` cancel every running step.

The first Ctrl-C (or SIGTERM) starts the stop; later ones while it runs only say so: a stop cut short would
leave steps' processes running and the run's records saying `running`.
"""

from __future__ import annotations

import heapq
import os
import queue
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable

from conveyor.enums import ACTIVE_STATUSES, SUCCESSFUL_STATUSES, UNSUCCESSFUL_STATUSES, FailureKind, StepStatus
from conveyor.exceptions import StepFailedError
from conveyor.orchestrators.base import BaseOrchestrator
from conveyor.store.store import now

if TYPE_CHECKING:
    from conveyor.execution.launcher import RunState
    from conveyor.orchestrators.local.flavor import LocalOrchestratorConfig

STOP_GRACE = 30.0
IN_PROCESS_GRACE = 1.0


class _StepThread:
    """One step's thread and its outcome; `finished` hears of it when it ends. (Not concurrent.futures: that
    imports logging, a tenth of a one-step run's imports.)"""

    __slots__ = ("_done", "_error", "_result")

    def __init__(self, target: Any, name: str, finished: "queue.SimpleQueue[_StepThread]") -> None:
        self._done = threading.Event()
        self._result: str | None = None
        self._error: BaseException | None = None

        def body() -> None:
            try:
                self._result = target()
            except BaseException as err:  # noqa: BLE001 - handed to the scheduler
                self._error = err
            finally:
                self._done.set()
                finished.put(self)

        # daemon threads, not a pool: a step stuck in C code must not keep a stopped process alive
        threading.Thread(target=body, name=f"step-{name}", daemon=True).start()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> str | None:
        """The launcher's return value, or its exception raised again."""
        if self._error is not None:
            raise self._error
        return self._result


def _wait(threads: Iterable[_StepThread], timeout: float) -> None:
    """Until every one of `threads` has ended, or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread._done.wait(max(0.0, deadline - time.monotonic()))


class _Terminate(BaseException):
    """SIGTERM, turned into something the main thread can unwind through."""


class LocalOrchestrator(BaseOrchestrator):
    @property
    def config(self) -> "LocalOrchestratorConfig":
        return self._config  # type: ignore[return-value]

    def run(self, **run: Any) -> list[StepFailedError]:
        from conveyor.execution import capture
        from conveyor.execution.display import Display
        from conveyor.execution.launcher import RunState
        from conveyor.execution.run import where_label

        snapshot, resolved = run["snapshot"], run["resolved"]
        display = Display(run["run_name"], list(snapshot.order), {n: where_label(r) for n, r in resolved.items()})
        state = RunState(display=display, **run)
        capture.install()
        display.start()
        for name, done in state.statuses.items():  # a resumed run's finished steps
            display.update(name, done, "from the earlier attempt")
        previous = self._install_signals(state.run_name)
        status = StepStatus.FAILED
        try:
            failures = self._schedule(state)
            status = (StepStatus.COMPLETED if not failures
                      else StepStatus.STOPPED if state.stop_event.is_set() else StepStatus.FAILED)
            return failures
        except (KeyboardInterrupt, _Terminate):
            status = StepStatus.STOPPED
            raise KeyboardInterrupt from None
        finally:
            try:
                if status != StepStatus.COMPLETED:
                    self._settle_steps(state)
                state.handover.clear()  # arrays no reader took (it was cached, stopped, or never ran)
                state.store.update_run(state.run_id, status=status, end_time=now(), heartbeat=now())
                display.stop(status)
                capture.uninstall()
            finally:
                self._restore_signals(previous)

    @staticmethod
    def _settle_steps(state: "RunState") -> None:
        """A run never ends with a step still `pending` or `running` (a stop that came before a step started, or
        a launcher that did not finish cancelling in time)."""
        ts = now()
        for row in state.store.step_runs(state.run_id):
            if row["status"] in ACTIVE_STATUSES:
                state.store.update_step_run(row["id"], status=StepStatus.STOPPED, end_time=ts,
                                            failure_kind=FailureKind.STOPPED,
                                            error=row["error"] or "stopped: the run ended before this step did")

    # -- signals ----------------------------------------------------------------------------------
    @staticmethod
    def _install_signals(run_name: str) -> Any:
        """Ctrl-C and SIGTERM start the stop once; repeats are reported and otherwise ignored until it is done."""
        if threading.current_thread() is not threading.main_thread():
            return None
        stopping = threading.Event()

        def handler(signum: int, frame: Any) -> None:
            if stopping.is_set():
                os.write(2, f"\nconveyor: already stopping run {run_name}: cancelling its steps so that nothing is left "
                            "running; this ends by itself within seconds\n".encode())
                return
            stopping.set()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise _Terminate()

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(previous: Any) -> None:
        for sig, handler in (previous or {}).items():
            signal.signal(sig, handler)

    # -- scheduling -------------------------------------------------------------------------------
    def _schedule(self, state: "RunState") -> list[StepFailedError]:
        """Start each step once its upstream steps succeeded; only steps whose upstream just changed are looked at
        again, and finished steps are taken from a queue, so a fan-out of thousands costs each step O(its edges)."""
        from conveyor.execution.launcher import StepLauncher

        snapshot = state.snapshot
        position = {n: i for i, n in enumerate(snapshot.order)}
        upstream = {n: list(snapshot.step_spec(n)["upstream"]) for n in snapshot.order}
        downstream: dict[str, list[str]] = {n: [] for n in snapshot.order}
        for n, ups in upstream.items():
            for u in ups:
                downstream[u].append(n)
        waiting = {n for n in snapshot.order if state.statuses.get(n) not in SUCCESSFUL_STATUSES}
        limit = self.config_value("max_parallelism")  # None: every ready step starts at once
        to_check: list[int] = sorted(position[n] for n in waiting)  # a heap of positions: definition order
        ready: list[int] = []  # heap of positions of steps that may start once there is room
        finished: queue.SimpleQueue[_StepThread] = queue.SimpleQueue()
        running: dict[_StepThread, str] = {}
        failures: list[StepFailedError] = []
        last_beat = last_stop_check = time.monotonic()
        stopping = False
        try:
            while waiting or running:
                if state.stop_event.is_set() and not stopping:  # every step not started yet is stopped
                    stopping = True
                    to_check = sorted(position[n] for n in waiting)
                while to_check:
                    name = snapshot.order[heapq.heappop(to_check)]
                    if name not in waiting:
                        continue
                    ups = [state.statuses.get(u) for u in upstream[name]]
                    if state.stop_event.is_set() or any(s in UNSUCCESSFUL_STATUSES for s in ups):
                        waiting.discard(name)
                        skipped = StepStatus.STOPPED if state.stop_event.is_set() else StepStatus.SKIPPED
                        state.statuses[name] = skipped
                        state.store.update_step_run(state.step_ids[name], status=skipped)
                        state.display.update(name, skipped)
                        for d in downstream[name]:
                            heapq.heappush(to_check, position[d])
                    elif all(s in SUCCESSFUL_STATUSES for s in ups):
                        waiting.discard(name)
                        heapq.heappush(ready, position[name])
                while ready and (limit is None or len(running) < limit) and not state.stop_event.is_set():
                    name = snapshot.order[heapq.heappop(ready)]
                    state.statuses[name] = StepStatus.RUNNING
                    running[_StepThread(StepLauncher(state, name).launch, name, finished)] = name
                if ready and state.stop_event.is_set():  # ready but never started: stopped with the rest
                    for pos in ready:
                        name = snapshot.order[pos]
                        state.statuses[name] = StepStatus.STOPPED
                        state.store.update_step_run(state.step_ids[name], status=StepStatus.STOPPED)
                        state.display.update(name, StepStatus.STOPPED)
                    ready.clear()
                if not running:
                    continue
                try:
                    done = [finished.get(timeout=1.0)]
                    while not finished.empty():
                        done.append(finished.get_nowait())
                except queue.Empty:
                    done = []
                for fut in done:
                    name = running.pop(fut)
                    try:
                        state.statuses[name] = fut.result()
                    except StepFailedError as err:
                        stopped = err.kind == FailureKind.STOPPED
                        state.statuses[name] = StepStatus.STOPPED if stopped else StepStatus.FAILED
                        if not stopped or not state.stop_event.is_set():
                            failures.append(err)  # a job cancelled behind our back fails the run
                    except BaseException as err:  # noqa: BLE001 - a bug of ours must still end the step
                        state.statuses[name] = StepStatus.FAILED
                        state.store.update_step_run(state.step_ids[name], status=StepStatus.FAILED, end_time=now(),
                                                    error=f"internal error: {type(err).__name__}: {err}",
                                                    failure_kind=FailureKind.INTERNAL)
                        state.display.update(name, StepStatus.FAILED, f"internal error: {type(err).__name__}")
                        failures.append(StepFailedError(name, f"internal error: {type(err).__name__}: {err}",
                                                        kind=FailureKind.INTERNAL))
                    for d in downstream[name]:
                        heapq.heappush(to_check, position[d])
                t = time.monotonic()
                if t - last_beat > self.config_value("heartbeat_interval"):
                    last_beat = t
                    state.store.update_run(state.run_id, heartbeat=now())
                if t - last_stop_check > 1.0 and not state.stop_event.is_set():
                    last_stop_check = t
                    if state.store.stop_requested(state.run_id):
                        self._stop(state, running)
        except BaseException:
            self._stop(state, running)
            remote = [f for f, n in running.items() if state.resolved[n].operator is not None]
            _wait(remote, timeout=STOP_GRACE)  # their launchers are cancelling backend jobs
            _wait(running, timeout=IN_PROCESS_GRACE)
            for fut, name in running.items():
                if not fut.done():  # an in-process step stuck in C code: it dies with this process
                    state.store.update_step_run(state.step_ids[name], status=StepStatus.STOPPED, end_time=now(),
                                                error="stopped", failure_kind=FailureKind.STOPPED)
                    state.display.update(name, StepStatus.STOPPED)
            for name in [*waiting, *(snapshot.order[pos] for pos in ready)]:
                state.store.update_step_run(state.step_ids[name], status=StepStatus.STOPPED)
            raise
        if state.stop_event.is_set() and not failures:
            failures.append(StepFailedError("(every running step)", "the run was stopped", kind=FailureKind.STOPPED))
        return failures

    @staticmethod
    def _stop(state: "RunState", running: dict[_StepThread, str]) -> None:
        """Launchers see the event and cancel their backend jobs; in-process steps get an exception."""
        from conveyor.execution.interrupt import StepStopped, raise_in_thread

        state.stop_event.set()
        for tid in list(state.in_process_threads.values()):
            raise_in_thread(tid, StepStopped)
