"""The metadata store: every write is one short transaction; reads never block writers (WAL)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from conveyor.config.names import check_name
from conveyor.exceptions import StackError
from conveyor.store import schema as t
from conveyor.store.errors import translate, translated


#: any fixed 64-bit number, the same in every Conveyor process: PostgreSQL's advisory lock around migrations
MIGRATION_LOCK_KEY = 0x636F6E7665796F72  # "conveyor"


#: how often recording a step's named artifacts is tried when concurrent runs take the same version number
_VERSION_RETRIES = 8


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex


class StoreError(StackError):
    """A store operation that cannot be done, with what to do instead."""


class ArtifactVersionTakenError(StoreError):
    """`save_artifact(..., version=V)` for a version of that name that already exists."""


def _sqlite_engine(url: str) -> tuple[Engine, Engine]:
    """Two engines on one file: writers take the lock up front (BEGIN IMMEDIATE) so
    concurrent processes queue on busy_timeout instead of failing with "database is locked"."""

    def make(immediate: bool) -> Engine:
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    return make(True), make(False)


class MetadataStore:
    """Records flavors, components, stacks, pipelines, snapshots, runs, step runs and artifacts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self._write_engine, self._read_engine = _sqlite_engine(url)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
            self._write_engine = self._read_engine = engine
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
                if self._current_revision() != t.SCHEMA_HEAD:
                    self._upgrade()
            except Exception as err:  # a damaged file or an unreachable server: the same words as the CLI's
                mapped = translate(err, self.url)
                if mapped is err:
                    raise
                raise mapped from err
            self._schema_checked = True

    def _current_revision(self) -> str | None:
        try:
            with self._read_engine.connect() as conn:
                return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except sa.exc.OperationalError:
            return None
        except sa.exc.ProgrammingError:
            return None

    def _upgrade(self) -> None:
        from alembic import command
        from alembic.config import Config
        from pathlib import Path

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self._write_engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # processes starting at once against a new database: one migrates, the others wait and find it done
                # (SQLite's writers are already serialised by BEGIN IMMEDIATE)
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self._write_engine.dispose()
        if self._read_engine is not self._write_engine:
            self._read_engine.dispose()

    def write(self) -> Any:
        self.ensure_schema()
        return translated(self._write_engine.begin(), self.url)

    def read(self) -> Any:
        self.ensure_schema()
        return translated(self._read_engine.begin(), self.url)

    # -- key/value --------------------------------------------------------------------------------
    def get_kv(self, key: str) -> str | None:
        with self.read() as c:
            return c.execute(sa.select(t.kv.c.value).where(t.kv.c.key == key)).scalar()

    def set_kv(self, key: str, value: str) -> None:
        with self.write() as c:
            if c.execute(sa.update(t.kv).where(t.kv.c.key == key).values(value=value)).rowcount == 0:
                c.execute(sa.insert(t.kv).values(key=key, value=value))

    # -- flavors ----------------------------------------------------------------------------------
    def register_flavor(self, type_: str, name: str, source: str) -> None:
        with self.write() as c:
            row = c.execute(sa.select(t.flavors.c.id).where(t.flavors.c.type == type_, t.flavors.c.name == name)).scalar()
            if row:
                c.execute(sa.update(t.flavors).where(t.flavors.c.id == row).values(source=source))
            else:
                c.execute(sa.insert(t.flavors).values(id=new_id(), type=type_, name=name, source=source, created=now()))

    def custom_flavors(self, type_: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(t.flavors)
        if type_:
            q = q.where(t.flavors.c.type == type_)
        with self.read() as c:
            return [dict(r._mapping) for r in c.execute(q.order_by(t.flavors.c.name))]

    # -- components -------------------------------------------------------------------------------
    def create_component(self, type_: str, name: str, flavor: str, config: dict[str, Any]) -> str:
        check_name(type_.replace("_", " "), name)
        with self.write() as c:
            exists = c.execute(sa.select(t.components.c.id).where(t.components.c.type == type_, t.components.c.name == name)).scalar()
            if exists:
                raise StoreError(f"a {type_.replace('_', '-')} named {name!r} already exists: pick another name, or change it with "
                                 f"`conveyor {type_.replace('_', '-')} update {name} --field=value`")
            cid = new_id()
            c.execute(sa.insert(t.components).values(id=cid, type=type_, name=name, flavor=flavor, config=config, created=now(), updated=now()))
            return cid

    def get_component(self, type_: str, name: str) -> dict[str, Any] | None:
        with self.read() as c:
            row = c.execute(sa.select(t.components).where(t.components.c.type == type_, t.components.c.name == name)).first()
            return dict(row._mapping) if row else None

    def get_component_by_id(self, cid: str) -> dict[str, Any] | None:
        with self.read() as c:
            row = c.execute(sa.select(t.components).where(t.components.c.id == cid)).first()
            return dict(row._mapping) if row else None

    def list_components(self, type_: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(t.components).order_by(t.components.c.type, t.components.c.name)
        if type_:
            q = q.where(t.components.c.type == type_)
        with self.read() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def update_component(self, type_: str, name: str, config: dict[str, Any]) -> None:
        with self.write() as c:
            n = c.execute(sa.update(t.components).where(t.components.c.type == type_, t.components.c.name == name)
                          .values(config=config, updated=now())).rowcount
            if not n:
                raise StoreError(f"no {type_.replace('_', '-')} named {name!r}")

    def delete_component(self, type_: str, name: str) -> None:
        with self.write() as c:
            cid = c.execute(sa.select(t.components.c.id).where(t.components.c.type == type_, t.components.c.name == name)).scalar()
            if not cid:
                raise StoreError(f"no {type_.replace('_', '-')} named {name!r}")
            used = c.execute(sa.select(t.stacks.c.name).join(t.stack_components, t.stack_components.c.stack_id == t.stacks.c.id)
                             .where(t.stack_components.c.component_id == cid)).scalars().all()
            if used:
                raise StoreError(f"{type_.replace('_', '-')} {name!r} is used by stack(s) {', '.join(sorted(used))}: "
                                 f"remove it from them or delete them first (`conveyor stack delete NAME`)")
            c.execute(sa.delete(t.components).where(t.components.c.id == cid))

    # -- component rename and copy (`conveyor <type> rename|copy`, conveyor.stack.lifecycle) ------------
    def rename_component(self, type_: str, old: str, new: str) -> str:
        """Give component `old` the name `new` and return its id; stacks keep it, as they hold its id.

        A step operator that steps of an unfinished run use keeps its name: `conveyor run stop` and `run resume`
        find a step's operator by the name recorded on the step run."""
        cli = type_.replace("_", "-")
        check_name(type_.replace("_", " "), new)
        with self.write() as c:
            cid = c.execute(sa.select(t.components.c.id).where(t.components.c.type == type_, t.components.c.name == old)).scalar()
            if not cid:
                raise StoreError(f"no {cli} named {old!r}: see `conveyor {cli} list`")
            if old == new:
                return cid
            if c.execute(sa.select(t.components.c.id).where(t.components.c.type == type_, t.components.c.name == new)).scalar():
                raise StoreError(f"a {cli} named {new!r} already exists: pick another name, or delete that one first "
                                 f"(`conveyor {cli} delete {new}`)")
            if type_ == "step_operator":
                busy = c.execute(sa.select(t.runs.c.name).distinct().join(t.step_runs, t.step_runs.c.run_id == t.runs.c.id)
                                 .where(t.step_runs.c.operator == old, t.step_runs.c.status.in_(("pending", "running")),
                                        t.runs.c.status == "running").order_by(t.runs.c.name)).scalars().all()
                if busy:
                    raise StoreError(f"{cli} {old!r} runs steps of unfinished run(s) {', '.join(busy)}: let them finish, "
                                     f"or stop them (`conveyor run stop {busy[0]}`), then rename it")
            c.execute(sa.update(t.components).where(t.components.c.id == cid).values(name=new, updated=now()))
            return cid

    def copy_component(self, type_: str, source: str, target: str) -> str:
        """A new component `target` with the flavor and config of `source`, in no stack; returns its id."""
        import copy

        cli = type_.replace("_", "-")
        check_name(type_.replace("_", " "), target)
        with self.write() as c:
            row = c.execute(sa.select(t.components).where(t.components.c.type == type_, t.components.c.name == source)).first()
            if row is None:
                raise StoreError(f"no {cli} named {source!r}: see `conveyor {cli} list`")
            if c.execute(sa.select(t.components.c.id).where(t.components.c.type == type_, t.components.c.name == target)).scalar():
                raise StoreError(f"a {cli} named {target!r} already exists: pick another name for the copy")
            cid, ts = new_id(), now()
            c.execute(sa.insert(t.components).values(id=cid, type=type_, name=target, flavor=row.flavor,
                                                     config=copy.deepcopy(row.config), created=ts, updated=ts))
            return cid

    # -- stacks -----------------------------------------------------------------------------------
    def create_stack(self, name: str, component_ids: Sequence[str]) -> str:
        check_name("stack", name)
        with self.write() as c:
            if c.execute(sa.select(t.stacks.c.id).where(t.stacks.c.name == name)).scalar():
                raise StoreError(f"a stack named {name!r} already exists: pick another name or `conveyor stack update {name} ...`")
            sid = new_id()
            c.execute(sa.insert(t.stacks).values(id=sid, name=name, created=now(), updated=now()))
            self._set_stack_components(c, sid, component_ids)
            return sid

    def _set_stack_components(self, c: Connection, sid: str, component_ids: Sequence[str]) -> None:
        c.execute(sa.delete(t.stack_components).where(t.stack_components.c.stack_id == sid))
        if component_ids:
            c.execute(sa.insert(t.stack_components), [
                {"stack_id": sid, "component_id": cid, "position": i} for i, cid in enumerate(component_ids)])

    def set_stack_components(self, name: str, component_ids: Sequence[str]) -> None:
        with self.write() as c:
            sid = c.execute(sa.select(t.stacks.c.id).where(t.stacks.c.name == name)).scalar()
            if not sid:
                raise StoreError(f"no stack named {name!r}")
            self._set_stack_components(c, sid, component_ids)
            c.execute(sa.update(t.stacks).where(t.stacks.c.id == sid).values(updated=now()))

    def get_stack(self, name: str) -> dict[str, Any] | None:
        with self.read() as c:
            row = c.execute(sa.select(t.stacks).where(t.stacks.c.name == name)).first()
            if not row:
                return None
            comps = c.execute(sa.select(t.components).join(t.stack_components, t.stack_components.c.component_id == t.components.c.id)
                              .where(t.stack_components.c.stack_id == row.id).order_by(t.stack_components.c.position)).all()
            return {**row._mapping, "components": [dict(r._mapping) for r in comps]}

    def list_stacks(self) -> list[str]:
        with self.read() as c:
            return list(c.execute(sa.select(t.stacks.c.name).order_by(t.stacks.c.name)).scalars())

    def delete_stack(self, name: str) -> None:
        with self.write() as c:
            if not c.execute(sa.delete(t.stacks).where(t.stacks.c.name == name)).rowcount:
                raise StoreError(f"no stack named {name!r}")

    # -- secrets (values arrive encrypted; see conveyor.secrets.vault) -----------------------------
    def put_secret(self, name: str, keys: list[str], token: str, *, replace: bool) -> None:
        if not replace:  # an existing secret keeps its name, whatever rules were in force when it was made
            check_name("secret", name, allow_dot=False)
        ts = now()
        with self.write() as c:
            exists = c.execute(sa.select(t.secrets.c.id).where(t.secrets.c.name == name)).scalar()
            if exists and not replace:
                raise StoreError(f"secret {name!r} already exists: change it with `conveyor secret update {name}`")
            if not exists and replace:
                raise StoreError(f"no secret named {name!r}: create it with `conveyor secret create {name}`")
            if exists:
                c.execute(sa.update(t.secrets).where(t.secrets.c.id == exists).values(keys=keys, value=token, updated=ts))
            else:
                c.execute(sa.insert(t.secrets).values(id=new_id(), name=name, keys=keys, value=token, created=ts,
                                                      updated=ts))

    def get_secret(self, name: str) -> dict[str, Any] | None:
        with self.read() as c:
            row = c.execute(sa.select(t.secrets).where(t.secrets.c.name == name)).first()
            return dict(row._mapping) if row else None

    def list_secrets(self) -> list[dict[str, Any]]:
        with self.read() as c:
            return [dict(r._mapping) for r in c.execute(
                sa.select(t.secrets.c.name, t.secrets.c["keys"], t.secrets.c.created, t.secrets.c.updated)
                .order_by(t.secrets.c.name))]

    def delete_secret(self, name: str) -> None:
        with self.write() as c:
            if not c.execute(sa.delete(t.secrets).where(t.secrets.c.name == name)).rowcount:
                raise StoreError(f"no secret named {name!r}: see `conveyor secret list`")

    # -- pipelines and snapshots ------------------------------------------------------------------
    def get_or_create_snapshot(self, pipeline_name: str, spec_hash: str, spec: dict[str, Any]) -> tuple[str, str]:
        """Processes starting the same pipeline at once may race to create it; on PostgreSQL (read committed) the
        loser's insert fails on the unique name, and its second try finds the winner's row."""
        for attempt in range(3):
            try:
                return self._get_or_create_snapshot(pipeline_name, spec_hash, spec)
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _get_or_create_snapshot(self, pipeline_name: str, spec_hash: str, spec: dict[str, Any]) -> tuple[str, str]:
        with self.write() as c:
            pid = c.execute(sa.select(t.pipelines.c.id).where(t.pipelines.c.name == pipeline_name)).scalar()
            if not pid:
                pid = new_id()
                c.execute(sa.insert(t.pipelines).values(id=pid, name=pipeline_name, created=now()))
            sid = c.execute(sa.select(t.snapshots.c.id).where(t.snapshots.c.pipeline_id == pid, t.snapshots.c.spec_hash == spec_hash)).scalar()
            if not sid:
                sid = new_id()
                c.execute(sa.insert(t.snapshots).values(id=sid, pipeline_id=pid, spec_hash=spec_hash, spec=spec, created=now()))
            return pid, sid

    def get_snapshot(self, snapshot_id: str) -> dict[str, Any]:
        with self.read() as c:
            return dict(c.execute(sa.select(t.snapshots).where(t.snapshots.c.id == snapshot_id)).one()._mapping)

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
            c.execute(sa.insert(t.runs).values(id=run_id, name=name, pipeline_id=pipeline_id, snapshot_id=snapshot_id,
                                               stack_name=stack_name, status="running", start_time=ts, host=host, pid=pid,
                                               pid_start=pid_start, heartbeat=ts, stop_requested=False, created=ts))
            if rows:
                c.execute(sa.insert(t.step_runs), rows)
        return run_id, step_ids

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self.write() as c:
            c.execute(sa.update(t.runs).where(t.runs.c.id == run_id).values(**fields))

    def claim_run(self, run_id: str, *, previous: tuple[Any, Any], host: str, pid: int, pid_start: str | None = None) -> bool:
        """Make this process the run's orchestrator, unless another one claimed it since `previous` was read.

        The caller holds the run's lease (execution/lease.py) already: that is what keeps a live owner's run from
        being taken; this conditional update only settles two resumes of the same dead run."""
        old_pid, old_beat = previous
        ts = now()
        with self.write() as c:
            cond = [t.runs.c.id == run_id,
                    t.runs.c.pid.is_(None) if old_pid is None else t.runs.c.pid == old_pid,
                    t.runs.c.heartbeat.is_(None) if old_beat is None else t.runs.c.heartbeat == old_beat]
            return bool(c.execute(sa.update(t.runs).where(*cond).values(
                status="running", host=host, pid=pid, pid_start=pid_start, heartbeat=ts, stop_requested=False, end_time=None,
                error=None)).rowcount)

    def update_step_run(self, step_run_id: str, **fields: Any) -> None:
        with self.write() as c:
            c.execute(sa.update(t.step_runs).where(t.step_runs.c.id == step_run_id).values(**fields))

    def stop_requested(self, run_id: str) -> bool:
        with self.read() as c:
            return bool(c.execute(sa.select(t.runs.c.stop_requested).where(t.runs.c.id == run_id)).scalar())

    def find_run(self, name_or_id: str) -> dict[str, Any] | None:
        with self.read() as c:
            q = sa.select(t.runs, t.pipelines.c.name.label("pipeline_name")).join(t.pipelines, t.pipelines.c.id == t.runs.c.pipeline_id)
            if name_or_id == "latest":
                row = c.execute(q.order_by(t.runs.c.created.desc()).limit(1)).first()
            else:
                row = c.execute(q.where(sa.or_(t.runs.c.id == name_or_id, t.runs.c.name == name_or_id))).first()
            if row is None and len(name_or_id) >= 4:
                rows = c.execute(q.where(t.runs.c.id.startswith(name_or_id))).all()
                row = rows[0] if len(rows) == 1 else None
            return dict(row._mapping) if row else None

    def list_runs(self, pipeline: str | None = None, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        q = (sa.select(t.runs, t.pipelines.c.name.label("pipeline_name")).join(t.pipelines, t.pipelines.c.id == t.runs.c.pipeline_id)
             .order_by(t.runs.c.created.desc()))
        if pipeline:
            q = q.where(t.pipelines.c.name == pipeline)
        if status:
            q = q.where(t.runs.c.status == status)
        if limit:
            q = q.limit(limit)
        with self.read() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def step_runs(self, run_id: str) -> list[dict[str, Any]]:
        with self.read() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(t.step_runs).where(t.step_runs.c.run_id == run_id)
                                                        .order_by(t.step_runs.c.position))]

    def step_run_artifacts(self, step_run_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not step_run_ids:
            return []
        q = (sa.select(t.step_run_artifacts.c.step_run_id, t.step_run_artifacts.c.direction, t.step_run_artifacts.c.name,
                       *[col for col in t.artifacts.c if col.name != "name"], t.artifacts.c.name.label("artifact_name"))
             .join(t.artifacts, t.artifacts.c.id == t.step_run_artifacts.c.artifact_id)
             .where(t.step_run_artifacts.c.step_run_id.in_(list(step_run_ids))))
        with self.read() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def find_cached(self, cache_key: str) -> dict[str, Any] | None:
        """Newest completed step run with this cache key, with its outputs."""
        with self.read() as c:
            row = c.execute(sa.select(t.step_runs.c.id).where(t.step_runs.c.cache_key == cache_key, t.step_runs.c.status == "completed")
                            .order_by(t.step_runs.c.end_time.desc()).limit(1)).first()
            if not row:
                return None
            outs = c.execute(sa.select(t.step_run_artifacts.c.name, t.artifacts).join(t.artifacts, t.artifacts.c.id == t.step_run_artifacts.c.artifact_id)
                             .where(t.step_run_artifacts.c.step_run_id == row.id, t.step_run_artifacts.c.direction == "output")).all()
            return {"step_run_id": row.id, "outputs": {r.name: dict(r._mapping) for r in outs}}

    def clear_cache(self, *, pipeline: str | None = None, step: str | None = None, dry_run: bool = False) -> int:
        """Make completed step runs (all, or of one pipeline and/or step name) never serve as a cache hit again.

        Only their recorded cache key goes: statuses, artifacts and links stay, so runs still load their outputs.
        Returns how many step runs were (with `dry_run`, would be) cleared.
        """
        cond = [t.step_runs.c.cache_key.is_not(None), t.step_runs.c.status == "completed"]
        if step is not None:
            cond.append(t.step_runs.c.name == step)
        if pipeline is not None:
            with self.read() as c:
                pid = c.execute(sa.select(t.pipelines.c.id).where(t.pipelines.c.name == pipeline)).scalar()
            if pid is None:
                raise StoreError(f"no pipeline named {pipeline!r}: see the pipeline names in `conveyor run list`")
            cond.append(t.step_runs.c.run_id.in_(sa.select(t.runs.c.id).where(t.runs.c.pipeline_id == pid)))
        if dry_run:
            with self.read() as c:
                return int(c.execute(sa.select(sa.func.count()).select_from(t.step_runs).where(*cond)).scalar() or 0)
        with self.write() as c:
            return int(c.execute(sa.update(t.step_runs).where(*cond).values(cache_key=None)).rowcount or 0)

    def finish_step(self, step_run_id: str, *, status: str, inputs: dict[str, str], outputs: dict[str, dict[str, Any]],
                    new_artifacts: Sequence[dict[str, Any]] = (), metadata: Sequence[dict[str, Any]] = (),
                    **fields: Any) -> None:
        """Artifacts (named ones get their version here), links, metadata and the final status land together or
        not at all; two runs numbering the same name at once: the loser's insert fails and it counts again."""
        for attempt in range(_VERSION_RETRIES):
            try:
                return self._finish_step(step_run_id, status=status, inputs=inputs, outputs=outputs,
                                         new_artifacts=new_artifacts, metadata=metadata, **fields)
            except sa.exc.IntegrityError:
                if attempt == _VERSION_RETRIES - 1 or not any(a.get("name") for a in new_artifacts):
                    raise

    def _finish_step(self, step_run_id: str, *, status: str, inputs: dict[str, str],
                     outputs: dict[str, dict[str, Any]], new_artifacts: Sequence[dict[str, Any]],
                     metadata: Sequence[dict[str, Any]], **fields: Any) -> None:
        with self.write() as c:
            if new_artifacts:
                numbered = self._number_versions(c, new_artifacts)
                c.execute(sa.insert(t.artifacts), [{**a, "created": now(), "producer_step_run_id": step_run_id} for a in numbered])
            # a resumed run finishes a step again: its links from the failed attempt give way
            c.execute(sa.delete(t.step_run_artifacts).where(t.step_run_artifacts.c.step_run_id == step_run_id))
            links = [{"step_run_id": step_run_id, "direction": "input", "name": n, "artifact_id": a} for n, a in inputs.items()]
            links += [{"step_run_id": step_run_id, "direction": "output", "name": n, "artifact_id": a["id"]} for n, a in outputs.items()]
            if links:
                c.execute(sa.insert(t.step_run_artifacts), links)
            c.execute(sa.update(t.step_runs).where(t.step_runs.c.id == step_run_id).values(status=status, **fields))
            self._put_metadata(c, metadata)
        for row, done in zip(new_artifacts, numbered if new_artifacts else ()):  # committed: the caller learns them
            row.update(version=done["version"], version_number=done["version_number"])  # type: ignore[attr-defined]

    # -- artifacts by name and version; run metadata (conveyor.artifacts.registry, conveyor.metadata) ----------
    def _number_versions(self, c: Connection, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
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
                        taken_here[name] = c.execute(sa.select(sa.func.max(t.artifacts.c.version_number))
                                                     .where(t.artifacts.c.name == name)).scalar() or 0
                    taken_here[name] += 1
                    row["version"], row["version_number"] = str(taken_here[name]), taken_here[name]
                else:
                    asked = str(asked)
                    exists = c.execute(sa.select(t.artifacts.c.id).where(t.artifacts.c.name == name,
                                                                         t.artifacts.c.version == asked)).scalar()
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
                    c.execute(sa.insert(t.artifacts).values(**{**numbered, "created": now()}))
                    if metadata:
                        self._put_metadata(c, [{"artifact_id": numbered["id"], "values": metadata}])
                return numbered
            except sa.exc.IntegrityError:
                if attempt == _VERSION_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _put_metadata(self, c: Connection, entries: Sequence[dict[str, Any]]) -> None:
        """Each entry names one target (run_id, step_run_id or artifact_id) and its "values"; a key logged again
        replaces the earlier value."""
        ts = now()
        for entry in entries:
            target = {k: entry[k] for k in ("run_id", "step_run_id", "artifact_id") if entry.get(k)}
            values = entry.get("values") or {}
            if len(target) != 1 or not values:
                continue
            (column, ident), = target.items()
            c.execute(sa.delete(t.run_metadata).where(t.run_metadata.c[column] == ident,
                                                      t.run_metadata.c.key.in_(list(values))))
            c.execute(sa.insert(t.run_metadata), [{"id": new_id(), column: ident, "key": k, "value": v, "created": ts}
                                                  for k, v in values.items()])

    def put_metadata(self, entries: Sequence[dict[str, Any]]) -> None:
        with self.write() as c:
            self._put_metadata(c, entries)

    def metadata_of(self, column: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> {key: value} for the targets `ids` of kind `column` ("run_id", "step_run_id", "artifact_id")."""
        if not ids:
            return {}
        found: dict[str, dict[str, Any]] = {}
        with self.read() as c:
            rows = c.execute(sa.select(t.run_metadata.c[column], t.run_metadata.c.key, t.run_metadata.c.value)
                             .where(t.run_metadata.c[column].in_(list(ids)))
                             .order_by(t.run_metadata.c.created, t.run_metadata.c.key)).all()
        for ident, key, value in rows:
            found.setdefault(ident, {})[key] = value
        return found

    def _artifact_query(self) -> Any:
        return (sa.select(t.artifacts, t.step_runs.c.name.label("producer_step_name"), t.step_runs.c.run_id.label("producer_run_id"),
                          t.runs.c.name.label("producer_run_name"), t.runs.c.stack_name.label("stack_name"))
                .outerjoin(t.step_runs, t.step_runs.c.id == t.artifacts.c.producer_step_run_id)
                .outerjoin(t.runs, t.runs.c.id == t.step_runs.c.run_id))

    def find_artifact_version(self, name_or_id: str, version: str | int | None = None) -> dict[str, Any] | None:
        """By name and version, by name alone (the newest version), or by id."""
        q = self._artifact_query()
        with self.read() as c:
            if version is not None:
                row = c.execute(q.where(t.artifacts.c.name == name_or_id, t.artifacts.c.version == str(version))).first()
                return dict(row._mapping) if row else None
            row = c.execute(q.where(t.artifacts.c.id == name_or_id)).first()
            if row is None:
                row = c.execute(q.where(t.artifacts.c.name == name_or_id)
                                .order_by(t.artifacts.c.created.desc(), t.artifacts.c.version_number.desc()).limit(1)).first()
            return dict(row._mapping) if row else None

    def list_artifact_versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Named artifacts (of one name, or all), by name then oldest version first."""
        q = self._artifact_query().where(t.artifacts.c.name.is_not(None) if name is None else t.artifacts.c.name == name)
        with self.read() as c:
            return [dict(r._mapping) for r in c.execute(q.order_by(t.artifacts.c.name, t.artifacts.c.created,
                                                                   t.artifacts.c.version_number))]

    def find_step_run(self, step_run_id: str) -> dict[str, Any] | None:
        with self.read() as c:
            row = c.execute(sa.select(t.step_runs).where(t.step_runs.c.id == step_run_id)).first()
            return dict(row._mapping) if row else None

    # -- pipelines and run deletion (`conveyor pipeline list`, `conveyor run delete`, conveyor.execution.run_deletion)
    def run_name_taken(self, name: str) -> bool:
        with self.read() as c:
            return c.execute(sa.select(t.runs.c.id).where(t.runs.c.name == name)).first() is not None

    def pipeline_summaries(self, name: str | None = None) -> list[dict[str, Any]]:
        """Each pipeline (or the one named) with its run count and its newest run's row (None when it has none)."""
        q = sa.select(t.pipelines).order_by(t.pipelines.c.name)
        if name is not None:
            q = q.where(t.pipelines.c.name == name)
        counts = (sa.select(t.runs.c.pipeline_id, sa.func.count().label("n")).group_by(t.runs.c.pipeline_id))
        with self.read() as c:
            pipelines = [dict(r._mapping) for r in c.execute(q)]
            n = {r.pipeline_id: r.n for r in c.execute(counts)}
            for p in pipelines:
                p["run_count"] = n.get(p["id"], 0)
                last = c.execute(sa.select(t.runs).where(t.runs.c.pipeline_id == p["id"])
                                 .order_by(t.runs.c.created.desc()).limit(1)).first()
                p["last_run"] = {**last._mapping, "pipeline_name": p["name"]} if last else None
        return pipelines

    def delete_run(self, run_id: str, *, artifacts: bool) -> dict[str, Any]:
        """Delete a run's records in one transaction; with `artifacts`, also the records of the artifacts its steps
        produced that no step of another run uses (a later run's cache hit links the same artifact: it stays, as do
        the outputs a cache hit of this run took from another run).

        Returns {"logs": [uri...], "deleted": [artifact row...], "kept": [(artifact row, [run names])...]} for the
        caller to remove the files of what was deleted."""
        sr, sra, ar = t.step_runs, t.step_run_artifacts, t.artifacts
        with self.write() as c:
            step_ids = list(c.execute(sa.select(sr.c.id).where(sr.c.run_id == run_id)).scalars())
            logs = [u for u in c.execute(sa.select(sr.c.logs_uri).where(sr.c.run_id == run_id)).scalars() if u]
            deleted: list[dict[str, Any]] = []
            kept: list[tuple[dict[str, Any], list[str]]] = []
            if artifacts and step_ids:
                # what its steps produced, and outputs whose producing run was deleted before (no producer left);
                # a cache hit's outputs belong to the run that produced them
                produced = sa.union(
                    sa.select(ar.c.id.label("id")).join(sra, sra.c.artifact_id == ar.c.id).where(
                        sra.c.step_run_id.in_(step_ids), sra.c.direction == "output", ar.c.producer_step_run_id.is_(None)),
                    sa.select(ar.c.id.label("id")).where(ar.c.producer_step_run_id.in_(step_ids))).subquery()
                for row in c.execute(sa.select(ar).where(ar.c.id.in_(sa.select(produced.c.id))).order_by(ar.c.created)):
                    users = list(c.execute(
                        sa.select(t.runs.c.name).distinct().join(sr, sr.c.run_id == t.runs.c.id)
                        .join(sra, sra.c.step_run_id == sr.c.id)
                        .where(sra.c.artifact_id == row.id, t.runs.c.id != run_id).order_by(t.runs.c.name)).scalars())
                    (kept.append((dict(row._mapping), users)) if users else deleted.append(dict(row._mapping)))
            if step_ids:
                c.execute(sa.delete(sra).where(sra.c.step_run_id.in_(step_ids)))
                c.execute(sa.delete(sr).where(sr.c.run_id == run_id))
            c.execute(sa.delete(t.runs).where(t.runs.c.id == run_id))
            if deleted:
                c.execute(sa.delete(ar).where(ar.c.id.in_([a["id"] for a in deleted])))
        return {"logs": logs, "deleted": deleted, "kept": kept}
