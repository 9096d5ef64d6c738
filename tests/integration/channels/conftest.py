"""Fixtures for the channel store and unit of work tests: bare tables, no app, no migrations.

``engine`` here overrides the app's engine from ``tests/integration/conftest.py``: these tests
need an empty database of their own per test (``db_url``, once on SQLite and once on PostgreSQL).
"""

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from session_core.db.engine import make_engine
from session_core.db.tables import metadata


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on a fresh database holding the tables (created from metadata, not migrated)."""
    engine = make_engine(db_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def key() -> str:
    """A channel key no other test uses."""
    return f"env/sessions/{uuid.uuid4()}/out"
