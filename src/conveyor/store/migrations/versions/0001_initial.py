"""Initial schema: flavors, components, stacks, pipelines, snapshots, runs, step runs, artifacts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id() -> sa.String:
    return sa.String(32)


def upgrade() -> None:
    op.create_table(
        "flavors",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.UniqueConstraint("type", "name", name="uq_flavors_type_name"),
    )
    op.create_table(
        "components",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("flavor", sa.String(128), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
        sa.UniqueConstraint("type", "name", name="uq_components_type_name"),
    )
    op.create_table(
        "stacks",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
    )
    op.create_table(
        "stack_components",
        sa.Column("stack_id", _id(), sa.ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("component_id", _id(), sa.ForeignKey("components.id"), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_table(
        "kv",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "pipelines",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_table(
        "snapshots",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("pipeline_id", _id(), sa.ForeignKey("pipelines.id"), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.UniqueConstraint("pipeline_id", "spec_hash", name="uq_snapshots_pipeline_hash"),
    )
    op.create_table(
        "runs",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("pipeline_id", _id(), sa.ForeignKey("pipelines.id"), nullable=False),
        sa.Column("snapshot_id", _id(), sa.ForeignKey("snapshots.id"), nullable=False),
        sa.Column("stack_name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_time", sa.DateTime),
        sa.Column("end_time", sa.DateTime),
        sa.Column("host", sa.String(256)),
        sa.Column("pid", sa.Integer),
        sa.Column("heartbeat", sa.DateTime),
        sa.Column("stop_requested", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_index("ix_runs_pipeline_created", "runs", ["pipeline_id", "created"])
    op.create_table(
        "step_runs",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("run_id", _id(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_time", sa.DateTime),
        sa.Column("end_time", sa.DateTime),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("cache_key", sa.String(64)),
        sa.Column("operator", sa.String(128)),
        sa.Column("operator_flavor", sa.String(128)),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("submission", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("failure_kind", sa.String(32)),
        sa.Column("traceback", sa.Text),
        sa.Column("logs_uri", sa.String(1024)),
        sa.Column("cached_from", _id()),
        sa.UniqueConstraint("run_id", "name", name="uq_step_runs_run_name"),
    )
    op.create_index("ix_step_runs_cache_key", "step_runs", ["cache_key", "status"])
    op.create_table(
        "artifacts",
        sa.Column("id", _id(), primary_key=True),
        sa.Column("uri", sa.String(1024), nullable=False),
        sa.Column("materializer", sa.String(512), nullable=False),
        sa.Column("data_type", sa.String(512), nullable=False),
        sa.Column("checksum", sa.String(64)),
        sa.Column("size", sa.BigInteger),
        sa.Column("producer_step_run_id", _id(), sa.ForeignKey("step_runs.id", ondelete="SET NULL")),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_table(
        "step_run_artifacts",
        sa.Column("step_run_id", _id(), sa.ForeignKey("step_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("direction", sa.String(8), primary_key=True),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("artifact_id", _id(), sa.ForeignKey("artifacts.id"), nullable=False),
    )


def downgrade() -> None:
    for table in ("step_run_artifacts", "artifacts", "step_runs", "runs", "snapshots", "pipelines", "kv",
                  "stack_components", "stacks", "components", "flavors"):
        op.drop_table(table)
