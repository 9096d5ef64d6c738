"""Remember one-time-use tokens that were spent, so each authorizes exactly one request.

A JWT with ``otu: true`` is spent by inserting the SHA-256 of the token here; the primary key lets
exactly one of any number of concurrent uses insert it, on every worker alike. Rows are needed only
until the token's own ``exp`` (epoch seconds), after which the token is refused anyway, so they are
swept lazily by ``expires_at``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spent_tokens",
        sa.Column("token_hash", sa.Text, primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("spent_tokens_expires_at_idx", "spent_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("spent_tokens")
