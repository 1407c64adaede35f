"""Bringing a database to the newest schema with Alembic (migrations/ is the schema's source of truth).

Imported only when the database's revision is not `SCHEMA_HEAD` (a new or an older database): a pipeline run on an
up-to-date store never loads Alembic or SQLAlchemy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor.store.sql import BUSY_TIMEOUT_S, Database

__all__ = ["MIGRATION_LOCK_KEY", "upgrade"]

#: any fixed 64-bit number, the same in every Conveyor process: PostgreSQL's advisory lock around migrations
MIGRATION_LOCK_KEY = 0x636F6E7665796F72  # "conveyor"


def _sqlite_engine(db: Database) -> Any:
    """A one-connection engine with the store's pragmas; its transactions take the write lock up front, so that
    processes migrating a new file at once queue instead of failing with "database is locked". An in-memory
    database is the store's own connection (another one would be another database)."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool, StaticPool

    if db.path == ":memory:":
        shared = db.acquire()
        db.release(shared)
        return sa.create_engine("sqlite://", creator=lambda: shared, poolclass=StaticPool)
    engine = sa.create_engine(db.url, poolclass=NullPool, connect_args={"check_same_thread": False,
                                                                        "timeout": BUSY_TIMEOUT_S})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def upgrade(db: Database) -> None:
    """Run the migrations up to head in one transaction (Alembic skips those the database has already)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    engine = _sqlite_engine(db) if db.is_sqlite else db.engine()
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # processes starting at once against a new database: one migrates, the others wait and find it done
                # (SQLite's writers are already serialised by BEGIN IMMEDIATE)
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        if db.is_sqlite and db.path != ":memory:":
            engine.dispose()
