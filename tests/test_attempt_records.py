"""Every attempt of a step is recorded (store table step_attempts): phases, where it ran, what it used, outcome.

Pipelines run as users run them (a script in a fresh interpreter); the records are read back through `Client`."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest
from testkit import run_python

from conveyor import Client
from conveyor.context import reset_contexts

#: an in-process step, a `local` step that uses some CPU and memory, a retried `local` step (its first attempt
#: fails), and an in-process step that fails for good
SCRIPT = textwrap.dedent('''
    import os
    from conveyor import pipeline, step
    from conveyor.config import ResourceSettings

    @step
    def make(n: int) -> list[int]:
        return list(range(n))

    @step(step_operator="local", settings={"resources": ResourceSettings(cpu_count=1)})
    def crunch(values: list[int]) -> int:
        blob = bytearray(64 * 2**20)  # 64 MiB touched: the peak RSS shows it
        total = 0
        for i in range(2_000_000):  # some CPU time of the step's own process
            total += i % 7
        return sum(values) + len(blob) * 0 + total * 0

    @step(step_operator="local", retry={"max_retries": 1})
    def flaky(x: int, flag: str) -> int:
        if not os.path.exists(flag):
            open(flag, "w").close()
            raise RuntimeError("first attempt fails on purpose")
        os.remove(flag)  # the next run's first attempt fails again
        return x + 1

    @step
    def broken(x: int) -> int:
        raise ValueError(f"cannot use {x}")

    @pipeline(enable_cache=False)
    def recorded(flag: str):
        total = crunch(make(5))
        flaky(total, flag)

    @pipeline(enable_cache=False)
    def failing():
        broken(make(2))

    if __name__ == "__main__":
        import sys
        recorded(flag=sys.argv[0] + ".flag") if "fail" not in os.environ.get("WHICH", "") else failing()
''')


def _ordered(a) -> None:
    """submitted <= (queued) <= started <= finished (<= published): the phases never run backwards."""
    phases = [t for t in (a.submitted, a.queued, a.started, a.finished, a.published) if t is not None]
    assert phases == sorted(phases), a
    assert a.submitted and a.started and a.finished, a


@pytest.fixture
def recorded_run(project: Path):
    run_python(SCRIPT, project)
    reset_contexts()
    client = Client()
    return client.get_pipeline_run(client.list_pipeline_runs()[0].id)


def test_in_process_and_local_steps_record_phases_host_and_usage(recorded_run) -> None:
    make, crunch = recorded_run.steps["make"], recorded_run.steps["crunch"]
    [inproc] = make.attempts
    assert inproc.number == 1 and inproc.status == "completed" and inproc.failure_kind is None
    assert inproc.operator is None and inproc.backend_job_id is None
    assert inproc.host == socket.gethostname()
    assert inproc.cpu_seconds is not None and inproc.peak_rss_bytes is None  # the process is shared
    assert inproc.published is not None and inproc.logs_uri == make.logs_uri
    _ordered(inproc)

    [remote] = crunch.attempts
    assert remote.status == "completed" and remote.operator == "local" and remote.operator_flavor == "local"
    assert remote.backend_job_id == crunch.submission["backend_id"]  # the step process's pid
    assert remote.host == socket.gethostname()  # from the remote side's result
    assert remote.peak_rss_bytes is not None and remote.peak_rss_bytes > 64 * 2**20
    assert remote.cpu_seconds is not None and remote.cpu_seconds > 0.05
    assert remote.requested == {"cpu_count": 1}
    assert remote.code_hash and remote.published is not None
    _ordered(remote)
    assert make.upstream == () and crunch.upstream == ("make",) and recorded_run.steps["flaky"].upstream == ("crunch",)


def test_a_retried_step_has_one_attempt_per_try_with_its_outcome(recorded_run) -> None:
    flaky = recorded_run.steps["flaky"]
    assert flaky.status == "completed" and flaky.attempt == 2
    first, second = flaky.attempts
    assert (first.number, first.status, first.failure_kind) == (1, "failed", "user")
    assert "RuntimeError: first attempt fails on purpose" in first.error
    assert "Traceback" in first.traceback and 'raise RuntimeError("first attempt fails on purpose")' in first.traceback
    assert first.published is None and first.host == socket.gethostname()
    assert (second.number, second.status, second.failure_kind, second.error) == (2, "completed", None, None)
    assert first.backend_job_id != second.backend_job_id  # two processes
    for a in (first, second):
        _ordered(a)
    assert first.finished <= second.submitted


def test_a_failed_in_process_attempt_keeps_its_traceback(project: Path, monkeypatch) -> None:
    monkeypatch.setenv("WHICH", "fail")
    assert run_python(SCRIPT, project, check=False).returncode != 0
    reset_contexts()
    client = Client()
    broken = client.get_pipeline_run(client.list_pipeline_runs()[0].id).steps["broken"]
    [attempt] = broken.attempts
    assert attempt.status == "failed" and attempt.failure_kind == "user"
    assert attempt.error == "ValueError: cannot use [0, 1]"
    assert 'raise ValueError(f"cannot use {x}")' in attempt.traceback
    _ordered(attempt)


def _downgrade_to_0004(url: str) -> None:
    """Make the database what a Conveyor before attempts left behind (Alembic's own downgrade)."""
    from alembic import command
    from alembic.config import Config

    from conveyor.store import migrate
    from conveyor.store.sql import Database

    db = Database(url)
    engine = migrate._sqlite_engine(db) if db.is_sqlite else db.engine()
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    engine.dispose()
    db.dispose()


def test_upgrading_a_0004_database_keeps_old_runs_readable(project: Path, conveyor_cli) -> None:
    from conveyor.context import get_context

    run_python(SCRIPT, project)
    reset_contexts()
    url = get_context().store.url
    old_name = Client().list_pipeline_runs()[0].name
    get_context().store.dispose()
    _downgrade_to_0004(url)
    reset_contexts()
    listed = conveyor_cli("run", "list").stdout  # the CLI upgrades the database as it opens it
    assert old_name in listed
    reset_contexts()
    store = get_context().store
    with store.read() as c:
        assert c.scalar("SELECT version_num FROM alembic_version") == "0005"
    old = Client().get_pipeline_run(old_name)
    assert old.status == "completed"
    assert all(s.attempts == () for s in old.steps.values())  # recorded before attempts were
    assert old.steps["crunch"].upstream == ("make",)
    run_python(SCRIPT, project)  # and new runs record theirs
    reset_contexts()
    client = Client()
    new = client.get_pipeline_run(client.list_pipeline_runs()[0].id)
    assert new.name != old_name and [len(s.attempts) for s in new.steps.values()] == [1, 1, 2]


@pytest.mark.postgres
def test_attempts_are_recorded_and_migrated_on_postgresql(postgres_db_url: str, project: Path, monkeypatch) -> None:
    monkeypatch.setenv("CONVEYOR_STORE_URL", postgres_db_url)
    run_python(SCRIPT, project)
    reset_contexts()
    client = Client()
    run = client.get_pipeline_run(client.list_pipeline_runs()[0].id)
    assert [len(s.attempts) for s in run.steps.values()] == [1, 1, 2]
    assert run.steps["flaky"].attempts[0].failure_kind == "user"
    assert run.steps["crunch"].attempts[0].requested == {"cpu_count": 1}
    client.store.dispose()
    _downgrade_to_0004(postgres_db_url)
    reset_contexts()
    again = Client().get_pipeline_run(run.id)  # opening the store upgrades it again
    assert all(s.attempts == () for s in again.steps.values()) and again.status == "completed"
