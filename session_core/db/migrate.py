"""Apply the Alembic migrations shipped in the ``migrations`` package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["url"] = url
    return config


def upgrade_database(url: str) -> None:
    """Bring the database at ``url`` to the newest schema; running it twice is harmless."""
    command.upgrade(alembic_config(url), "head")
