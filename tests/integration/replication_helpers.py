"""Helpers for the replicator tests: the worker as a subprocess, session writes, ClickHouse reads.

Every process started here is stopped by its PID; every wait is bounded in time.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import sqlalchemy as sa
from clickhouse_driver import Client

from session_core.db import tables
from session_core.ids import generate_cuid, session_friendly_id
from session_core.models import utcnow
from tests.servers import ClickHouseServer, PostgresServer, free_port, pg_bindir, wait_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(interval)


class ReplicatorProcess:
    """``python -m replicator`` with a given environment, its stdout+stderr in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ReplicatorProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "replicator"],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, fragment: str, timeout: float = 15.0) -> None:
        def seen() -> bool:
            if fragment in self.log():
                return True
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"replicator exited with {self.proc.returncode}:\n{self.log()}")
            return False

        wait_until(seen, timeout, what=f"{fragment!r} in the replicator log")

    def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful: flush, ack, exit) and return the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or acknowledged on the way out."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it does not leave in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


def prepare_sessions_table(database_url: str) -> sa.Engine:
    """Create the schema the way the migration leaves it, REPLICA IDENTITY FULL included."""
    engine = sa.create_engine(database_url)
    tables.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE sessions REPLICA IDENTITY FULL")
    return engine


def session_row(**overrides: Any) -> dict[str, Any]:
    cuid = generate_cuid()
    now = utcnow()
    row = {
        "id": cuid,
        "friendly_id": session_friendly_id(cuid),
        "external_id": None,
        "type": "chat.agent",
        "task_identifier": "agent",
        "trigger_config": {"basePayload": {}},
        "tags": [],
        "metadata": None,
        "organization_id": "org",
        "project_id": "proj",
        "environment_id": "env",
        "environment_type": "DEVELOPMENT",
        "current_run_id": None,
        "current_run_version": 0,
        "closed_at": None,
        "closed_reason": None,
        "expires_at": None,
        "created_at": now,
        "updated_at": now,
    }
    row.update(overrides)
    return row


def insert_sessions(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(tables.sessions.insert(), rows)


def close_session(conn: sa.Connection, session_id: str, reason: str) -> datetime:
    closed_at = utcnow()
    conn.execute(
        tables.sessions.update()
        .where(tables.sessions.c.id == session_id)
        .values(closed_at=closed_at, closed_reason=reason, updated_at=closed_at)
    )
    return closed_at


def current_wal_lsn(conn: sa.Connection) -> int:
    text = conn.exec_driver_sql("SELECT pg_current_wal_lsn()::text").scalar_one()
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def slot_state(engine: sa.Engine, slot: str) -> tuple[int | None, int | None]:
    """(confirmed_flush_lsn as an integer, active_pid) of ``slot``."""
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT confirmed_flush_lsn::text, active_pid FROM pg_replication_slots WHERE slot_name = %(s)s",
            {"s": slot},
        ).one_or_none()
    if row is None or row[0] is None:
        return None, None
    high, low = row[0].split("/")
    return (int(high, 16) << 32) | int(low, 16), row[1]


class ClickHouseReader:
    def __init__(self, port: int, database: str) -> None:
        self.client = Client("127.0.0.1", port=port)
        self.database = database
        self.table = f"{database}.sessions_v1"

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        rows, columns = self.client.execute(
            sql.format(table=self.table), params or {}, with_column_types=True
        )
        names = [name for name, _ in columns]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def current(self) -> dict[str, dict[str, Any]]:
        """Live sessions as a reader of sessions_v1 sees them: FINAL, tombstones hidden."""
        try:
            rows = self.query("SELECT * FROM {table} FINAL WHERE _is_deleted = 0")
        except Exception as exc:  # the replicator creates the table; until then there is nothing
            if "doesn't exist" in str(exc):
                return {}
            raise
        return {row["session_id"]: row for row in rows}

    def final(self) -> dict[str, dict[str, Any]]:
        """Latest version of every session, tombstones included."""
        return {row["session_id"]: row for row in self.query("SELECT * FROM {table} FINAL")}

    def close(self) -> None:
        self.client.disconnect()

    def drop(self) -> None:
        self.client.execute(f"DROP DATABASE IF EXISTS {self.database}")
        self.close()


def restart_clickhouse(server: ClickHouseServer) -> None:
    """Start a stopped private ClickHouse again on the same port and data directory."""
    binary = shutil.which("clickhouse-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    assert binary is not None
    with open(server.base / "stdout.log", "ab") as out:
        server.proc = subprocess.Popen(
            [binary, f"--config-file={server.base}/config.xml"], stdout=out, stderr=out
        )
    server.pid = server.proc.pid
    wait_port(server.port, server.proc)


def crash_clickhouse(server: ClickHouseServer) -> None:
    """SIGKILL the server by PID but keep its files, so ``restart_clickhouse`` can bring it back.

    (A SIGTERM would wait ~10 s for the replicator's idle connection to go away.)
    """
    server.proc.kill()
    server.proc.wait(10)


def start_postgres_without_logical_wal() -> PostgresServer:
    """A private cluster left at the default wal_level=replica, for the misconfiguration test."""
    bindir = pg_bindir()
    base = Path(tempfile.mkdtemp(prefix="sessions-pg-replica-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
    data, port = base / "data", free_port()
    subprocess.run(
        [*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c wal_level=replica -c fsync=off"
    subprocess.run(
        [
            *as_postgres,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "log"),
            "-w",
            "-o",
            options,
            "start",
        ],
        check=True,
        capture_output=True,
    )
    pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    return PostgresServer(bindir, base, port, pid)


def publication_exists(dsn: str, name: str) -> bool:
    with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,))
        return cur.fetchone() is not None
