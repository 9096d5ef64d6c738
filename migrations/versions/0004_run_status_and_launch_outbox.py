"""Give session runs a status and a lease, and add the launch outbox.

A run is QUEUED until its agent's first heartbeat, EXECUTING while heartbeats keep its lease, and
ends COMPLETED, FAILED or CANCELLED (EXPIRED is derived from a lapsed lease, never stored). Rows
from before this revision keep no lease and so stay live, as they were. ``run_launches`` holds the
launches a webhook or Celery launcher still has to deliver.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
Timestamp = sa.DateTime().with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("session_runs") as batch:
        batch.add_column(sa.Column("status", sa.Text, nullable=False, server_default="QUEUED"))
        batch.add_column(sa.Column("lease_expires_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("started_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("ended_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("output", Json, nullable=True))
        batch.add_column(sa.Column("error", Json, nullable=True))
    op.create_table(
        "run_launches",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column(
            "run_id",
            sa.Text,
            sa.ForeignKey("session_runs.run_id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", Timestamp, nullable=False),
        sa.Column("delivered_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("run_launches_due_idx", "run_launches", ["delivered_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("run_launches_due_idx", "run_launches")
    op.drop_table("run_launches")
    with op.batch_alter_table("session_runs") as batch:
        for column in ("error", "output", "ended_at", "started_at", "lease_expires_at", "status"):
            batch.drop_column(column)
