"""The metadata store: migrations match the models, SQLite runs in WAL mode, PostgreSQL works for real."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from steps_lib import double, make_numbers, remote_sum

from conveyor import Client, pipeline
from conveyor.context import get_context, reset_contexts
from conveyor.store import schema
from conveyor.store.store import MetadataStore


@pipeline
def stored_pipeline(n: int = 4):
    total, _ = remote_sum(make_numbers(n))
    double(total)


def _assert_migrations_match_models(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = MetadataStore(url)
    store.ensure_schema()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"
    store.dispose()


def test_schema_head_matches_the_newest_migration() -> None:
    from pathlib import Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(schema.__file__).parent / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_current_head() == schema.SCHEMA_HEAD


def test_sqlite_migrations_match_models_and_use_wal(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    _assert_migrations_match_models(url)
    store = MetadataStore(url)
    with store.read() as c:
        assert c.scalar("PRAGMA journal_mode") == "wal"
    store.dispose()


def test_default_store_lives_under_dot_conveyor(project) -> None:
    run = stored_pipeline()
    assert (project / ".conveyor" / "conveyor.db").exists()
    assert (project / ".conveyor" / "artifacts" / "runs" / run.id).is_dir()


def test_records_everything_a_run_needs(project) -> None:
    run = stored_pipeline()
    ctx = get_context()
    with ctx.store.read() as c:
        counts = {t.name: c.scalar(f"SELECT count(*) FROM {t.name}") for t in schema.metadata.sorted_tables}
    assert counts["pipelines"] == 1 and counts["snapshots"] == 1 and counts["runs"] == 1
    assert counts["step_runs"] == 3 and counts["artifacts"] == 4
    remote = run.steps["remote_sum"]
    assert remote.cache_key and remote.submission["job_name"].startswith("conveyor-")
    assert remote.logs_uri.endswith("logs.txt") and remote.attempt == 1
    assert remote.outputs["total"].checksum


@pytest.mark.postgres
def test_postgresql_migrations_match_models(postgres_db_url: str) -> None:
    _assert_migrations_match_models(postgres_db_url)


@pytest.mark.postgres
def test_a_pipeline_runs_against_a_real_postgresql_store(postgres_db_url: str, monkeypatch) -> None:
    monkeypatch.setenv("CONVEYOR_STORE_URL", postgres_db_url)
    reset_contexts()
    run = stored_pipeline(n=6)
    assert get_context().store.url.startswith("postgresql")
    fetched = Client().get_pipeline_run(run.name)
    assert fetched.status == "completed"
    assert fetched.steps["double"].outputs["output"].load() == 30
    assert fetched.steps["remote_sum"].config.step_operator == "local"
    again = stored_pipeline(n=6)
    assert [s.status for s in again.steps.values()] == ["cached"] * 3
    assert [r.id for r in Client().list_pipeline_runs()] == [again.id, run.id]
