"""Artifacts by name and version, and the metadata `log_metadata` attaches to runs, step runs and artifacts.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("name", sa.String(256)))
        batch.add_column(sa.Column("version", sa.String(64)))
        batch.add_column(sa.Column("version_number", sa.Integer))
        batch.create_unique_constraint("uq_artifacts_name_version", ["name", "version"])
    op.create_index("ix_artifacts_name_created", "artifacts", ["name", "created"])
    op.create_table(
        "run_metadata",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE")),
        sa.Column("step_run_id", sa.String(32), sa.ForeignKey("step_runs.id", ondelete="CASCADE")),
        sa.Column("artifact_id", sa.String(32), sa.ForeignKey("artifacts.id", ondelete="CASCADE")),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("value", sa.JSON),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_index("ix_run_metadata_run", "run_metadata", ["run_id"])
    op.create_index("ix_run_metadata_step_run", "run_metadata", ["step_run_id"])
    op.create_index("ix_run_metadata_artifact", "run_metadata", ["artifact_id"])


def downgrade() -> None:
    op.drop_table("run_metadata")
    op.drop_index("ix_artifacts_name_created", "artifacts")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_constraint("uq_artifacts_name_version", type_="unique")
        batch.drop_column("version_number")
        batch.drop_column("version")
        batch.drop_column("name")
