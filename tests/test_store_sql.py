"""The metadata store without SQLAlchemy on the run path: plain SQL over `sqlite3` reads and writes the same
database files SQLAlchemy did, and a pipeline process on an up-to-date store never imports SQLAlchemy or Alembic."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from testkit import run_python

from conveyor.store import schema, tables
from conveyor.store.store import MetadataStore

ONE_STEP = textwrap.dedent("""
    import atexit, sys
    atexit.register(lambda: print("LOADED", sorted(m for m in ("sqlalchemy", "alembic") if m in sys.modules)))
    from conveyor import Client, pipeline, step

    @step
    def one() -> int:
        return 1

    @pipeline(enable_cache=False)
    def single():
        one()

    run = single()
    print("RUNS", run.status, len(Client().list_pipeline_runs()))
""")


def test_a_pipeline_on_an_up_to_date_sqlite_store_imports_neither_sqlalchemy_nor_alembic(project: Path) -> None:
    first = run_python(ONE_STEP, project).stdout
    assert "RUNS completed 1" in first, first
    assert "LOADED ['alembic', 'sqlalchemy']" in first, f"a new store is migrated with Alembic: {first}"
    engine = sa.create_engine(f"sqlite:///{project / '.conveyor' / 'conveyor.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == schema.SCHEMA_HEAD
    engine.dispose()
    second = run_python(ONE_STEP, project).stdout
    assert "RUNS completed 2" in second, second
    assert "LOADED []" in second, second


def test_the_table_names_of_the_sql_agree_with_the_models() -> None:
    assert tables.COLUMNS == {t.name: tuple(c.name for c in t.c) for t in schema.metadata.sorted_tables}
    assert tables.JSON_COLUMNS == {t.name: frozenset(c.name for c in t.c if isinstance(c.type, sa.JSON))
                                   for t in schema.metadata.sorted_tables if any(isinstance(c.type, sa.JSON) for c in t.c)}


def _sqlalchemy_store(url: str) -> sa.Engine:
    """A database as the SQLAlchemy store made it: Alembic's migrations, then rows through SQLAlchemy Core."""
    from alembic import command
    from alembic.config import Config

    engine = sa.create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(schema.__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return engine


def test_a_database_written_by_sqlalchemy_reads_back_the_same_and_takes_new_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = _sqlalchemy_store(url)
    t = schema
    whole, frac = datetime(2024, 5, 1, 12, 0, 0), datetime(2024, 5, 1, 12, 0, 0, 1500)
    with engine.begin() as c:
        c.execute(sa.insert(t.pipelines).values(id="p1", name="pipe", created=whole))
        c.execute(sa.insert(t.snapshots).values(id="s1", pipeline_id="p1", spec_hash="h", spec={"a": [1, None]},
                                                created=frac))
        c.execute(sa.insert(t.runs).values(id="r1", name="run-1", pipeline_id="p1", snapshot_id="s1", stack_name="default",
                                           status="running", start_time=whole, heartbeat=frac, host="h", pid=7,
                                           stop_requested=True, created=whole))
        c.execute(sa.insert(t.step_runs).values(id="sr1", run_id="r1", name="a", position=0, status="completed",
                                                attempt=1, config={"x": 1}, submission=None, start_time=frac,
                                                end_time=frac, cache_key="ck"))
        c.execute(sa.insert(t.artifacts).values(id="a1", uri="/u", materializer="m", data_type="int", size=2 ** 40,
                                                producer_step_run_id="sr1", created=frac, name="named", version="1",
                                                version_number=1))
        c.execute(sa.insert(t.step_run_artifacts).values(step_run_id="sr1", direction="output", name="output",
                                                         artifact_id="a1"))
        c.execute(sa.insert(t.run_metadata), [
            {"id": f"m{i}", "run_id": "r1", "key": k, "value": v, "created": whole}
            for i, (k, v) in enumerate([("n", None), ("f", 0.5), ("s", "text"), ("d", {"k": [True]}), ("b", False)])])
        c.execute(sa.insert(t.secrets).values(id="x1", name="sec", keys=["a"], value='{"not": "json decoded"}',
                                              created=whole, updated=frac))
        c.execute(sa.insert(t.kv).values(key="initialized", value="[1]"))

    def read_by_sqlalchemy(table: sa.Table, key: str, ident: str) -> dict:
        with engine.connect() as conn:
            return dict(conn.execute(sa.select(table).where(table.c[key] == ident)).one()._mapping)

    store = MetadataStore(url)
    run = store.find_run("run-1")
    assert run == {**read_by_sqlalchemy(t.runs, "id", "r1"), "pipeline_name": "pipe"}
    assert run["stop_requested"] is True and run["heartbeat"] == frac
    assert store.step_runs("r1") == [read_by_sqlalchemy(t.step_runs, "id", "sr1")]
    assert store.get_snapshot("s1") == read_by_sqlalchemy(t.snapshots, "id", "s1")
    assert store.get_secret("sec") == read_by_sqlalchemy(t.secrets, "name", "sec")
    assert store.get_kv("initialized") == "[1]"
    assert store.metadata_of("run_id", ["r1"]) == {"r1": {"b": False, "d": {"k": [True]}, "f": 0.5, "n": None,
                                                          "s": "text"}}
    assert store.find_cached("ck")["outputs"]["output"]["size"] == 2 ** 40
    assert store.find_artifact_version("named")["created"] == frac

    # what the new code writes, SQLAlchemy reads as it wrote it: text datetimes of six digits, JSON text, 0/1
    assert store.claim_run("r1", previous=(7, frac), host="h2", pid=8)  # equality on the heartbeat SQLAlchemy wrote
    store.update_step_run("sr1", submission={"job": "j"}, end_time=whole)
    store.put_metadata([{"run_id": "r1", "values": {"n": None, "z": [1]}}])
    claimed = read_by_sqlalchemy(t.runs, "id", "r1")
    assert claimed["pid"] == 8 and claimed["stop_requested"] is False and claimed["end_time"] is None
    assert store.find_run("r1") == {**claimed, "pipeline_name": "pipe"}
    step = read_by_sqlalchemy(t.step_runs, "id", "sr1")
    assert step["submission"] == {"job": "j"} and step["end_time"] == whole
    with engine.connect() as conn:
        raw = dict(conn.exec_driver_sql("SELECT key, value FROM run_metadata WHERE run_id = 'r1'").all())
        assert raw["n"] == "null" and raw["z"] == "[1]"  # None as JSON null, as SQLAlchemy's JSON type wrote it
        assert conn.exec_driver_sql("SELECT end_time FROM step_runs").scalar() == "2024-05-01 12:00:00.000000"
    store.dispose()
    engine.dispose()


def test_a_lost_insert_race_is_the_stores_integrity_error_and_a_damaged_file_is_explained(tmp_path: Path) -> None:
    from conveyor.store.errors import IntegrityError, MetadataStoreError

    store = MetadataStore(f"sqlite:///{tmp_path / 's.db'}")
    store.set_kv("k", "v")
    with pytest.raises(IntegrityError), store.write() as c:
        c.execute("INSERT INTO kv (key, value) VALUES (?, ?)", ("k", "again"))
    assert store.get_kv("k") == "v"
    store.dispose()
    (tmp_path / "bad.db").write_bytes(b"not a database!!" + bytes(4080))
    with pytest.raises(MetadataStoreError, match="is damaged"):
        MetadataStore(f"sqlite:///{tmp_path / 'bad.db'}").list_runs()
