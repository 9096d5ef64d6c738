"""Reading a channel, and trimming it: the same statements on SQLite and PostgreSQL.

Statements are built once, at import: building and cache-keying them per call cost more CPU than
running them. Rows come from the driver as they are (``_driver_rows``), and a read never holds
more than its byte budget plus one record in memory, however large the bodies are.
"""

from __future__ import annotations

import json
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from session_core.channels.records import MAX_POSITION, StreamPosition
from session_core.db.tables import channel_parts, channel_records, channels
from session_core.models import ChannelRecord

_KEY: sa.BindParameter[str] = sa.bindparam("k")
_TAIL = sa.select(channels.c.next_seq, channels.c.last_timestamp).where(channels.c.key == _KEY)
_ROW_LIMIT: sa.BindParameter[int] = sa.bindparam("row_limit")
# The first record at or after start_seq: an index lookup whatever the table's statistics say.
_FIRST_FROM = (
    sa.select(sa.func.min(channel_records.c.seq_num))
    .where(channel_records.c.channel_key == _KEY, channel_records.c.seq_num >= sa.bindparam("start_seq"))
    .scalar_subquery()
)


class _StoredBytes(sa.sql.functions.FunctionElement[int]):
    """``stored_bytes(body, headers)``: a record's size in the database, UTF-8 bytes of its body
    plus its headers' JSON text, without loading either into the client (PostgreSQL reads a
    TOASTed value's length from its header)."""

    type = sa.BigInteger()
    name = "stored_bytes"
    inherit_cache = True


@compiles(_StoredBytes)
def _stored_bytes_postgresql(element: _StoredBytes, compiler: SQLCompiler, **kw: Any) -> str:
    body, headers = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(octet_length({body}) + coalesce(octet_length(CAST({headers} AS TEXT)), 0))"


@compiles(_StoredBytes, "sqlite")
def _stored_bytes_sqlite(element: _StoredBytes, compiler: SQLCompiler, **kw: Any) -> str:
    body, headers = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(length(CAST({body} AS BLOB)) + coalesce(length(CAST({headers} AS BLOB)), 0))"


# A channel's seq_nums have no gap from its first kept record on, so the range from that record
# holds the rows wanted. Bounding the range, not only the LIMIT, keeps a read at `row_limit` rows
# in any plan: on a channel the statistics underestimate (a fresh table, a long channel among
# many), PostgreSQL would otherwise fetch and sort the channel's whole remainder for each batch.
_IN_RANGE = (
    channel_records.c.channel_key == _KEY,
    channel_records.c.seq_num >= _FIRST_FROM,
    channel_records.c.seq_num < _FIRST_FROM + _ROW_LIMIT,
)
# The same range's running total of stored bytes, read from sizes alone (no bodies): the last
# record a read returns is the first whose total reaches `max_bytes`, so a read holds at most
# `max_bytes` plus one record, however large the bodies are.
_RUNNING_BYTES = (
    sa.select(
        channel_records.c.seq_num,
        sa.func.sum(_StoredBytes(channel_records.c.body, channel_records.c.headers))
        .over(order_by=channel_records.c.seq_num, rows=(None, 0))
        .label("upto"),
    )
    .where(*_IN_RANGE)
    .subquery("sized")
)
_LAST_WITHIN_BYTES = (
    sa.select(sa.func.coalesce(sa.func.min(_RUNNING_BYTES.c.seq_num), MAX_POSITION))
    .where(_RUNNING_BYTES.c.upto >= sa.bindparam("max_bytes"))
    .scalar_subquery()
)
_READ = (
    sa.select(
        channel_records.c.seq_num,
        channel_records.c.timestamp,
        channel_records.c.headers,
        channel_records.c.body,
    )
    .where(*_IN_RANGE, channel_records.c.seq_num <= _LAST_WITHIN_BYTES)
    .order_by(channel_records.c.seq_num)
    .limit(_ROW_LIMIT)
)
_RECORDS_FROM = _READ.subquery("r")
# The tail and the records after a point in one statement, so in one snapshot and one round trip.
# The records are a derived table with the key as a parameter, not a LATERAL join: SQLite has none.
_READ_WITH_TAIL = (
    sa.select(
        channels.c.next_seq,
        channels.c.last_timestamp,
        _RECORDS_FROM.c.seq_num,
        _RECORDS_FROM.c.timestamp,
        _RECORDS_FROM.c.headers,
        _RECORDS_FROM.c.body,
    )
    .select_from(channels.outerjoin(_RECORDS_FROM, sa.true()))
    .where(channels.c.key == _KEY)
    .order_by(_RECORDS_FROM.c.seq_num)
)
_FIRST_AT = (
    sa.select(channel_records.c.seq_num)
    .where(channel_records.c.channel_key == _KEY, channel_records.c.timestamp >= sa.bindparam("at"))
    .order_by(channel_records.c.seq_num)
    .limit(1)
)
_TRIM = channel_records.delete().where(
    channel_records.c.channel_key == _KEY, channel_records.c.seq_num < sa.bindparam("before_seq")
)
_SWEEP = channel_parts.delete().where(
    channel_parts.c.channel_key == _KEY, channel_parts.c.created_at <= sa.bindparam("expired_before")
)


def _bounded(position: int) -> int:
    """A seq_num or timestamp a caller asked about, within what a 64-bit column holds (SQLite
    refuses a larger parameter; nothing is stored past it, so reads there find nothing)."""
    return min(position, MAX_POSITION)


def _headers(stored: list[list[str]] | str | None) -> list[list[str]]:
    """A record's headers as the driver hands them over: a list (psycopg2 decodes JSONB), JSON text
    (SQLite), or NULL for none."""
    if stored is None:
        return []
    if isinstance(stored, str):
        decoded: list[list[str]] = json.loads(stored)
        return decoded
    return stored


def read(
    conn: sa.Connection, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
) -> list[ChannelRecord]:
    """Return up to ``limit`` records of ``key`` from ``start_seq`` on, in seq_num order, and
    no more than ``max_bytes`` plus one record (see ``stored_bytes``): the database stops
    there, so a read of huge records never holds more than that in memory."""
    rows = _driver_rows(conn, _READ, _read_parameters(key, start_seq, limit, max_bytes))
    return [
        ChannelRecord(seq_num, timestamp, body, _headers(headers))
        for seq_num, timestamp, headers, body in rows
    ]


def read_with_tail(
    conn: sa.Connection, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
) -> tuple[list[ChannelRecord], StreamPosition]:
    """``read`` and ``tail`` at once, seen from one snapshot: the tail is past every record returned."""
    rows = _driver_rows(conn, _READ_WITH_TAIL, _read_parameters(key, start_seq, limit, max_bytes))
    if not rows:
        return [], StreamPosition(0, 0)
    records = [
        ChannelRecord(seq_num, timestamp, body, _headers(headers))
        for _, _, seq_num, timestamp, headers, body in rows
        if seq_num is not None
    ]
    return records, StreamPosition(rows[0][0], rows[0][1])


def _read_parameters(key: str, start_seq: int, limit: int, max_bytes: int) -> dict[str, Any]:
    # At least one byte, so the first record always comes (a reader always makes progress).
    return {
        "k": key,
        "start_seq": _bounded(start_seq),
        "row_limit": limit,
        "max_bytes": max(1, max_bytes),
    }


def _driver_rows(conn: sa.Connection, statement: sa.Executable, parameters: dict[str, Any]) -> list[Any]:
    """Rows as the driver returns them. Catch-up reads are thousands of rows, and SQLAlchemy's
    per-row processing cost as much as fetching them; ``_headers`` does the one conversion needed."""
    result = conn.execute(statement, parameters)
    try:
        return cast(list[Any], result.cursor.fetchall())
    finally:
        result.close()


def tail(conn: sa.Connection, key: str) -> StreamPosition:
    """Return the seq_num the next record will get and the last record's timestamp (0, 0 if new)."""
    row = conn.execute(_TAIL, {"k": key}).first()
    return StreamPosition(0, 0) if row is None else StreamPosition(row.next_seq, row.last_timestamp)


def first_seq_at(conn: sa.Connection, key: str, timestamp: int) -> int:
    """The seq_num of the first record stamped at or after ``timestamp``; the tail if none is.

    Timestamps never decrease along a channel, so this is where a read "from a time" starts.
    """
    found = conn.execute(_FIRST_AT, {"k": key, "at": _bounded(timestamp)}).scalar()
    return tail(conn, key).seq_num if found is None else int(found)


def trim(conn: sa.Connection, key: str, before_seq: int) -> None:
    """Delete the records of ``key`` below ``before_seq``; their seq_nums are never handed out again."""
    conn.execute(_TRIM, {"k": key, "before_seq": _bounded(before_seq)})


def sweep_part_ids(conn: sa.Connection, key: str, expired_before: int) -> None:
    """Forget the part ids of ``key`` remembered at or before ``expired_before`` (their TTL is over)."""
    conn.execute(_SWEEP, {"k": key, "expired_before": expired_before})
