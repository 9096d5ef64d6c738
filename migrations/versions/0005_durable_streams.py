"""Durable Streams: a row per stream (``ds_streams``) and idempotent producer state (``ds_producers``).

A stream's records live in the channel store (``channels``/``channel_records``), so reads, appends
and live-tail wake-ups are the ones session channels use.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ds_streams",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("environment_id", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("ttl_seconds", sa.BigInteger, nullable=True),
        sa.Column("expires_at", sa.Text, nullable=True),
        sa.Column("expires_at_ms", sa.BigInteger, nullable=True),
        sa.Column("closed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("closed_by", sa.Text, nullable=True),
        sa.Column("soft_deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("ref_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("source_id", sa.Text, nullable=True),
        sa.Column("forked_from", sa.Text, nullable=True),
        sa.Column("fork_seq", sa.BigInteger, nullable=True),
        sa.Column("fork_sub_offset", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("stream_seq", sa.Text, nullable=True),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
        sa.Column("last_access_ms", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("environment_id", "path", name="ds_streams_environment_path_key"),
    )
    op.create_table(
        "ds_producers",
        sa.Column("stream_id", sa.Text, sa.ForeignKey("ds_streams.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("producer_id", sa.Text, primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ds_producers")
    op.drop_table("ds_streams")
