"""The SQLite database and the files SQLite creates beside it are readable by their owner only."""

import os
import stat

import pytest
import sqlalchemy as sa

from session_core.db.engine import make_engine
from session_core.db.migrate import upgrade_database


@pytest.fixture
def usual_umask():
    """The umask most shells run with (022), under which SQLite alone creates 0644 files."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(path):
    return {
        suffix: stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode)
        for suffix in ("", "-wal", "-shm")
        if os.path.exists(f"{path}{suffix}")
    }


def test_migrating_a_new_database_creates_private_files(tmp_path, usual_umask):
    path = tmp_path / "sessions.db"
    upgrade_database(f"sqlite:///{path}")
    assert _modes(path)[""] == 0o600


def test_a_new_database_and_its_wal_and_shm_files_are_private(tmp_path, usual_umask):
    path = tmp_path / "sessions.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as connection:  # WAL mode: the -wal and -shm files appear as it writes
        connection.execute(sa.text("CREATE TABLE t (x TEXT)"))
        connection.execute(sa.text("INSERT INTO t VALUES ('secret')"))
        assert _modes(path) == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    engine.dispose()
