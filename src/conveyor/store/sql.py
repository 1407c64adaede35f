"""The metadata store's connections and transactions, over DB-API with no SQL toolkit on the run path.

- SQLite (the embedded default): `sqlite3` itself. Importing SQLAlchemy cost a pipeline process ~160 ms and every
  statement ~0.3 ms of compiling and events; a statement through `sqlite3` costs microseconds.
- Anything else (PostgreSQL through psycopg): DB-API connections from a lazily built SQLAlchemy engine's pool
  (`raw_connection()`: it parses the URL and pings idle connections), with the same SQL.

Queries are written once with `?` placeholders; `Database.sql` turns them into the driver's style.

Values are stored the way SQLAlchemy's types stored them, so files written before read back the same: on SQLite a
DateTime is text `YYYY-MM-DD HH:MM:SS.ffffff` (always six digits: text order is time order, and `claim_run`'s
equality on a heartbeat read back holds), JSON is `json.dumps` text (None as `null`), Boolean 0/1. Reading decodes
by the column's *declared* type (`PARSE_DECLTYPES` with converters for JSON, DATETIME and BOOLEAN), not by column
name: `run_metadata.value` is JSON while `kv.value` and `secrets.value` are TEXT. Those converters are registered
in `sqlite3` for the whole process and apply only to connections that ask for `PARSE_DECLTYPES`. PostgreSQL
returns datetimes, decoded JSON and booleans itself.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from conveyor.store.errors import translate

__all__ = ["Database", "Json", "Tx", "placeholders", "sqlite_path"]

#: idle SQLite connections kept for the next transaction (steps run in threads; more are opened when needed)
_MAX_IDLE = 16
#: SQLite waits this long for another process's write lock before "database is locked"
BUSY_TIMEOUT_S = 60


class Json:
    """A value for a JSON column: encoded on the way in (run metadata values may be bare scalars, None included)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _to_datetime(raw: bytes) -> datetime:
    return datetime.fromisoformat(raw.decode())


sqlite3.register_converter("JSON", json.loads)
sqlite3.register_converter("DATETIME", _to_datetime)
sqlite3.register_converter("BOOLEAN", lambda raw: raw not in (b"0", b""))


def _sqlite_value(value: Any) -> Any:
    kind = type(value)
    if kind is datetime:
        return value.isoformat(" ", "microseconds")[:26]  # what SQLAlchemy wrote; a time zone is dropped, as there
    if kind is Json:
        return json.dumps(value.value)
    return value


def placeholders(n: int) -> str:
    """`?, ?, ?` for an IN list of `n` values."""
    return ", ".join("?" * n)


def sqlite_path(url: str) -> str:
    """The file of a SQLAlchemy-style SQLite URL (`sqlite:///relative`, `sqlite:////absolute`); ":memory:" for
    `sqlite://` and `sqlite:///:memory:`."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        return ":memory:"
    return rest[1:]


class Tx:
    """One transaction's statements. Rows come back as dicts keyed by column name (or label)."""

    __slots__ = ("_adapt", "_cur", "_sql")

    def __init__(self, cursor: Any, db: Database) -> None:
        self._cur, self._sql, self._adapt = cursor, db.sql, db.adapt

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        cur = self._cur
        cur.execute(self._sql(sql), self._adapt(params))
        return cur.rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._cur.executemany(self._sql(sql), [self._adapt(r) for r in rows])

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self._cur
        cur.execute(self._sql(sql), self._adapt(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        """The first row, or None."""
        cur = self._cur
        cur.execute(self._sql(sql), self._adapt(params))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row))

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, or None."""
        cur = self._cur
        cur.execute(self._sql(sql), self._adapt(params))
        row = cur.fetchone()
        return None if row is None else row[0]

    def column(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The first column of every row."""
        cur = self._cur
        cur.execute(self._sql(sql), self._adapt(params))
        return [row[0] for row in cur.fetchall()]


class _Transaction:
    """`with db.write() as tx:` commits on success, rolls back on an exception, and raises database failures as
    the store's errors (`errors.translate`) unless asked not to."""

    __slots__ = ("_conn", "_db", "_queued", "_translate", "_write")

    def __init__(self, db: Database, write: bool, translate_errors: bool) -> None:
        self._db, self._write, self._translate, self._conn = db, write, translate_errors, None
        # SQLite writers of this process queue on a lock, handed over at once; only another process's writer
        # meets SQLite's busy handler, which sleeps in steps of up to 100 ms (a fan-out's threads all would)
        self._queued = db.writers if write and db.is_sqlite else None

    def __enter__(self) -> Tx:
        db = self._db
        if self._queued is not None:
            self._queued.acquire()
        try:
            self._conn = conn = db.acquire()
            cur = conn.cursor()
            if db.is_sqlite:
                cur.execute("BEGIN IMMEDIATE" if self._write else "BEGIN")
        except BaseException as err:
            if self._conn is not None:
                db.release(self._conn, broken=True)
                self._conn = None
            if self._queued is not None:
                self._queued.release()
            mapped = self._mapped(err)
            if mapped is err:
                raise
            raise mapped from err
        return Tx(cur, db)

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, _tb: object) -> None:
        try:
            self._end(kind, err)
        finally:
            if self._queued is not None:
                self._queued.release()

    def _end(self, kind: type[BaseException] | None, err: BaseException | None) -> None:
        db, conn = self._db, self._conn
        self._conn = None
        if kind is None:
            try:
                conn.execute("COMMIT") if db.is_sqlite else conn.commit()
            except BaseException as failed:
                db.release(conn, broken=not db.rollback(conn))
                mapped = self._mapped(failed)
                if mapped is failed:
                    raise
                raise mapped from failed
            db.release(conn)
            return
        db.release(conn, broken=not db.rollback(conn))
        if err is not None and isinstance(err, Exception):
            mapped = self._mapped(err)
            if mapped is not err:
                raise mapped from err
        return

    def _mapped(self, err: BaseException) -> BaseException:
        return translate(err, self._db.url) if self._translate and isinstance(err, Exception) else err


class Database:
    """The connections of one store URL: a small pool of `sqlite3` connections shared by threads, or the pool of a
    SQLAlchemy engine (imported only for such a URL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._idle: list[Any] = []
        self._engine: Any = None
        self._lock = threading.Lock()
        #: this process's SQLite writers, one at a time (re-entrant: a nested write waits in SQLite, as before)
        self.writers = threading.RLock()
        self._memory: threading.RLock | None = None
        self._sql_cache: dict[str, str] = {}
        _DATABASES.add(self)
        if self.is_sqlite:
            self.path = sqlite_path(url)
            if self.path == ":memory:":  # one database per connection: everyone shares one, in turn
                self._memory = threading.RLock()
            self.sql = _identity
            self.adapt = self._adapt_sqlite
        else:
            self.path = ""
            self.sql = self._driver_sql
            self.adapt = self._adapt_driver
            self._json: Any = None

    def missing_table_errors(self) -> tuple[type[BaseException], ...]:
        """The driver's errors for a table that does not exist (or a database that cannot be opened)."""
        dbapi = sqlite3 if self.is_sqlite else self.engine().dialect.dbapi
        return (dbapi.OperationalError, dbapi.ProgrammingError)

    def forget_connections(self) -> None:
        """In a child forked from this process: the parent's connections are not ours to use (or to close)."""
        self._idle = []
        self._engine = None
        self._lock = threading.Lock()
        self.writers = threading.RLock()  # a writer thread of the parent does not exist here

    # -- transactions -----------------------------------------------------------------------------------------
    def write(self, *, translate_errors: bool = True) -> _Transaction:
        """A transaction that may write; on SQLite it takes the write lock up front (BEGIN IMMEDIATE) so that
        concurrent processes queue on the busy timeout instead of failing with "database is locked"."""
        return _Transaction(self, True, translate_errors)

    def read(self, *, translate_errors: bool = True) -> _Transaction:
        """A transaction that only reads (WAL: it never blocks writers)."""
        return _Transaction(self, False, translate_errors)

    # -- connections ------------------------------------------------------------------------------------------
    def acquire(self) -> Any:
        if self._memory is not None:
            self._memory.acquire()
            with self._lock:
                if not self._idle:
                    self._idle.append(self._connect_sqlite())
                return self._idle[0]
        try:
            return self._idle.pop()  # atomic in CPython: no lock needed
        except IndexError:
            pass
        return self._connect_sqlite() if self.is_sqlite else self.engine().raw_connection()

    def release(self, conn: Any, *, broken: bool = False) -> None:
        if self._memory is not None:
            self._memory.release()
            return
        if not self.is_sqlite:
            if broken:
                try:
                    conn.invalidate()
                except Exception:  # noqa: BLE001, S110 - gone already
                    pass
            conn.close()  # back to the engine's pool
            return
        if broken or len(self._idle) >= _MAX_IDLE:
            conn.close()
        else:
            self._idle.append(conn)

    def rollback(self, conn: Any) -> bool:
        """Undo the open transaction; False when the connection is unusable."""
        try:
            if self.is_sqlite:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            else:
                conn.rollback()
            return True
        except Exception:  # noqa: BLE001 - the caller's error is the one to report
            return False

    def _connect_sqlite(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False,
                               detect_types=sqlite3.PARSE_DECLTYPES, cached_statements=256)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        except BaseException:
            conn.close()
            raise
        return conn

    def engine(self) -> Any:
        """The SQLAlchemy engine of a server database (built on first use)."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    import sqlalchemy as sa

                    self._engine = sa.create_engine(self.url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        return self._engine

    def dedicated_connection(self) -> Any:
        """A new autocommit DB-API connection to a server database, outside the pool: the caller alone uses it
        (a session-level advisory lock lives as long as it) and closes it."""
        engine = self.engine()
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        conn = engine.dialect.dbapi.connect(*cargs, **cparams)
        conn.autocommit = True
        return conn

    def dispose(self) -> None:
        """Close the idle connections (and the engine's pool); the store opens new ones if used again."""
        if self._memory is not None:
            return  # closing it would lose the database
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:
                break
        if self._engine is not None:
            self._engine.dispose()

    # -- parameters -------------------------------------------------------------------------------------------
    @staticmethod
    def _adapt_sqlite(params: Sequence[Any]) -> Sequence[Any]:
        return [_sqlite_value(v) for v in params]

    def _adapt_driver(self, params: Sequence[Any]) -> Sequence[Any]:
        if not any(type(v) is Json for v in params):
            return params
        if self._json is None:
            self._json = _driver_json(self.engine().dialect.dbapi)
        return [self._json(v.value) if type(v) is Json else v for v in params]

    def _driver_sql(self, sql: str) -> str:
        converted = self._sql_cache.get(sql)
        if converted is None:
            style = self.engine().dialect.dbapi.paramstyle
            converted = sql.replace("%", "%%").replace("?", "%s") if style in ("format", "pyformat") else sql
            self._sql_cache[sql] = converted
        return converted


#: every store's connections in this process, for `_after_fork`
_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork() -> None:
    for db in list(_DATABASES):
        if db._memory is None:
            db.forget_connections()


os.register_at_fork(after_in_child=_after_fork)


def _identity(sql: str) -> str:
    return sql


def _driver_json(dbapi: Any) -> Any:
    """The driver's wrapper that sends a value as JSON (psycopg's `Json`), else JSON text."""
    if dbapi.__name__.startswith("psycopg"):
        from psycopg.types.json import Json as PgJson

        return PgJson
    return json.dumps
