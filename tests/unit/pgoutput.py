"""Build pgoutput v1 payloads by hand, byte for byte as PostgreSQL's walsender sends them."""

import struct
from datetime import UTC, datetime, timedelta

from session_core.db import tables

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
TEXT, INT4, BOOL, TIMESTAMP, TEXT_ARRAY, JSONB = 25, 23, 16, 1114, 1009, 3802

# The oid each ``sessions`` column has in PostgreSQL, in table order.
_SESSIONS_OIDS = {
    "trigger_config": JSONB,
    "tags": TEXT_ARRAY,
    "metadata": JSONB,
    "current_run_version": INT4,
    "closed_at": TIMESTAMP,
    "expires_at": TIMESTAMP,
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
}
SESSIONS_COLUMNS = [(c.name, _SESSIONS_OIDS.get(c.name, TEXT)) for c in tables.sessions.columns]


def _cstr(value: str) -> bytes:
    return value.encode() + b"\0"


def _micros(moment: datetime) -> int:
    return (moment - PG_EPOCH) // timedelta(microseconds=1)


def relation(relid: int, columns: list[tuple[str, int]], namespace="public", name="sessions", identity="f"):
    body = b"R" + struct.pack("!I", relid) + _cstr(namespace) + _cstr(name) + identity.encode()
    body += struct.pack("!h", len(columns))
    for i, (column, oid) in enumerate(columns):
        body += struct.pack("!B", 1 if i == 0 else 0) + _cstr(column) + struct.pack("!Ii", oid, -1)
    return body


def begin(final_lsn: int, when: datetime, xid: int = 700) -> bytes:
    return b"B" + struct.pack("!QqI", final_lsn, _micros(when), xid)


def commit(commit_lsn: int, end_lsn: int, when: datetime) -> bytes:
    return b"C" + struct.pack("!BQQq", 0, commit_lsn, end_lsn, _micros(when))


def tuple_data(values: list) -> bytes:
    """``None`` is NULL, ``...`` is an unchanged TOAST value, bytes are binary, str is text."""
    body = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            body += b"n"
        elif value is Ellipsis:
            body += b"u"
        elif isinstance(value, bytes):
            body += b"b" + struct.pack("!i", len(value)) + value
        else:
            encoded = value.encode()
            body += b"t" + struct.pack("!i", len(encoded)) + encoded
    return body


def insert(relid: int, values: list) -> bytes:
    return b"I" + struct.pack("!I", relid) + b"N" + tuple_data(values)


def update(relid: int, new: list, old: list | None = None, old_kind: str = "O") -> bytes:
    body = b"U" + struct.pack("!I", relid)
    if old is not None:
        body += old_kind.encode() + tuple_data(old)
    return body + b"N" + tuple_data(new)


def delete(relid: int, old: list, old_kind: str = "O") -> bytes:
    return b"D" + struct.pack("!I", relid) + old_kind.encode() + tuple_data(old)


def truncate(relids: list[int], options: int = 0) -> bytes:
    return b"T" + struct.pack("!iB", len(relids), options) + b"".join(struct.pack("!I", r) for r in relids)


def session_values(**overrides: str | None) -> list:
    """A ``sessions`` row in text output format, as pgoutput sends it."""
    row = {
        "id": "cabc",
        "friendly_id": "session_cabc",
        "external_id": None,
        "type": "chat.agent",
        "task_identifier": "agent",
        "trigger_config": '{"basePayload": {}}',
        "tags": "{}",
        "metadata": None,
        "organization_id": "org",
        "project_id": "proj",
        "environment_id": "env",
        "environment_type": "DEVELOPMENT",
        "current_run_id": None,
        "current_run_version": "0",
        "closed_at": None,
        "closed_reason": None,
        "expires_at": None,
        "created_at": "2026-11-25 12:00:00.123",
        "updated_at": "2026-11-25 12:00:00.123",
    }
    row.update(overrides)
    return [row[name] for name, _ in SESSIONS_COLUMNS]
