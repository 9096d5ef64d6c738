"""The servers of the replication benchmark: PostgreSQL, ClickHouse and the replicator worker.

PostgreSQL and ClickHouse come from ``tests/servers.py`` (the recipes the integration tests use:
127.0.0.1, free ports, private temp dirs, stopped by PID); the replicator runs as the Procfile
runs it, ``python -m replicator``, configured only through its environment and otherwise on its
defaults. Its slot is dropped when it stops, so the next replicator starts (and backfills) afresh
and no slot pins the WAL of the bulk load.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg2
import sqlalchemy as sa
from clickhouse_driver import Client

from session_core.config import ReplicationSettings
from session_core.db.migrate import upgrade_database
from session_core.db.uow import UnitOfWork
from session_core.models import Environment, EnvironmentType, utcnow
from session_core.replication.ddl import apply_clickhouse_schema
from session_core.services.environments import create_environment
from tests.integration.replication_helpers import ReplicatorProcess
from tests.servers import ClickHouseServer, PostgresServer, free_port, start_clickhouse, start_postgres

__all__ = ["Replicator", "Servers", "clickhouse_dir", "settle_clickhouse"]

DATABASE = "bench"


class Servers:
    """One migrated PostgreSQL database and one ClickHouse database, both named ``bench``."""

    def __init__(self, postgres: PostgresServer, clickhouse: ClickHouseServer) -> None:
        self.postgres = postgres
        self.clickhouse = clickhouse
        postgres.create_database(DATABASE)
        self.database_url = postgres.database_url(DATABASE)
        self.dsn = postgres.database_dsn(DATABASE)
        self.clickhouse_url = f"clickhouse://127.0.0.1:{clickhouse.port}/{DATABASE}"
        self.table = f"{DATABASE}.sessions_v1"
        upgrade_database(self.database_url)
        self.clickhouse_version = apply_clickhouse_schema(self.clickhouse_url).version
        self.engine = sa.create_engine(self.database_url)

    @classmethod
    @contextmanager
    def start(cls, clickhouse_parent: str | None = None) -> Iterator[Servers]:
        """Start both servers; stop them (by PID) and delete their files when the block ends.

        ``clickhouse_parent`` puts ClickHouse's data directory under another directory than the
        system temp dir (which ``tests/servers.py`` uses), e.g. a tmpfs: see ``clickhouse_dir``.
        """
        postgres = start_postgres()
        try:
            clickhouse = _start_clickhouse_under(clickhouse_parent)
            try:
                servers = cls(postgres, clickhouse)
                try:
                    yield servers
                finally:
                    servers.engine.dispose()
            finally:
                clickhouse.stop()
        finally:
            postgres.stop()

    def environment(self, slug: str) -> Environment:
        """A new PRODUCTION environment (all share the installation's organisation and project)."""
        return create_environment(UnitOfWork(self.engine), slug, EnvironmentType.PRODUCTION, utcnow())

    def describe(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            settings = {
                name: conn.exec_driver_sql(f"SHOW {name}").scalar_one()
                for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers", "wal_level")
            }
        clickhouse = {"version": self.clickhouse_version, **clickhouse_dir(self.clickhouse)}
        return {"postgres": settings, "clickhouse": clickhouse}

    def drop_slot(self, slot: str, timeout: float = 10.0) -> None:
        """Drop ``slot`` once its consumer has let go of it (that takes a moment after it exits)."""
        deadline = time.monotonic() + timeout
        with closing(psycopg2.connect(self.dsn)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                while True:
                    cur.execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                        " WHERE slot_name = %s AND active_pid IS NULL",
                        (slot,),
                    )
                    cur.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
                    if cur.fetchone() is None:
                        return
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"replication slot {slot} still in use after {timeout:.0f} s")
                    time.sleep(0.1)


def _start_clickhouse_under(parent: str | None) -> ClickHouseServer:
    previous = tempfile.tempdir
    tempfile.tempdir = parent or previous  # where tests.servers' mkdtemp puts the server's files
    try:
        return start_clickhouse()
    finally:
        tempfile.tempdir = previous


def clickhouse_dir(server: ClickHouseServer) -> dict[str, str]:
    """Which filesystem holds ClickHouse's parts, and for ext4 whether it keeps a journal.

    Every insert writes a part of some 60 files and merges delete them again; on ext4 without a
    journal each new inode then scans for recently deleted ones (``find_inode_bit`` →
    ``recently_deleted``), which ``perf`` showed taking most of the server's CPU in the lag phase.
    """
    df = subprocess.run(
        ["df", "--output=source,fstype,target", str(server.base)], capture_output=True, text=True, check=True
    )
    device, fs_type, mount_point = df.stdout.splitlines()[-1].split()
    journal = Path(f"/sys/fs/ext4/{Path(device).name}/journal_task")
    if fs_type == "ext4" and journal.exists():
        fs_type += " without a journal" if journal.read_text().strip() == "<none>" else " with a journal"
    return {"path": str(server.base), "mount": mount_point, "filesystem": fs_type}


class Replicator:
    """``python -m replicator``, on its defaults bar ``overrides``, metrics on a free port."""

    def __init__(self, servers: Servers, overrides: dict[str, str] | None = None) -> None:
        self._servers = servers
        self._log_dir = Path(tempfile.mkdtemp(prefix="bench-replicator-"))
        port = free_port()
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": servers.database_url,
            "CLICKHOUSE_URL": servers.clickhouse_url,
            "SESSION_REPLICATION_METRICS_PORT": str(port),
            **(overrides or {}),
        }
        self._process = ReplicatorProcess(env, self._log_dir / "replicator.log")

    def __enter__(self) -> Replicator:
        self._process.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._process.stop()
            self._servers.drop_slot(ReplicationSettings().slot_name)
        finally:
            if exc_type is not None:
                print(f"replicator log:\n{self._process.log()[-4000:]}")
            shutil.rmtree(self._log_dir, ignore_errors=True)

    @property
    def pid(self) -> int:
        return self._process.pid

    def wait_for(self, fragment: str, timeout: float) -> None:
        """Wait (bounded) for ``fragment`` in the replicator's log; fail if it exits first."""
        self._process.wait_for_log(fragment, timeout)


def settle_clickhouse(servers: Servers, timeout: float) -> dict[str, Any]:
    """Wait (bounded) until ClickHouse has no merge running, so lists are timed on a quiet table.

    Returns how long that took and how many active parts the table was left with (``FINAL``
    merges parts at read time, so the count matters).
    """
    client = Client("127.0.0.1", port=servers.clickhouse.port)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            [(merges,)] = client.execute(
                "SELECT count() FROM system.merges WHERE database = %(db)s", {"db": DATABASE}
            )
            if not merges:
                break
            time.sleep(0.5)
        [(parts, partitions)] = client.execute(
            "SELECT count(), uniqExact(partition) FROM system.parts"
            " WHERE database = %(db)s AND table = 'sessions_v1' AND active",
            {"db": DATABASE},
        )
    finally:
        client.disconnect()
    return {
        "waited_s": round(time.monotonic() - started, 1),
        "active_parts": parts,
        "partitions": partitions,
    }
