"""Index sessions by (environment_id, updated_at) for the ClickHouse lister's catch-up query.

Lists come from ClickHouse, which lags PostgreSQL by the replication delay. The lister tops its
answer up with the environment's rows changed since ClickHouse's newest ``updated_at``; this is the
one index beyond point lookups that the Session table carries, so that query stays a short range
scan at any table size. (A list index on ``created_at`` is deliberately absent: lists at scale are
ClickHouse's job.)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("sessions_environment_updated_at_idx", "sessions", ["environment_id", "updated_at"])


def downgrade() -> None:
    op.drop_index("sessions_environment_updated_at_idx", "sessions")
