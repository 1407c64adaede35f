"""The metadata store: every write is one short transaction; reads never block writers (WAL).

Plain SQL over DB-API (store/sql.py): `sqlite3` for the embedded SQLite store, psycopg for PostgreSQL. Alembic
(store/migrate.py) runs only when the database's schema revision is not the code's.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from conveyor.config.names import check_name
from conveyor.exceptions import StackError
from conveyor.store.errors import IntegrityError, translate
from conveyor.store.head import SCHEMA_HEAD
from conveyor.store.sql import Database, Json, Tx, placeholders
from conveyor.store.tables import COLUMNS, JSON_COLUMNS, cols

__all__ = ["ArtifactVersionTakenError", "AttemptUpdate", "MetadataStore", "StoreError", "new_id", "now"]

#: how often recording a step's named artifacts is tried when concurrent runs take the same version number
_VERSION_RETRIES = 8
#: SELECT lists, spelled out once
_RUN_COLS = cols("runs")
_STEP_COLS = cols("step_runs")
_ARTIFACT_COLS = cols("artifacts")
_COMPONENT_COLS = cols("components")
_ATTEMPT_COLS = cols("step_attempts")
#: the statements of `_insert` and `_update`, by table and columns: built once each
_INSERTS: dict[tuple[str, tuple[str, ...]], str] = {}
_UPDATES: dict[tuple[str, tuple[str, ...], str], str] = {}
#: (attempt id, the attempt's fields): an attempt's row written in the step run's transaction
AttemptUpdate = tuple[str, dict[str, Any]]


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex


class StoreError(StackError):
    """A store operation that cannot be done, with what to do instead."""


class ArtifactVersionTakenError(StoreError):
    """`save_artifact(..., version=V)` for a version of that name that already exists."""


def _values(table: str, names: Sequence[str], row: dict[str, Any]) -> list[Any]:
    """`row`'s values in the order of `names`, JSON columns wrapped for encoding."""
    json_cols = JSON_COLUMNS.get(table, ())
    return [Json(row[n]) if n in json_cols else row[n] for n in names]


def _check_columns(table: str, names: Sequence[str]) -> None:
    """Refuse a column `table` does not have, before it reaches SQL (names go into the statement's text)."""
    unknown = set(names) - set(COLUMNS[table])
    if unknown:
        raise ValueError(f"{table} has no column(s) {', '.join(sorted(unknown))}")


def _insert(c: Tx, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows (all with the keys of the first) into `table`."""
    if not rows:
        return
    names = tuple(rows[0])
    if len(rows) > 1 and any(r.keys() != rows[0].keys() for r in rows):
        for row in rows:  # rows with different columns: one statement each
            _insert(c, table, [row])
        return
    sql = _INSERTS.get((table, names))
    if sql is None:
        _check_columns(table, names)
        sql = _INSERTS[(table, names)] = (f"INSERT INTO {table} ({', '.join(names)}) "
                                          f"VALUES ({placeholders(len(names))})")
    if len(rows) == 1:
        c.execute(sql, _values(table, names, rows[0]))
    else:
        c.executemany(sql, [_values(table, names, r) for r in rows])


def _update(c: Tx, table: str, fields: dict[str, Any], where: str, params: Sequence[Any] = ()) -> int:
    """`UPDATE table SET fields WHERE where`; the number of rows changed."""
    names = tuple(fields)
    sql = _UPDATES.get((table, names, where))
    if sql is None:
        _check_columns(table, names)
        sql = _UPDATES[(table, names, where)] = (f"UPDATE {table} SET {', '.join(f'{n} = ?' for n in names)} "
                                                 f"WHERE {where}")
    return c.execute(sql, [*_values(table, names, fields), *params])


class MetadataStore:
    """Records flavors, components, stacks, pipelines, snapshots, runs, step runs and artifacts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = Database(url)
        self.is_sqlite = self.db.is_sqlite
        self._schema_checked = False
        self._lock = threading.Lock()

    # -- schema -----------------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Upgrade to the newest schema; the common case (already current) costs one SELECT."""
        if self._schema_checked:
            return
        with self._lock:
            if self._schema_checked:
                return
            try:
                if self._current_revision() != SCHEMA_HEAD:
                    from conveyor.store.migrate import upgrade

                    upgrade(self.db)
            except Exception as err:  # a damaged file or an unreachable server: the same words as the CLI's
                mapped = translate(err, self.url)
                if mapped is err:
                    raise
                raise mapped from err
            self._schema_checked = True

    def _current_revision(self) -> str | None:
        """The database's Alembic revision; None for a new database (no alembic_version table)."""
        try:
            with self.db.read(translate_errors=False) as c:
                return c.scalar("SELECT version_num FROM alembic_version")
        except Exception as err:
            if isinstance(err, self.db.missing_table_errors()):
                return None  # a new database; or one that cannot be opened, which migrating then reports
            raise

    def dispose(self) -> None:
        """Close the store's connections (it reconnects if used again)."""
        self.db.dispose()

    def write(self) -> Any:
        """A write transaction (`with store.write() as tx:`; tx.execute/all/one/scalar/column with `?` params)."""
        self.ensure_schema()
        return self.db.write()

    def read(self) -> Any:
        """A read transaction; see `write`."""
        self.ensure_schema()
        return self.db.read()

    # -- key/value --------------------------------------------------------------------------------
    def get_kv(self, key: str) -> str | None:
        with self.read() as c:
            return c.scalar("SELECT value FROM kv WHERE key = ?", (key,))

    def set_kv(self, key: str, value: str) -> None:
        with self.write() as c:
            if c.execute("UPDATE kv SET value = ? WHERE key = ?", (value, key)) == 0:
                c.execute("INSERT INTO kv (key, value) VALUES (?, ?)", (key, value))

    # -- flavors ----------------------------------------------------------------------------------
    def register_flavor(self, type_: str, name: str, source: str) -> None:
        with self.write() as c:
            row = c.scalar("SELECT id FROM flavors WHERE type = ? AND name = ?", (type_, name))
            if row:
                c.execute("UPDATE flavors SET source = ? WHERE id = ?", (source, row))
            else:
                _insert(c, "flavors", [{"id": new_id(), "type": type_, "name": name, "source": source,
                                        "created": now()}])

    def custom_flavors(self, type_: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE type = ? ", (type_,)) if type_ else ("", ())
        with self.read() as c:
            return c.all(f"SELECT {cols('flavors')} FROM flavors {where}ORDER BY name", params)

    # -- components -------------------------------------------------------------------------------
    def create_component(self, type_: str, name: str, flavor: str, config: dict[str, Any]) -> str:
        check_name(type_.replace("_", " "), name)
        with self.write() as c:
            exists = c.scalar("SELECT id FROM components WHERE type = ? AND name = ?", (type_, name))
            if exists:
                raise StoreError(f"a {type_.replace('_', '-')} named {name!r} already exists: pick another name, or change it with "
                                 f"`conveyor {type_.replace('_', '-')} update {name} --field=value`")
            cid = new_id()
            _insert(c, "components", [{"id": cid, "type": type_, "name": name, "flavor": flavor, "config": config,
                                       "created": now(), "updated": now()}])
            return cid

    def get_component(self, type_: str, name: str) -> dict[str, Any] | None:
        with self.read() as c:
            return c.one(f"SELECT {_COMPONENT_COLS} FROM components WHERE type = ? AND name = ?", (type_, name))

    def get_component_by_id(self, cid: str) -> dict[str, Any] | None:
        with self.read() as c:
            return c.one(f"SELECT {_COMPONENT_COLS} FROM components WHERE id = ?", (cid,))

    def list_components(self, type_: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE type = ? ", (type_,)) if type_ else ("", ())
        with self.read() as c:
            return c.all(f"SELECT {_COMPONENT_COLS} FROM components {where}ORDER BY type, name", params)

    def update_component(self, type_: str, name: str, config: dict[str, Any]) -> None:
        with self.write() as c:
            n = _update(c, "components", {"config": config, "updated": now()}, "type = ? AND name = ?", (type_, name))
            if not n:
                raise StoreError(f"no {type_.replace('_', '-')} named {name!r}")

    def delete_component(self, type_: str, name: str) -> None:
        with self.write() as c:
            cid = c.scalar("SELECT id FROM components WHERE type = ? AND name = ?", (type_, name))
            if not cid:
                raise StoreError(f"no {type_.replace('_', '-')} named {name!r}")
            used = c.column("SELECT stacks.name FROM stacks JOIN stack_components ON stack_components.stack_id = stacks.id "
                            "WHERE stack_components.component_id = ?", (cid,))
            if used:
                raise StoreError(f"{type_.replace('_', '-')} {name!r} is used by stack(s) {', '.join(sorted(used))}: "
                                 f"remove it from them or delete them first (`conveyor stack delete NAME`)")
            c.execute("DELETE FROM components WHERE id = ?", (cid,))

    # -- component rename and copy (`conveyor <type> rename|copy`, conveyor.stack.lifecycle) ------------
    def rename_component(self, type_: str, old: str, new: str) -> str:
        """Give component `old` the name `new` and return its id; stacks keep it, as they hold its id.

        A step operator that steps of an unfinished run use keeps its name: `conveyor run stop` and `run resume`
        find a step's operator by the name recorded on the step run."""
        cli = type_.replace("_", "-")
        check_name(type_.replace("_", " "), new)
        with self.write() as c:
            cid = c.scalar("SELECT id FROM components WHERE type = ? AND name = ?", (type_, old))
            if not cid:
                raise StoreError(f"no {cli} named {old!r}: see `conveyor {cli} list`")
            if old == new:
                return cid
            if c.scalar("SELECT id FROM components WHERE type = ? AND name = ?", (type_, new)):
                raise StoreError(f"a {cli} named {new!r} already exists: pick another name, or delete that one first "
                                 f"(`conveyor {cli} delete {new}`)")
            if type_ == "step_operator":
                busy = c.column("SELECT DISTINCT runs.name FROM runs JOIN step_runs ON step_runs.run_id = runs.id "
                                "WHERE step_runs.operator = ? AND step_runs.status IN ('pending', 'running') "
                                "AND runs.status = 'running' ORDER BY runs.name", (old,))
                if busy:
                    raise StoreError(f"{cli} {old!r} runs steps of unfinished run(s) {', '.join(busy)}: let them finish, "
                                     f"or stop them (`conveyor run stop {busy[0]}`), then rename it")
            _update(c, "components", {"name": new, "updated": now()}, "id = ?", (cid,))
            return cid

    def copy_component(self, type_: str, source: str, target: str) -> str:
        """A new component `target` with the flavor and config of `source`, in no stack; returns its id."""
        import copy

        cli = type_.replace("_", "-")
        check_name(type_.replace("_", " "), target)
        with self.write() as c:
            row = c.one(f"SELECT {_COMPONENT_COLS} FROM components WHERE type = ? AND name = ?", (type_, source))
            if row is None:
                raise StoreError(f"no {cli} named {source!r}: see `conveyor {cli} list`")
            if c.scalar("SELECT id FROM components WHERE type = ? AND name = ?", (type_, target)):
                raise StoreError(f"a {cli} named {target!r} already exists: pick another name for the copy")
            cid, ts = new_id(), now()
            _insert(c, "components", [{"id": cid, "type": type_, "name": target, "flavor": row["flavor"],
                                       "config": copy.deepcopy(row["config"]), "created": ts, "updated": ts}])
            return cid

    # -- stacks -----------------------------------------------------------------------------------
    def create_stack(self, name: str, component_ids: Sequence[str]) -> str:
        check_name("stack", name)
        with self.write() as c:
            if c.scalar("SELECT id FROM stacks WHERE name = ?", (name,)):
                raise StoreError(f"a stack named {name!r} already exists: pick another name or `conveyor stack update {name} ...`")
            sid = new_id()
            _insert(c, "stacks", [{"id": sid, "name": name, "created": now(), "updated": now()}])
            self._set_stack_components(c, sid, component_ids)
            return sid

    def _set_stack_components(self, c: Tx, sid: str, component_ids: Sequence[str]) -> None:
        c.execute("DELETE FROM stack_components WHERE stack_id = ?", (sid,))
        _insert(c, "stack_components", [{"stack_id": sid, "component_id": cid, "position": i}
                                        for i, cid in enumerate(component_ids)])

    def set_stack_components(self, name: str, component_ids: Sequence[str]) -> None:
        with self.write() as c:
            sid = c.scalar("SELECT id FROM stacks WHERE name = ?", (name,))
            if not sid:
                raise StoreError(f"no stack named {name!r}")
            self._set_stack_components(c, sid, component_ids)
            _update(c, "stacks", {"updated": now()}, "id = ?", (sid,))

    def get_stack(self, name: str) -> dict[str, Any] | None:
        with self.read() as c:
            row = c.one(f"SELECT {cols('stacks')} FROM stacks WHERE name = ?", (name,))
            if not row:
                return None
            comps = c.all(f"SELECT {_COMPONENT_COLS} FROM components JOIN stack_components "
                          "ON stack_components.component_id = components.id WHERE stack_components.stack_id = ? "
                          "ORDER BY stack_components.position", (row["id"],))
            return {**row, "components": comps}

    def list_stacks(self) -> list[str]:
        with self.read() as c:
            return c.column("SELECT name FROM stacks ORDER BY name")

    def delete_stack(self, name: str) -> None:
        with self.write() as c:
            if not c.execute("DELETE FROM stacks WHERE name = ?", (name,)):
                raise StoreError(f"no stack named {name!r}")

    # -- secrets (values arrive encrypted; see conveyor.secrets.vault) -----------------------------
    def put_secret(self, name: str, keys: list[str], token: str, *, replace: bool) -> None:
        if not replace:  # an existing secret keeps its name, whatever rules were in force when it was made
            check_name("secret", name, allow_dot=False)
        ts = now()
        with self.write() as c:
            exists = c.scalar("SELECT id FROM secrets WHERE name = ?", (name,))
            if exists and not replace:
                raise StoreError(f"secret {name!r} already exists: change it with `conveyor secret update {name}`")
            if not exists and replace:
                raise StoreError(f"no secret named {name!r}: create it with `conveyor secret create {name}`")
            if exists:
                _update(c, "secrets", {"keys": keys, "value": token, "updated": ts}, "id = ?", (exists,))
            else:
                _insert(c, "secrets", [{"id": new_id(), "name": name, "keys": keys, "value": token, "created": ts,
                                        "updated": ts}])

    def get_secret(self, name: str) -> dict[str, Any] | None:
        with self.read() as c:
            return c.one(f"SELECT {cols('secrets')} FROM secrets WHERE name = ?", (name,))

    def list_secrets(self) -> list[dict[str, Any]]:
        with self.read() as c:
            return c.all("SELECT name, keys, created, updated FROM secrets ORDER BY name")

    def delete_secret(self, name: str) -> None:
        with self.write() as c:
            if not c.execute("DELETE FROM secrets WHERE name = ?", (name,)):
                raise StoreError(f"no secret named {name!r}: see `conveyor secret list`")

    # -- pipelines and snapshots ------------------------------------------------------------------
    def get_or_create_snapshot(self, pipeline_name: str, spec_hash: str, spec: dict[str, Any]) -> tuple[str, str]:
        """Processes starting the same pipeline at once may race to create it; on PostgreSQL (read committed) the
        loser's insert fails on the unique name, and its second try finds the winner's row."""
        for attempt in range(3):
            try:
                return self._get_or_create_snapshot(pipeline_name, spec_hash, spec)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _get_or_create_snapshot(self, pipeline_name: str, spec_hash: str, spec: dict[str, Any]) -> tuple[str, str]:
        with self.write() as c:
            pid = c.scalar("SELECT id FROM pipelines WHERE name = ?", (pipeline_name,))
            if not pid:
                pid = new_id()
                _insert(c, "pipelines", [{"id": pid, "name": pipeline_name, "created": now()}])
            sid = c.scalar("SELECT id FROM snapshots WHERE pipeline_id = ? AND spec_hash = ?", (pid, spec_hash))
            if not sid:
                sid = new_id()
                _insert(c, "snapshots", [{"id": sid, "pipeline_id": pid, "spec_hash": spec_hash, "spec": spec,
                                          "created": now()}])
            return pid, sid

    def get_snapshot(self, snapshot_id: str) -> dict[str, Any]:
        with self.read() as c:
            row = c.one(f"SELECT {cols('snapshots')} FROM snapshots WHERE id = ?", (snapshot_id,))
        if row is None:
            raise StoreError(f"no snapshot with id {snapshot_id!r}")
        return row

    # -- runs -------------------------------------------------------------------------------------
    def create_run(self, *, name: str, pipeline_id: str, snapshot_id: str, stack_name: str, host: str, pid: int,
                   steps: Iterable[tuple[str, dict[str, Any], str | None, str | None]], pid_start: str | None = None,
                   run_id: str | None = None) -> tuple[str, dict[str, str]]:
        """One transaction creates the run and all its step runs as pending (`run_id` chosen ahead lets the
        caller take the run's lease before the run exists)."""
        run_id, ts = run_id or new_id(), now()
        step_ids: dict[str, str] = {}
        rows = []
        for position, (step_name, config, operator, flavor) in enumerate(steps):
            step_ids[step_name] = sid = new_id()
            rows.append({"id": sid, "run_id": run_id, "name": step_name, "position": position, "status": "pending",
                         "attempt": 0, "config": config, "operator": operator, "operator_flavor": flavor})
        with self.write() as c:
            _insert(c, "runs", [{"id": run_id, "name": name, "pipeline_id": pipeline_id, "snapshot_id": snapshot_id,
                                 "stack_name": stack_name, "status": "running", "start_time": ts, "host": host,
                                 "pid": pid, "pid_start": pid_start, "heartbeat": ts, "stop_requested": False,
                                 "created": ts}])
            _insert(c, "step_runs", rows)
        return run_id, step_ids

    def update_run(self, run_id: str, **fields: Any) -> None:
        if not fields:
            return
        with self.write() as c:
            _update(c, "runs", fields, "id = ?", (run_id,))

    def claim_run(self, run_id: str, *, previous: tuple[Any, Any], host: str, pid: int, pid_start: str | None = None) -> bool:
        """Make this process the run's orchestrator, unless another one claimed it since `previous` was read.

        The caller holds the run's lease (execution/lease.py) already: that is what keeps a live owner's run from
        being taken; this conditional update only settles two resumes of the same dead run."""
        old_pid, old_beat = previous
        ts = now()
        where = ["id = ?", "pid IS NULL" if old_pid is None else "pid = ?",
                 "heartbeat IS NULL" if old_beat is None else "heartbeat = ?"]
        params = [run_id] + [v for v in (old_pid, old_beat) if v is not None]
        with self.write() as c:
            return bool(_update(c, "runs", {"status": "running", "host": host, "pid": pid, "pid_start": pid_start,
                                            "heartbeat": ts, "stop_requested": False, "end_time": None,
                                            "error": None}, " AND ".join(where), params))

    def update_step_run(self, step_run_id: str, /, *, with_attempt: AttemptUpdate | None = None,
                        **fields: Any) -> None:
        """`with_attempt` = (attempt id, its fields): the attempt's row changes in the same transaction."""
        if not fields and not with_attempt:
            return
        with self.write() as c:
            if fields:
                _update(c, "step_runs", fields, "id = ?", (step_run_id,))
            if with_attempt and with_attempt[1]:
                _update(c, "step_attempts", with_attempt[1], "id = ?", (with_attempt[0],))

    # -- attempts (one row per try of a step run; conveyor.execution.attempt_record) -------------------
    def start_attempt(self, step_run_id: str, attempt_row: dict[str, Any], /, **step_fields: Any) -> None:
        """Add the step run's attempt `attempt_row` (with its "id" and "number") and update the step run, in one
        transaction: starting an attempt costs the step no more writes than before. Earlier attempts still open
        (their orchestrator died with them, and the run was resumed) are closed as failed."""
        with self.write() as c:
            if step_fields:
                _update(c, "step_runs", step_fields, "id = ?", (step_run_id,))
            if attempt_row["number"] > 1:
                c.execute("UPDATE step_attempts SET status = ?, failure_kind = ?, error = ? WHERE step_run_id = ? "
                          "AND number < ? AND status IN ('pending', 'running')",
                          ("failed", "infrastructure", "the orchestrator ended during this attempt", step_run_id,
                           attempt_row["number"]))
            _insert(c, "step_attempts", [{**attempt_row, "step_run_id": step_run_id}])

    def update_attempt(self, attempt_id: str, **fields: Any) -> None:
        if fields:
            with self.write() as c:
                _update(c, "step_attempts", fields, "id = ?", (attempt_id,))

    def find_attempt(self, step_run_id: str, number: int) -> dict[str, Any] | None:
        """One attempt (a resumed run re-attaching to its job continues that attempt's row)."""
        with self.read() as c:
            return c.one(f"SELECT {_ATTEMPT_COLS} FROM step_attempts WHERE step_run_id = ? AND number = ?",
                         (step_run_id, number))

    def step_attempts(self, step_run_ids: Sequence[str] = (), *,
                      run_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """step run id -> its attempts, oldest first: of the step runs named, or of every step of `run_id` (one
        query however many steps the run has)."""
        if run_id is not None:
            q = (f"SELECT {_ATTEMPT_COLS} FROM step_attempts JOIN step_runs ON step_runs.id = step_attempts.step_run_id "
                 "WHERE step_runs.run_id = ? ORDER BY step_attempts.step_run_id, step_attempts.number")
            params: list[Any] = [run_id]
        elif step_run_ids:
            params = list(step_run_ids)
            q = (f"SELECT {_ATTEMPT_COLS} FROM step_attempts WHERE step_attempts.step_run_id IN "
                 f"({placeholders(len(params))}) ORDER BY step_attempts.step_run_id, step_attempts.number")
        else:
            return {}
        found: dict[str, list[dict[str, Any]]] = {}
        with self.read() as c:
            for row in c.all(q, params):
                found.setdefault(row["step_run_id"], []).append(row)
        return found

    def stop_requested(self, run_id: str) -> bool:
        with self.read() as c:
            return bool(c.scalar("SELECT stop_requested FROM runs WHERE id = ?", (run_id,)))

    def find_run(self, name_or_id: str) -> dict[str, Any] | None:
        q = (f"SELECT {_RUN_COLS}, pipelines.name AS pipeline_name FROM runs "
             "JOIN pipelines ON pipelines.id = runs.pipeline_id ")
        with self.read() as c:
            if name_or_id == "latest":
                row = c.one(q + "ORDER BY runs.created DESC LIMIT 1")
            else:
                row = c.one(q + "WHERE runs.id = ? OR runs.name = ?", (name_or_id, name_or_id))
            if row is None and len(name_or_id) >= 4:
                rows = c.all(q + "WHERE runs.id LIKE ?", (name_or_id + "%",))
                row = rows[0] if len(rows) == 1 else None
            return row

    def list_runs(self, pipeline: str | None = None, status: str | None = None, limit: int | None = None, *,
                  stack: str | None = None, operator: str | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Runs newest first; `operator`: runs with a step on that step operator; `offset` pages (the dashboard)."""
        where, params = [], []
        if pipeline:
            where.append("pipelines.name = ?")
            params.append(pipeline)
        if status:
            where.append("runs.status = ?")
            params.append(status)
        if stack:
            where.append("runs.stack_name = ?")
            params.append(stack)
        if operator:
            where.append("EXISTS (SELECT 1 FROM step_runs WHERE step_runs.run_id = runs.id AND step_runs.operator = ?)")
            params.append(operator)
        q = (f"SELECT {_RUN_COLS}, pipelines.name AS pipeline_name FROM runs "
             "JOIN pipelines ON pipelines.id = runs.pipeline_id "
             + (f"WHERE {' AND '.join(where)} " if where else "") + "ORDER BY runs.created DESC")
        if limit:
            q += " LIMIT ?"
            params.append(int(limit))
            if offset:
                q += " OFFSET ?"
                params.append(int(offset))
        with self.read() as c:
            return c.all(q, params)

    def step_runs(self, run_id: str) -> list[dict[str, Any]]:
        with self.read() as c:
            return c.all(f"SELECT {_STEP_COLS} FROM step_runs WHERE run_id = ? ORDER BY position", (run_id,))

    def step_run_artifacts(self, step_run_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not step_run_ids:
            return []
        ids = list(step_run_ids)
        q = ("SELECT step_run_artifacts.step_run_id, step_run_artifacts.direction, step_run_artifacts.name, "
             f"{cols('artifacts', skip=('name',))}, artifacts.name AS artifact_name FROM step_run_artifacts "
             "JOIN artifacts ON artifacts.id = step_run_artifacts.artifact_id "
             f"WHERE step_run_artifacts.step_run_id IN ({placeholders(len(ids))})")
        with self.read() as c:
            return c.all(q, ids)

    def find_cached(self, cache_key: str) -> dict[str, Any] | None:
        """Newest completed step run with this cache key, with its outputs."""
        with self.read() as c:
            sid = c.scalar("SELECT id FROM step_runs WHERE cache_key = ? AND status = 'completed' "
                           "ORDER BY end_time DESC LIMIT 1", (cache_key,))
            if sid is None:
                return None
            # the link's name is "name"; the artifact's own, "name_1" (as SQLAlchemy labelled the clash)
            outs = c.all(f"SELECT step_run_artifacts.name, {cols('artifacts', rename={'name': 'name_1'})} "
                         "FROM step_run_artifacts JOIN artifacts ON artifacts.id = step_run_artifacts.artifact_id "
                         "WHERE step_run_artifacts.step_run_id = ? AND step_run_artifacts.direction = 'output'",
                         (sid,))
            return {"step_run_id": sid, "outputs": {r["name"]: r for r in outs}}

    def clear_cache(self, *, pipeline: str | None = None, step: str | None = None, dry_run: bool = False) -> int:
        """Make completed step runs (all, or of one pipeline and/or step name) never serve as a cache hit again.

        Only their recorded cache key goes: statuses, artifacts and links stay, so runs still load their outputs.
        Returns how many step runs were (with `dry_run`, would be) cleared.
        """
        cond, params = ["cache_key IS NOT NULL", "status = 'completed'"], []
        if step is not None:
            cond.append("name = ?")
            params.append(step)
        if pipeline is not None:
            with self.read() as c:
                pid = c.scalar("SELECT id FROM pipelines WHERE name = ?", (pipeline,))
            if pid is None:
                raise StoreError(f"no pipeline named {pipeline!r}: see the pipeline names in `conveyor run list`")
            cond.append("run_id IN (SELECT runs.id FROM runs WHERE runs.pipeline_id = ?)")
            params.append(pid)
        where = " AND ".join(cond)
        if dry_run:
            with self.read() as c:
                return int(c.scalar(f"SELECT count(*) FROM step_runs WHERE {where}", params) or 0)
        with self.write() as c:
            return int(c.execute(f"UPDATE step_runs SET cache_key = NULL WHERE {where}", params) or 0)

    def finish_step(self, step_run_id: str, *, status: str, inputs: dict[str, str], outputs: dict[str, dict[str, Any]],
                    new_artifacts: Sequence[dict[str, Any]] = (), metadata: Sequence[dict[str, Any]] = (),
                    with_attempt: AttemptUpdate | None = None, **fields: Any) -> None:
        """Artifacts (named ones get their version here), links, metadata, the final status and the last attempt's
        outcome (`with_attempt`) land together or not at all; two runs numbering the same name at once: the
        loser's insert fails and it counts again."""
        for attempt in range(_VERSION_RETRIES):
            try:
                return self._finish_step(step_run_id, status=status, inputs=inputs, outputs=outputs,
                                         new_artifacts=new_artifacts, metadata=metadata, with_attempt=with_attempt,
                                         **fields)
            except IntegrityError:
                if attempt == _VERSION_RETRIES - 1 or not any(a.get("name") for a in new_artifacts):
                    raise

    def _finish_step(self, step_run_id: str, *, status: str, inputs: dict[str, str],
                     outputs: dict[str, dict[str, Any]], new_artifacts: Sequence[dict[str, Any]],
                     metadata: Sequence[dict[str, Any]], with_attempt: AttemptUpdate | None = None,
                     **fields: Any) -> None:
        with self.write() as c:
            if new_artifacts:
                numbered = self._number_versions(c, new_artifacts)
                _insert(c, "artifacts", [{**a, "created": now(), "producer_step_run_id": step_run_id} for a in numbered])
            # a resumed run finishes a step again: its links from the failed attempt give way
            c.execute("DELETE FROM step_run_artifacts WHERE step_run_id = ?", (step_run_id,))
            links = [{"step_run_id": step_run_id, "direction": "input", "name": n, "artifact_id": a} for n, a in inputs.items()]
            links += [{"step_run_id": step_run_id, "direction": "output", "name": n, "artifact_id": a["id"]} for n, a in outputs.items()]
            _insert(c, "step_run_artifacts", links)
            _update(c, "step_runs", {"status": status, **fields}, "id = ?", (step_run_id,))
            if with_attempt and with_attempt[1]:
                _update(c, "step_attempts", with_attempt[1], "id = ?", (with_attempt[0],))
            self._put_metadata(c, metadata)
        for row, done in zip(new_artifacts, numbered if new_artifacts else ()):  # committed: the caller learns them
            row.update(version=done["version"], version_number=done["version_number"])  # type: ignore[attr-defined]

    # -- artifacts by name and version; run metadata (conveyor.artifacts.registry, conveyor.metadata) ----------
    def _number_versions(self, c: Tx, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of `rows` with each named artifact's version: the one asked for ("version", refused when taken)
        or the name's highest number plus one."""
        numbered, taken_here = [], {}
        for row in rows:
            row = {"name": None, "version": None, "version_number": None, **row}
            name = row.get("name")
            if name:
                asked = row.get("version")
                if asked is None:
                    if name not in taken_here:
                        taken_here[name] = c.scalar("SELECT max(version_number) FROM artifacts WHERE name = ?",
                                                    (name,)) or 0
                    taken_here[name] += 1
                    row["version"], row["version_number"] = str(taken_here[name]), taken_here[name]
                else:
                    asked = str(asked)
                    exists = c.scalar("SELECT id FROM artifacts WHERE name = ? AND version = ?", (name, asked))
                    if exists:
                        raise ArtifactVersionTakenError(
                            f"artifact {name!r} already has a version {asked!r}: save it without version= to get the "
                            f"next number, or pick another version (see `conveyor artifact list {name}`)")
                    row["version"], row["version_number"] = asked, int(asked) if asked.isdigit() else None
                    if asked.isdigit() and name in taken_here:
                        taken_here[name] = max(taken_here[name], int(asked))
            numbered.append(row)
        return numbered

    def register_artifact(self, row: dict[str, Any], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record an artifact saved outside any step (`save_artifact`); returns the row with its version."""
        for attempt in range(_VERSION_RETRIES):
            try:
                with self.write() as c:
                    [numbered] = self._number_versions(c, [row])
                    _insert(c, "artifacts", [{**numbered, "created": now()}])
                    if metadata:
                        self._put_metadata(c, [{"artifact_id": numbered["id"], "values": metadata}])
                return numbered
            except IntegrityError:
                if attempt == _VERSION_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _put_metadata(self, c: Tx, entries: Sequence[dict[str, Any]]) -> None:
        """Each entry names one target (run_id, step_run_id or artifact_id) and its "values"; a key logged again
        replaces the earlier value."""
        ts = now()
        for entry in entries:
            target = {k: entry[k] for k in ("run_id", "step_run_id", "artifact_id") if entry.get(k)}
            values = entry.get("values") or {}
            if len(target) != 1 or not values:
                continue
            (column, ident), = target.items()
            keys = list(values)
            c.execute(f"DELETE FROM run_metadata WHERE {column} = ? AND key IN ({placeholders(len(keys))})",
                      [ident, *keys])
            _insert(c, "run_metadata", [{"id": new_id(), column: ident, "key": k, "value": v, "created": ts}
                                        for k, v in values.items()])

    def put_metadata(self, entries: Sequence[dict[str, Any]]) -> None:
        with self.write() as c:
            self._put_metadata(c, entries)

    def metadata_of(self, column: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> {key: value} for the targets `ids` of kind `column` ("run_id", "step_run_id", "artifact_id")."""
        if not ids:
            return {}
        if column not in ("run_id", "step_run_id", "artifact_id"):
            raise ValueError(f"metadata targets are run_id, step_run_id or artifact_id, not {column!r}")
        ids = list(ids)
        found: dict[str, dict[str, Any]] = {}
        with self.read() as c:
            rows = c.all(f"SELECT {column}, key, value FROM run_metadata WHERE {column} IN ({placeholders(len(ids))}) "
                         "ORDER BY created, key", ids)
        for row in rows:
            found.setdefault(row[column], {})[row["key"]] = row["value"]
        return found

    #: artifacts with their producer's step and run names
    _ARTIFACT_QUERY = (f"SELECT {_ARTIFACT_COLS}, step_runs.name AS producer_step_name, "
                       "step_runs.run_id AS producer_run_id, runs.name AS producer_run_name, runs.stack_name AS stack_name "
                       "FROM artifacts LEFT OUTER JOIN step_runs ON step_runs.id = artifacts.producer_step_run_id "
                       "LEFT OUTER JOIN runs ON runs.id = step_runs.run_id ")

    def find_artifact_version(self, name_or_id: str, version: str | int | None = None) -> dict[str, Any] | None:
        """By name and version, by name alone (the newest version), or by id."""
        q = self._ARTIFACT_QUERY
        with self.read() as c:
            if version is not None:
                return c.one(q + "WHERE artifacts.name = ? AND artifacts.version = ?", (name_or_id, str(version)))
            row = c.one(q + "WHERE artifacts.id = ?", (name_or_id,))
            if row is None:
                row = c.one(q + "WHERE artifacts.name = ? ORDER BY artifacts.created DESC, "
                            "artifacts.version_number DESC LIMIT 1", (name_or_id,))
            return row

    def list_artifact_versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Named artifacts (of one name, or all), by name then oldest version first."""
        where, params = ("WHERE artifacts.name IS NOT NULL ", ()) if name is None else ("WHERE artifacts.name = ? ", (name,))
        with self.read() as c:
            return c.all(self._ARTIFACT_QUERY + where + "ORDER BY artifacts.name, artifacts.created, "
                         "artifacts.version_number", params)

    def find_step_run(self, step_run_id: str) -> dict[str, Any] | None:
        with self.read() as c:
            return c.one(f"SELECT {_STEP_COLS} FROM step_runs WHERE id = ?", (step_run_id,))

    # -- pipelines and run deletion (`conveyor pipeline list`, `conveyor run delete`, conveyor.execution.run_deletion)
    def run_name_taken(self, name: str) -> bool:
        with self.read() as c:
            return c.scalar("SELECT id FROM runs WHERE name = ?", (name,)) is not None

    def pipeline_summaries(self, name: str | None = None) -> list[dict[str, Any]]:
        """Each pipeline (or the one named) with its run count and its newest run's row (None when it has none)."""
        where, params = ("WHERE name = ? ", (name,)) if name is not None else ("", ())
        with self.read() as c:
            pipelines = c.all(f"SELECT {cols('pipelines')} FROM pipelines {where}ORDER BY name", params)
            n = {r["pipeline_id"]: r["n"] for r in c.all("SELECT pipeline_id, count(*) AS n FROM runs GROUP BY pipeline_id")}
            for p in pipelines:
                p["run_count"] = n.get(p["id"], 0)
                last = c.one(f"SELECT {_RUN_COLS} FROM runs WHERE pipeline_id = ? ORDER BY created DESC LIMIT 1",
                             (p["id"],))
                p["last_run"] = {**last, "pipeline_name": p["name"]} if last else None
        return pipelines

    def delete_run(self, run_id: str, *, artifacts: bool) -> dict[str, Any]:
        """Delete a run's records in one transaction; with `artifacts`, also the records of the artifacts its steps
        produced that no step of another run uses (a later run's cache hit links the same artifact: it stays, as do
        the outputs a cache hit of this run took from another run).

        Returns {"logs": [uri...], "deleted": [artifact row...], "kept": [(artifact row, [run names])...]} for the
        caller to remove the files of what was deleted."""
        with self.write() as c:
            step_ids = c.column("SELECT id FROM step_runs WHERE run_id = ?", (run_id,))
            logs = [u for u in c.column("SELECT logs_uri FROM step_runs WHERE run_id = ?", (run_id,)) if u]
            deleted: list[dict[str, Any]] = []
            kept: list[tuple[dict[str, Any], list[str]]] = []
            marks = placeholders(len(step_ids))
            if artifacts and step_ids:
                # what its steps produced, and outputs whose producing run was deleted before (no producer left);
                # a cache hit's outputs belong to the run that produced them
                produced = c.all(
                    f"SELECT {_ARTIFACT_COLS} FROM artifacts WHERE artifacts.id IN ("
                    "SELECT artifacts.id FROM artifacts JOIN step_run_artifacts ON step_run_artifacts.artifact_id = artifacts.id "
                    f"WHERE step_run_artifacts.step_run_id IN ({marks}) AND step_run_artifacts.direction = 'output' "
                    "AND artifacts.producer_step_run_id IS NULL "
                    f"UNION SELECT artifacts.id FROM artifacts WHERE artifacts.producer_step_run_id IN ({marks})) "
                    "ORDER BY artifacts.created", [*step_ids, *step_ids])
                for row in produced:
                    users = c.column(
                        "SELECT DISTINCT runs.name FROM runs JOIN step_runs ON step_runs.run_id = runs.id "
                        "JOIN step_run_artifacts ON step_run_artifacts.step_run_id = step_runs.id "
                        "WHERE step_run_artifacts.artifact_id = ? AND runs.id != ? ORDER BY runs.name",
                        (row["id"], run_id))
                    (kept.append((row, users)) if users else deleted.append(row))
            if step_ids:
                c.execute(f"DELETE FROM step_attempts WHERE step_run_id IN ({marks})", step_ids)
                c.execute(f"DELETE FROM step_run_artifacts WHERE step_run_id IN ({marks})", step_ids)
                c.execute("DELETE FROM step_runs WHERE run_id = ?", (run_id,))
            c.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            if deleted:
                c.execute(f"DELETE FROM artifacts WHERE id IN ({placeholders(len(deleted))})", [a["id"] for a in deleted])
        return {"logs": logs, "deleted": deleted, "kept": kept}
