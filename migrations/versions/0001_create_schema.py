"""Create environments, sessions, session runs and the channel store.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
Tags = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")
Timestamp = sa.DateTime().with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("slug", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("organization_id", sa.Text, nullable=False),
        sa.Column("project_id", sa.Text, nullable=False),
        sa.Column("api_key", sa.Text, nullable=False),
        sa.Column("api_key_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint("project_id", "slug", name="environments_project_slug_key"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("friendly_id", sa.Text, nullable=False, unique=True),
        sa.Column("external_id", sa.Text, nullable=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("task_identifier", sa.Text, nullable=False),
        sa.Column("trigger_config", Json, nullable=False),
        sa.Column("tags", Tags, nullable=False),
        sa.Column("metadata", Json, nullable=True),
        sa.Column("organization_id", sa.Text, nullable=False),
        sa.Column("project_id", sa.Text, nullable=False),
        sa.Column("environment_id", sa.Text, nullable=False),
        sa.Column("environment_type", sa.Text, nullable=False),
        sa.Column("current_run_id", sa.Text, nullable=True),
        sa.Column("current_run_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("closed_at", Timestamp, nullable=True),
        sa.Column("closed_reason", sa.Text, nullable=True),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.UniqueConstraint("environment_id", "external_id", name="sessions_environment_external_id_key"),
    )
    op.create_index("sessions_expires_at_idx", "sessions", ["expires_at"])
    op.create_index("sessions_current_run_id_idx", "sessions", ["current_run_id"])
    if op.get_bind().dialect.name == "postgresql":
        # The replicator turns deletes into tombstones, which needs the whole old row.
        op.execute("ALTER TABLE sessions REPLICA IDENTITY FULL")
    op.create_table(
        "session_runs",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("run_id", sa.Text, nullable=False, unique=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("triggered_at", Timestamp, nullable=False),
    )
    op.create_index("session_runs_session_id_idx", "session_runs", ["session_id"])
    op.create_table(
        "channels",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("next_seq", sa.BigInteger, nullable=False),
        sa.Column("last_timestamp", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("parts_swept_at", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "channel_records",
        sa.Column("channel_key", sa.Text, primary_key=True),
        sa.Column("seq_num", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("headers", Json, nullable=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "channel_parts",
        sa.Column("channel_key", sa.Text, primary_key=True),
        sa.Column("part_id", sa.Text, primary_key=True),
        sa.Column("seq_num", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("channel_parts", "channel_records", "channels", "session_runs", "sessions", "environments"):
        op.drop_table(table)
