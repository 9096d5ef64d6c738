"""Alembic environment: the URL comes from the caller (``sessions migrate``) or from Settings."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context
from sqlalchemy.pool import NullPool

from session_core.config import Settings
from session_core.db.engine import create_private_sqlite_file, is_sqlite
from session_core.db.tables import metadata

config = context.config
url = config.attributes.get("url") or Settings.from_env(os.environ).database_url
create_private_sqlite_file(url)
engine = sa.create_engine(url, poolclass=NullPool)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=is_sqlite(url),
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
