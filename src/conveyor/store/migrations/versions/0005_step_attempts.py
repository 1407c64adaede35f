"""Every attempt of a step run: its phases, where it ran and what it used (issue 16, the dashboard's timeline).

Runs recorded before have no attempts: their steps read back with none.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "step_attempts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("step_run_id", sa.String(32), sa.ForeignKey("step_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_kind", sa.String(32)),
        sa.Column("submitted", sa.DateTime),
        sa.Column("queued", sa.DateTime),
        sa.Column("queue_reason", sa.Text),
        sa.Column("started", sa.DateTime),
        sa.Column("finished", sa.DateTime),
        sa.Column("published", sa.DateTime),
        sa.Column("backend_job_id", sa.String(256)),
        sa.Column("host", sa.String(256)),
        sa.Column("image_digest", sa.String(256)),
        sa.Column("code_hash", sa.String(128)),
        sa.Column("requested", sa.JSON),
        sa.Column("peak_rss_bytes", sa.BigInteger),
        sa.Column("cpu_seconds", sa.Float),
        sa.Column("operator", sa.String(128)),
        sa.Column("operator_flavor", sa.String(128)),
        sa.Column("error", sa.Text),
        sa.Column("traceback", sa.Text),
        sa.Column("logs_uri", sa.String(1024)),
        sa.UniqueConstraint("step_run_id", "number", name="uq_step_attempts_step_number"),
    )
    op.create_index("ix_step_attempts_step_run", "step_attempts", ["step_run_id"])


def downgrade() -> None:
    op.drop_index("ix_step_attempts_step_run", "step_attempts")
    op.drop_table("step_attempts")
