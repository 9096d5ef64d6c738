"""Apply the Alembic migrations shipped in the ``migrations`` package."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["url"] = url
    return config


def upgrade_database(url: str) -> None:
    """Bring the database at ``url`` to the newest schema; running it twice is harmless."""
    command.upgrade(alembic_config(url), "head")


def is_schema_current(engine: sa.Engine) -> bool:
    """Whether the database behind ``engine`` is at the newest migration (never migrated: False).

    :raise sqlalchemy.exc.DBAPIError: when the database cannot be reached.
    """
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head
