"""SQLAlchemy Core tables on one MetaData: the schema Alembic migrates and repositories query.

Timestamps are naive UTC with millisecond precision (``TIMESTAMP(3)`` on PostgreSQL).
On PostgreSQL ``tags`` is ``TEXT[]`` and JSON columns are ``JSONB``; SQLite stores both as JSON.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
Tags = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")
Timestamp = sa.DateTime().with_variant(postgresql.TIMESTAMP(precision=3), "postgresql")

environments = sa.Table(
    "environments",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("slug", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("organization_id", sa.Text, nullable=False),
    sa.Column("project_id", sa.Text, nullable=False),
    # The secret key is kept because it signs the environment's JWTs; lookups go through its hash.
    sa.Column("api_key", sa.Text, nullable=False),
    sa.Column("api_key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("project_id", "slug", name="environments_project_slug_key"),
)

sessions = sa.Table(
    "sessions",
    metadata,
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
    # NULL externalIds never collide: both databases treat NULLs as distinct in unique indexes.
    sa.UniqueConstraint("environment_id", "external_id", name="sessions_environment_external_id_key"),
    sa.Index("sessions_expires_at_idx", "expires_at"),
    sa.Index("sessions_current_run_id_idx", "current_run_id"),
    # The ClickHouse lister's catch-up query (migration 0002 says why this is the only list index).
    sa.Index("sessions_environment_updated_at_idx", "environment_id", "updated_at"),
)

session_runs = sa.Table(
    "session_runs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("session_id", sa.Text, sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    sa.Column("run_id", sa.Text, nullable=False, unique=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("triggered_at", Timestamp, nullable=False),
    # QUEUED, EXECUTING or a final state the agent reported; EXPIRED is derived from the lease.
    sa.Column("status", sa.Text, nullable=False, server_default="QUEUED"),
    sa.Column("lease_expires_at", Timestamp, nullable=True),
    sa.Column("started_at", Timestamp, nullable=True),
    sa.Column("ended_at", Timestamp, nullable=True),
    sa.Column("output", Json, nullable=True),
    sa.Column("error", Json, nullable=True),
    sa.Index("session_runs_session_id_idx", "session_id"),
)

# The launch outbox: one row per run a launcher must start, committed with the run itself, so a
# crash between commit and delivery delays a launch and never loses it. ``id`` is the stable
# ``webhook-id`` (and Celery task id) every delivery attempt of the launch carries.
run_launches = sa.Table(
    "run_launches",
    metadata,
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
    sa.Index("run_launches_due_idx", "delivered_at", "next_attempt_at"),
)

# One row per channel. An append locks this row, so ``next_seq`` (the tail) stays gap-free and
# unique per channel; ``last_timestamp`` keeps record timestamps monotonic without reading records;
# ``parts_swept_at`` spaces out the lazy clean-up of expired part ids to once per TTL.
channels = sa.Table(
    "channels",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("next_seq", sa.BigInteger, nullable=False),
    sa.Column("last_timestamp", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("parts_swept_at", sa.BigInteger, nullable=False, server_default="0"),
)

# Records in S2's shape: epoch-ms ``timestamp``, ``headers`` as ``[[name, value], ...]`` (NULL when
# empty). Trimmed records are deleted; their seq_nums are never reused because ``next_seq`` only grows.
channel_records = sa.Table(
    "channel_records",
    metadata,
    sa.Column("channel_key", sa.Text, primary_key=True),
    sa.Column("seq_num", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("headers", Json, nullable=True),
    sa.Column("body", sa.Text, nullable=False),
)

# X-Part-Id de-duplication: a retried append finds its first seq_num here while
# ``created_at`` (epoch ms) is within the TTL.
channel_parts = sa.Table(
    "channel_parts",
    metadata,
    sa.Column("channel_key", sa.Text, primary_key=True),
    sa.Column("part_id", sa.Text, primary_key=True),
    sa.Column("seq_num", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# One-time-use tokens (``otu: true``) already used: the SHA-256 of the token, kept until its ``exp``
# (epoch seconds). The primary key lets exactly one of concurrent uses in; expired rows are swept.
spent_tokens = sa.Table(
    "spent_tokens",
    metadata,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("spent_tokens_expires_at_idx", "expires_at"),
)

# Durable Streams (``/v1/stream/{path}``): one row per stream of an environment. Its records live
# in the channel store under ``ds_channel_key(environment_id, id)``; ``id`` is fresh per creation,
# so a path deleted and created again never shows the old records. ``ttl_seconds`` slides from
# ``last_access_ms``; ``expires_at`` is kept as sent (HEAD echoes it) beside its epoch ms. A fork
# reads ``source_id`` below ``fork_seq``; a deleted stream that forks still read (``ref_count``)
# stays as a ``soft_deleted`` row until the last of them goes.
ds_streams = sa.Table(
    "ds_streams",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("environment_id", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("ttl_seconds", sa.BigInteger, nullable=True),
    sa.Column("expires_at", sa.Text, nullable=True),
    sa.Column("expires_at_ms", sa.BigInteger, nullable=True),
    sa.Column("closed", sa.Boolean, nullable=False, server_default=sa.false()),
    # The producer tuple whose append closed the stream, as JSON, so its retry is a duplicate.
    sa.Column("closed_by", sa.Text, nullable=True),
    sa.Column("soft_deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("ref_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("source_id", sa.Text, nullable=True),
    sa.Column("forked_from", sa.Text, nullable=True),
    sa.Column("fork_seq", sa.BigInteger, nullable=True),
    sa.Column("fork_sub_offset", sa.BigInteger, nullable=False, server_default="0"),
    # The last ``Stream-Seq`` accepted (byte-wise ordering), if writers coordinate with it.
    sa.Column("stream_seq", sa.Text, nullable=True),
    sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    sa.Column("last_access_ms", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("environment_id", "path", name="ds_streams_environment_path_key"),
)

# Idempotent producers of a Durable Stream: written in the append's transaction, so a producer's
# state never runs ahead of (or behind) the records it vouches for.
ds_producers = sa.Table(
    "ds_producers",
    metadata,
    sa.Column("stream_id", sa.Text, sa.ForeignKey("ds_streams.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("producer_id", sa.Text, primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
)
