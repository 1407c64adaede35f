"""Every step operator flavor honours the same contract, shown on its real backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from testkit import wait_until
from backends import Backend
from conformance_steps import fails, flaky, hog, numbers, resources_seen, sleeps, ticks, total

from conveyor import Client, pipeline
from conveyor.exceptions import ResourceUnavailableError, RunFailedError

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"


def on(backend: Backend, step, **options):
    return step.with_options(step_operator=backend.operator, **options)


def test_a_step_runs_remotely_and_returns_outputs(backend: Backend) -> None:
    @pipeline(enable_cache=False)
    def p():
        on(backend, total)(numbers(5))

    run = p()
    step_run = run.steps["total"]
    assert step_run.status == "completed"
    assert step_run.outputs["sum"].load() == 10
    assert step_run.outputs["pid"].load() != os.getpid()
    assert step_run.outputs["host_env"].load() == "total"
    assert step_run.outputs["context"].load() == {
        "pipeline": "p", "run_name": run.name, "run_id": run.id, "step_name": "total", "step_run_name": "total",
        "step_run_id": step_run.id, "attempt": 1, "sum_uri": step_run.outputs["sum"].uri,
        "outputs": ["context", "host_env", "pid", "sum"]}
    assert step_run.config.step_operator == backend.operator
    assert step_run.config.step_operator_flavor == backend.flavor
    assert step_run.submission["flavor"] == backend.flavor
    assert "adding 5 values" in step_run.logs()
    assert backend.leftovers(step_run) == []


#: the flavors that run the step in a container image: their attempts record which one
CONTAINER_FLAVORS = frozenset({"docker", "kubernetes", "sagemaker", "vertex", "azureml"})


def test_every_attempt_records_its_phases_job_id_host_and_outcome(backend: Backend) -> None:
    @pipeline(enable_cache=False)
    def p():
        on(backend, total)(numbers(5))

    step_run = p().steps["total"]
    [attempt] = step_run.attempts
    assert (attempt.number, attempt.status, attempt.failure_kind, attempt.error) == (1, "completed", None, None)
    phases = [attempt.submitted, attempt.started, attempt.finished, attempt.published]
    assert None not in phases and phases == sorted(phases), attempt
    assert attempt.backend_job_id == (step_run.submission.get("backend_id") or step_run.submission["job_name"])
    assert attempt.host, "the step's own process reports where it ran"
    assert attempt.peak_rss_bytes and attempt.cpu_seconds is not None
    assert (attempt.operator, attempt.operator_flavor) == (backend.operator, backend.flavor)
    assert attempt.code_hash and attempt.logs_uri == step_run.logs_uri
    if backend.flavor in CONTAINER_FLAVORS:
        assert attempt.image_digest, "a container flavor records the image the step ran in"


def test_the_remote_traceback_reaches_the_user(backend: Backend) -> None:
    @pipeline(enable_cache=False)
    def p():
        on(backend, fails)(numbers(3))

    with pytest.raises(RunFailedError) as info:
        p()
    text = str(info.value)
    assert "RemoteFailure: cannot handle 3 values" in text
    assert 'raise RemoteFailure(f"cannot handle {len(values)} values")' in text
    step_run = info.value.run.steps["fails"]
    assert step_run.status == "failed" and step_run.failure_kind == "user"
    assert "Traceback" in step_run.traceback


def test_logs_stream_live_while_the_step_runs_and_are_stored(backend: Backend, tmp_path: Path) -> None:
    sentinel = tmp_path / "release"

    @pipeline(enable_cache=False)
    def p():
        on(backend, ticks)(str(sentinel))

    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("run", p()), daemon=True)
    runner.start()
    client = Client()

    def first_tick_stored() -> bool:
        runs = client.list_pipeline_runs()
        if not runs:
            return False
        step_run = client.get_pipeline_run(runs[0].id).steps["ticks"]
        return "tick-0" in step_run.logs()

    wait_until(first_tick_stored, what="the first log line in the stored log")
    live = client.get_pipeline_run(client.list_pipeline_runs()[0].id).steps["ticks"]
    assert live.status == "running", "the log line must arrive while the step still runs"
    assert "tick-1" not in live.logs()
    sentinel.write_text("go")
    runner.join(timeout=120)
    step_run = result["run"].steps["ticks"]
    assert step_run.status == "completed"
    assert "tick-0" in step_run.logs() and "tick-1" in step_run.logs()


INTERRUPTED = textwrap.dedent('''
    import sys
    sys.path.insert(0, {here!r})
    from conveyor import pipeline
    from conformance_steps import sleeps

    @pipeline(enable_cache=False)
    def interrupted():
        sleeps.with_options(step_operator={operator!r})(seconds=300)

    if __name__ == "__main__":
        interrupted()
''')


def _start_interrupted(backend: Backend, project: Path) -> tuple[subprocess.Popen, str]:
    script = project / "interrupted.py"
    script.write_text(INTERRUPTED.format(here=str(HERE), operator=backend.operator))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "CONVEYOR_QUIET": "1"})
    client = Client()

    def sleeping() -> bool:
        runs = client.list_pipeline_runs()
        return bool(runs) and "sleeping" in client.get_pipeline_run(runs[0].id).steps["sleeps"].logs()

    wait_until(sleeping, what="the step to start")
    return proc, client.list_pipeline_runs()[0].id


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_orchestrator_leaves_nothing_running(backend: Backend, project: Path, sig: signal.Signals) -> None:
    proc, run_id = _start_interrupted(backend, project)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    final = Client().get_pipeline_run(run_id)
    assert final.status == "stopped"
    assert final.steps["sleeps"].status == "stopped"
    assert backend.leftovers(final.steps["sleeps"]) == []


def test_run_stop_from_another_shell_cancels_the_backend_job(backend: Backend, project: Path, conveyor_cli) -> None:
    proc, run_id = _start_interrupted(backend, project)
    # --wait polls for the run to leave `running`: generous, so a loaded machine cannot fail it (default 15 s)
    conveyor_cli("run", "stop", run_id, "--wait", "120", timeout=180)
    proc.wait(timeout=60)
    final = Client().get_pipeline_run(run_id)
    assert final.status == "stopped"
    assert backend.leftovers(final.steps["sleeps"]) == []


def test_a_step_over_its_timeout_is_stopped_and_reported(backend: Backend) -> None:
    @pipeline(enable_cache=False)
    def p():
        on(backend, sleeps, timeout=2)(seconds=300)

    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["sleeps"]
    assert step_run.status == "failed" and step_run.failure_kind == "timeout"
    assert "timed out after 2s" in step_run.error
    assert backend.leftovers(step_run) == []


def test_cpu_count_is_honoured(backend: Backend) -> None:
    @pipeline(enable_cache=False)
    def p():
        on(backend, resources_seen, settings={"resources": {"cpu_count": 1}})()

    run = p()
    backend.check_cpus(run.steps["resources_seen"].outputs["output"].load())


@pytest.mark.needs("memory_enforced")
def test_a_step_over_its_memory_is_killed_and_reported(backend: Backend) -> None:
    @pipeline(enable_cache=False)
    def p():
        on(backend, hog, settings={"resources": {"memory": "200MB"}})(megabytes=600)

    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["hog"]
    assert step_run.failure_kind == backend.memory_kind, step_run.error
    assert "killed for memory: raise ResourceSettings(memory=...)" in step_run.error
    assert backend.leftovers(step_run) == []


def test_an_impossible_request_is_refused_before_submission(backend: Backend) -> None:
    @pipeline(enable_cache=False)
    def p():
        numbers()
        on(backend, resources_seen, settings={"resources": backend.impossible})()

    with pytest.raises(ResourceUnavailableError) as info:
        p()
    assert "cpu_count=4096" in str(info.value)
    assert Client().list_pipeline_runs() == []


@pytest.mark.needs("never_starts")
def test_a_job_that_can_never_start_fails_clearly(backend: Backend) -> None:
    from testkit import add_step_operator

    config, settings = backend.never_starts
    add_step_operator(backend.operator, backend.flavor, **{**backend.config, **config})

    @pipeline(enable_cache=False)
    def p():
        on(backend, sleeps, settings=settings)(seconds=1)

    started = time.monotonic()
    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["sleeps"]
    assert step_run.failure_kind == "pending", step_run.error
    assert time.monotonic() - started < 60
    [attempt] = step_run.attempts  # the record says why it waited: the backend's own words
    assert attempt.failure_kind == "pending" and attempt.queued and attempt.queue_reason and not attempt.started
    assert backend.leftovers(step_run) == []


def test_retries_resubmit_the_job(backend: Backend, tmp_path: Path) -> None:
    counter = tmp_path / "attempts"

    @pipeline(enable_cache=False)
    def p():
        on(backend, flaky, retry={"max_retries": 1})(str(counter))

    run = p()
    step_run = run.steps["flaky"]
    assert step_run.status == "completed" and step_run.attempt == 2
    assert step_run.outputs["output"].load() == 2
    assert step_run.submission["job_name"].endswith("-2")


RESUMABLE = textwrap.dedent('''
    import sys
    sys.path.insert(0, {here!r})
    from conveyor import pipeline
    from conformance_steps import gated, numbers, times_ten

    @pipeline(enable_cache=False)
    def resumable():
        numbers(3)
        times_ten(gated.with_options(step_operator={operator!r})({gate!r}, {counter!r}))

    if __name__ == "__main__":
        resumable()
''')


@pytest.mark.needs("resume")
def test_resume_after_the_orchestrator_is_killed_reattaches_to_the_running_job(
        backend: Backend, project: Path, tmp_path: Path, conveyor_cli) -> None:
    gate, counter = tmp_path / "gate", tmp_path / "starts"
    script = project / "resumable.py"
    script.write_text(RESUMABLE.format(here=str(HERE), operator=backend.operator, gate=str(gate), counter=str(counter)))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "CONVEYOR_QUIET": "1"})
    client = Client()

    def mid_run() -> bool:
        runs = client.list_pipeline_runs()
        step_run = client.get_pipeline_run(runs[0].id).steps["gated"] if runs else None
        return step_run is not None and "gated" in step_run.logs() and \
            (step_run.submission or {}).get("data", {}).get("state") != "submitting"

    wait_until(mid_run, what="the gated step to run on the backend")
    run_id = client.list_pipeline_runs()[0].id
    before = client.get_pipeline_run(run_id)
    proc.kill()  # SIGKILL: no handler runs, nothing is cleaned up
    proc.wait(timeout=30)
    listed = conveyor_cli("run", "list").stdout
    assert "abandoned" in listed, listed
    opener = threading.Timer(2.0, lambda: gate.write_text("go"))  # the job is still running when resume attaches
    opener.start()
    try:
        result = conveyor_cli("run", "resume", run_id, timeout=300)
    finally:
        opener.cancel()
    assert "1 of 3 step(s) already done" in result.stdout, result.stdout
    final = client.get_pipeline_run(run_id)
    assert final.status == "completed", final
    gated_run = final.steps["gated"]
    assert counter.read_text().splitlines() == ["started"], "the job was submitted twice"
    assert gated_run.attempt == 1 and gated_run.submission == before.steps["gated"].submission
    # the re-attached job continues its attempt's record: one attempt, submitted by the first orchestrator
    [attempt] = gated_run.attempts
    assert attempt.status == "completed" and attempt.submitted == before.steps["gated"].attempts[0].submitted
    assert attempt.backend_job_id == before.steps["gated"].attempts[0].backend_job_id and attempt.published
    assert final.steps["times_ten"].outputs["output"].load() == 10
    assert final.steps["numbers"].end_time == before.steps["numbers"].end_time, "a finished step ran again"
    assert backend.leftovers(gated_run) == []


def _texts_under(path: Path) -> Iterator[tuple[str, bytes]]:
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    for p in paths:
        try:
            yield str(p), p.read_bytes()
        except OSError:
            pass


class ArgvSpy:
    """Samples every process's argv while the run goes on, keeping those that contain the needle."""

    def __init__(self, needle: bytes) -> None:
        self.needle, self.hits, self._stop = needle, [], threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    argv = cmdline.read_bytes()
                except OSError:
                    continue
                shown = argv.replace(b"\0", b" ").decode(errors="replace")
                if self.needle in argv and shown not in self.hits:
                    self.hits.append(shown)
            time.sleep(0.005)

    def __enter__(self) -> "ArgvSpy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_secret_reaches_the_step_and_appears_nowhere_else(backend: Backend, project: Path, conveyor_cli) -> None:
    import hashlib
    import uuid

    from conformance_steps import uses_secret

    from conveyor.context import get_context

    value = f"planted-{uuid.uuid4().hex}"
    conveyor_cli("secret", "create", "planted", "token", input=value + "\n")  # from stdin: not even our argv

    @pipeline(enable_cache=False)
    def p():
        on(backend, uses_secret, settings={"environment": {"PLANTED_TOKEN": "{{planted.token}}"}})("PLANTED_TOKEN")

    with ArgvSpy(value.encode()) as spy:
        run = p()
    step_run = run.steps["uses_secret"]
    assert step_run.outputs["output"].load() == hashlib.sha256(value.encode()).hexdigest(), "the step did not get it"
    assert "the token is ****" in step_run.logs(), step_run.logs()
    assert spy.hits == [], f"the secret was in a process's argv: {spy.hits}"
    ctx = get_context()
    places = [ctx.dir, Path(ctx.load_stack().artifact_store.artifact_store().root)]  # store db (+ WAL), artifacts
    receipt = (step_run.submission or {}).get("data") or {}
    places += [Path(v) for v in receipt.values() if isinstance(v, str) and v.startswith("/")]  # job dirs, logs
    found = [where for place in places for where, data in _texts_under(place) if value.encode() in data]
    found += [where for where, text in backend.texts(step_run) if value in text]  # scripts, manifests
    assert found == [], f"the secret's value is stored in {found}"


def _normalize(value, project: Path):
    text = json.dumps(value, indent=2, sort_keys=True)
    for old, new in ((str(project), "<project>"), (sys.executable, "<python>"), (str(HERE), "<conformance>")):
        text = text.replace(old, new)
    return json.loads(text)


def test_dry_run_matches_the_golden_file(backend: Backend, project: Path) -> None:
    from conveyor.execution.run import dry_run

    @pipeline(enable_cache=False)
    def p():
        on(backend, sleeps, settings={"resources": {"cpu_count": 2, "memory": "1GiB"}}, timeout="10m")(seconds=1)

    got = _normalize(dry_run(p.compile(), "sleeps"), project)
    golden = GOLDEN / f"{backend.flavor}.json"
    if os.environ.get("CONVEYOR_UPDATE_GOLDEN") == "1" or not golden.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"golden file {golden.name} is missing: generate it with CONVEYOR_UPDATE_GOLDEN=1 and commit it")
        golden.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(golden.read_text())
