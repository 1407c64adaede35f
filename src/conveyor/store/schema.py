"""Table definitions of the metadata store (SQLAlchemy Core: fast, and what Alembic compares against)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from conveyor.store.head import SCHEMA_HEAD  # noqa: F401 - where it lives now; kept here for the migrations' test

metadata = MetaData()

ID = lambda: String(32)  # noqa: E731 - uuid4().hex


flavors = Table(
    "flavors", metadata,
    Column("id", ID(), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("name", String(128), nullable=False),
    Column("source", String(512), nullable=False),
    Column("created", DateTime, nullable=False),
    UniqueConstraint("type", "name", name="uq_flavors_type_name"),
)

components = Table(
    "components", metadata,
    Column("id", ID(), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("name", String(128), nullable=False),
    Column("flavor", String(128), nullable=False),
    Column("config", JSON, nullable=False),
    Column("created", DateTime, nullable=False),
    Column("updated", DateTime, nullable=False),
    UniqueConstraint("type", "name", name="uq_components_type_name"),
)

stacks = Table(
    "stacks", metadata,
    Column("id", ID(), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created", DateTime, nullable=False),
    Column("updated", DateTime, nullable=False),
)

stack_components = Table(
    "stack_components", metadata,
    Column("stack_id", ID(), ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True),
    Column("component_id", ID(), ForeignKey("components.id"), primary_key=True),
    Column("position", Integer, nullable=False),
)

secrets = Table(
    "secrets", metadata,
    Column("id", ID(), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("keys", JSON, nullable=False),  # the key names, for `conveyor secret list`
    Column("value", Text, nullable=False),  # Fernet token of the JSON values; the key is never in the store
    Column("created", DateTime, nullable=False),
    Column("updated", DateTime, nullable=False),
)

kv = Table(
    "kv", metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)

pipelines = Table(
    "pipelines", metadata,
    Column("id", ID(), primary_key=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("created", DateTime, nullable=False),
)

snapshots = Table(
    "snapshots", metadata,
    Column("id", ID(), primary_key=True),
    Column("pipeline_id", ID(), ForeignKey("pipelines.id"), nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("created", DateTime, nullable=False),
    UniqueConstraint("pipeline_id", "spec_hash", name="uq_snapshots_pipeline_hash"),
)

runs = Table(
    "runs", metadata,
    Column("id", ID(), primary_key=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("pipeline_id", ID(), ForeignKey("pipelines.id"), nullable=False),
    Column("snapshot_id", ID(), ForeignKey("snapshots.id"), nullable=False),
    Column("stack_name", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", DateTime),
    Column("end_time", DateTime),
    Column("host", String(256)),
    Column("pid", Integer),
    Column("pid_start", String(80)),  # utils.procs.process_start of `pid`: a reused pid is not the run's owner
    Column("heartbeat", DateTime),
    Column("stop_requested", Boolean, nullable=False, default=False),
    Column("error", Text),
    Column("created", DateTime, nullable=False),
)
Index("ix_runs_pipeline_created", runs.c.pipeline_id, runs.c.created)

step_runs = Table(
    "step_runs", metadata,
    Column("id", ID(), primary_key=True),
    Column("run_id", ID(), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("position", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", DateTime),
    Column("end_time", DateTime),
    Column("attempt", Integer, nullable=False, default=0),
    Column("cache_key", String(64)),
    Column("operator", String(128)),
    Column("operator_flavor", String(128)),
    Column("config", JSON, nullable=False),
    Column("submission", JSON),
    Column("error", Text),
    Column("failure_kind", String(32)),
    Column("traceback", Text),
    Column("logs_uri", String(1024)),
    Column("cached_from", ID()),
    UniqueConstraint("run_id", "name", name="uq_step_runs_run_name"),
)
Index("ix_step_runs_cache_key", step_runs.c.cache_key, step_runs.c.status)

artifacts = Table(
    "artifacts", metadata,
    Column("id", ID(), primary_key=True),
    Column("uri", String(1024), nullable=False),
    Column("materializer", String(512), nullable=False),
    Column("data_type", String(512), nullable=False),
    Column("checksum", String(64)),
    Column("size", BigInteger),
    Column("producer_step_run_id", ID(), ForeignKey("step_runs.id", ondelete="SET NULL")),
    Column("created", DateTime, nullable=False),
    # artifacts by name: `Annotated[T, "name"]` outputs, `{pipeline}::{step}::{output}` for the others, and
    # `save_artifact(data, name)`; versions "1", "2", ... per name (or one given explicitly), unique per name
    Column("name", String(256)),
    Column("version", String(64)),
    Column("version_number", Integer),  # the version as a number when it is one: the next is max + 1
    UniqueConstraint("name", "version", name="uq_artifacts_name_version"),
)
Index("ix_artifacts_name_created", artifacts.c.name, artifacts.c.created)

step_run_artifacts = Table(
    "step_run_artifacts", metadata,
    Column("step_run_id", ID(), ForeignKey("step_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("direction", String(8), primary_key=True),  # "input" | "output"
    Column("name", String(256), primary_key=True),
    Column("artifact_id", ID(), ForeignKey("artifacts.id"), nullable=False),
)

#: `log_metadata(...)`: JSON values attached to a run, a step run or an artifact (exactly one of the three)
run_metadata = Table(
    "run_metadata", metadata,
    Column("id", ID(), primary_key=True),
    Column("run_id", ID(), ForeignKey("runs.id", ondelete="CASCADE")),
    Column("step_run_id", ID(), ForeignKey("step_runs.id", ondelete="CASCADE")),
    Column("artifact_id", ID(), ForeignKey("artifacts.id", ondelete="CASCADE")),
    Column("key", String(256), nullable=False),
    Column("value", JSON),
    Column("created", DateTime, nullable=False),
)
Index("ix_run_metadata_run", run_metadata.c.run_id)
Index("ix_run_metadata_step_run", run_metadata.c.step_run_id)
Index("ix_run_metadata_artifact", run_metadata.c.artifact_id)

#: one row per attempt of a step run (conveyor.execution.attempt_record): when each phase began, where it ran
#: (backend job id, host, image digest, code hash) and what it asked for and used
step_attempts = Table(
    "step_attempts", metadata,
    Column("id", ID(), primary_key=True),
    Column("step_run_id", ID(), ForeignKey("step_runs.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("failure_kind", String(32)),
    Column("submitted", DateTime),
    Column("queued", DateTime),
    Column("queue_reason", Text),
    Column("started", DateTime),
    Column("finished", DateTime),
    Column("published", DateTime),
    Column("backend_job_id", String(256)),
    Column("host", String(256)),
    Column("image_digest", String(256)),
    Column("code_hash", String(128)),
    Column("requested", JSON),
    Column("peak_rss_bytes", BigInteger),
    Column("cpu_seconds", Float),
    Column("operator", String(128)),
    Column("operator_flavor", String(128)),
    Column("error", Text),
    Column("traceback", Text),
    Column("logs_uri", String(1024)),
    UniqueConstraint("step_run_id", "number", name="uq_step_attempts_step_number"),
)
Index("ix_step_attempts_step_run", step_attempts.c.step_run_id)
