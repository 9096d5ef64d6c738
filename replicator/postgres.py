"""The PostgreSQL side of the replicator: connections, preflight checks, publication, slot, leader lock.

Every misconfiguration an operator can fix raises ``SetupError`` with one line that says what is
wrong and the statement that fixes it; the worker prints it and exits instead of retrying.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from session_core.replication.decode import parse_lsn

logger = logging.getLogger(__name__)

TABLE_SCHEMA = "public"
TABLE_NAME = "sessions"
PUBLISHED_OPERATIONS = "insert, update, delete"
# Timestamps must come out of pgoutput in ISO format whatever the server's defaults are.
_SESSION_OPTIONS = "-c DateStyle=ISO,YMD -c TimeZone=UTC"
_APPLICATION_NAME = "sessions-replicator"
_CONNECT_TIMEOUT_SECONDS = 10  # an unreachable host fails (and is retried) instead of hanging


class SetupError(RuntimeError):
    """PostgreSQL is not set up the way replication needs; the message is one line with the fix."""


def libpq_dsn(database_url: str) -> str:
    """Turn a SQLAlchemy ``postgresql+psycopg2://`` URL into a libpq DSN for psycopg2."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise SetupError(f"DATABASE_URL is not a database URL: {database_url!r}") from None
    if url.get_backend_name() != "postgresql":
        raise SetupError(
            f"DATABASE_URL must point at PostgreSQL (the replicator reads its write-ahead log), "
            f"got a {url.get_backend_name()} URL"
        )
    params = {key: value if isinstance(value, str) else value[-1] for key, value in url.query.items()}
    parts: dict[str, object] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }
    params.update({key: str(part) for key, part in parts.items() if part is not None})
    return str(psycopg2.extensions.make_dsn(**params))


def connect(dsn: str) -> psycopg2.extensions.connection:
    """A normal autocommit connection, for checks, setup and the leader lock."""
    conn = psycopg2.connect(
        dsn,
        application_name=_APPLICATION_NAME,
        options=_SESSION_OPTIONS,
        connect_timeout=_CONNECT_TIMEOUT_SECONDS,
    )
    conn.autocommit = True
    return conn


def connect_replication(dsn: str) -> psycopg2.extras.LogicalReplicationConnection:
    return psycopg2.connect(
        dsn,
        connection_factory=psycopg2.extras.LogicalReplicationConnection,
        application_name=_APPLICATION_NAME,
        options=_SESSION_OPTIONS,
        connect_timeout=_CONNECT_TIMEOUT_SECONDS,
    )


def _fetch(
    conn: psycopg2.extensions.connection, sql: str, params: tuple[object, ...] = ()
) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def check_wal_level(conn: psycopg2.extensions.connection) -> None:
    [(level,)] = _fetch(conn, "SHOW wal_level")
    if level != "logical":
        raise SetupError(
            f"PostgreSQL runs with wal_level={level}; logical replication needs wal_level=logical: "
            "run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
        )


def check_replica_identity(conn: psycopg2.extensions.connection) -> None:
    """Deletes must carry the whole old row: its sorting key places the ClickHouse tombstone."""
    rows = _fetch(
        conn,
        "SELECT c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (TABLE_SCHEMA, TABLE_NAME),
    )
    if not rows:
        raise SetupError(f"table {TABLE_SCHEMA}.{TABLE_NAME} does not exist: run `sessions migrate` first")
    if rows[0][0] != "f":
        raise SetupError(
            f"table {TABLE_SCHEMA}.{TABLE_NAME} must have REPLICA IDENTITY FULL so deletes carry whole rows: "
            f"run ALTER TABLE {TABLE_SCHEMA}.{TABLE_NAME} REPLICA IDENTITY FULL"
        )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ensure_publication(conn: psycopg2.extensions.connection, name: str) -> None:
    """Create the publication, or check that an existing one publishes exactly what we need."""
    quoted = _quote(name)
    table = f"{TABLE_SCHEMA}.{TABLE_NAME}"
    found = _fetch(
        conn,
        "SELECT puballtables, pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = %s",
        (name,),
    )
    if not found:
        _fetch(
            conn, f"CREATE PUBLICATION {quoted} FOR TABLE {table} WITH (publish = '{PUBLISHED_OPERATIONS}')"
        )
        logger.info("publication created name=%s table=%s", name, table)
        return
    all_tables, inserts, updates, deletes = found[0]
    if all_tables:
        raise SetupError(
            f"publication {name} is FOR ALL TABLES but must publish only {table}: "
            f"run DROP PUBLICATION {quoted}; DROP the replication slot; then restart the replicator"
        )
    tables = sorted(
        f"{schema}.{tablename}"
        for schema, tablename in _fetch(
            conn, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (name,)
        )
    )
    if tables != [table]:
        raise SetupError(
            f"publication {name} publishes {', '.join(tables) or 'no tables'} but must publish only {table}: "
            f"run ALTER PUBLICATION {quoted} SET TABLE {table}"
        )
    if not (inserts and updates and deletes):
        raise SetupError(
            f"publication {name} must publish inserts, updates and deletes: "
            f"run ALTER PUBLICATION {quoted} SET (publish = '{PUBLISHED_OPERATIONS}')"
        )


def slot_exists(conn: psycopg2.extensions.connection, name: str) -> bool:
    """Whether our slot exists; one of the same name but another plugin or database is an error."""
    found = _fetch(
        conn,
        "SELECT plugin, database, current_database() FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    )
    if not found:
        return False
    plugin, database, current = found[0]
    if plugin != "pgoutput" or database != current:
        raise SetupError(
            f"replication slot {name} belongs to plugin {plugin} in database {database}, not pgoutput in "
            f"{current}: run SELECT pg_drop_replication_slot('{name}') or set SESSION_REPLICATION_SLOT_NAME"
        )
    return True


def create_slot(conn: psycopg2.extensions.connection, name: str) -> None:
    """Create the logical slot; it must come after the publication (infra.md, replication gotchas)."""
    _fetch(conn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    logger.info("replication slot created name=%s", name)


def confirmed_flush_lsn(conn: psycopg2.extensions.connection, name: str) -> int:
    """The slot's acknowledged position: every change at or before it is already in ClickHouse."""
    [(lsn,)] = _fetch(
        conn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (name,)
    )
    return parse_lsn(lsn)


# The backfill state lives on the publication, so it survives a crash between its steps.
_BACKFILL_PENDING = "sessions-replicator: backfill pending"
_BACKFILL_DONE = "sessions-replicator: backfill done"


def mark_backfill(conn: psycopg2.extensions.connection, publication: str, *, pending: bool) -> None:
    text = _BACKFILL_PENDING if pending else _BACKFILL_DONE
    _fetch(conn, f"COMMENT ON PUBLICATION {_quote(publication)} IS %s", (text,))


def is_backfill_pending(conn: psycopg2.extensions.connection, publication: str) -> bool:
    [(comment,)] = _fetch(
        conn,
        "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
        (publication,),
    )
    return bool(comment == _BACKFILL_PENDING)


def try_lock(conn: psycopg2.extensions.connection, lock_id: int) -> bool:
    """Take the leader lock without waiting; it is held until ``conn`` closes (or its process dies)."""
    [(locked,)] = _fetch(conn, "SELECT pg_try_advisory_lock(%s)", (lock_id,))
    return bool(locked)
