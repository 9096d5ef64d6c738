"""Engine construction: one place for SQLite pragmas and PostgreSQL pool settings."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_private_sqlite_file(url: str) -> None:
    """Create a SQLite database file readable by its owner only (0600) before SQLite creates it.

    SQLite would create it as 0644 (less the umask), readable by every local user. It gives the
    ``-wal`` and ``-shm`` files it creates later the database file's mode, so they are 0600 too.
    An existing file, an in-memory database or a ``file:`` URI is left as it is.
    """
    if not is_sqlite(url):
        return
    path = sa.engine.make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:  # another process created it meanwhile, through this same function
        pass


def make_engine(url: str, **overrides: Any) -> sa.Engine:
    """Create an engine for ``url``.

    SQLite runs in WAL mode with a busy timeout so concurrent web workers queue instead of failing,
    in files only their owner may read;
    PostgreSQL gets a pool sized for a gevent worker and no pre-ping (a round trip on every
    checkout): after a server restart the first statement on a stale connection fails, SQLAlchemy
    invalidates the whole pool, and the web layer answers that one request 503 so it is retried.
    """
    if is_sqlite(url):
        create_private_sqlite_file(url)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **overrides)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's implicit BEGIN is replaced by our own BEGIN IMMEDIATE below.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn: sa.Connection) -> None:
            # Writers take the write lock up front, so read-then-write transactions never deadlock
            # on upgrading it; read-only units of work read WAL snapshots without any lock.
            read_only = conn.get_execution_options().get("read_only", False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    options: dict[str, Any] = {"pool_size": 10, "max_overflow": 20, "pool_recycle": 1800}
    options.update(overrides)
    return sa.create_engine(url, **options)
