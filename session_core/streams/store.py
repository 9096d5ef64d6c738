"""Channel records: the ``StreamStore`` port and its SQL implementation (SQLite and PostgreSQL).

A channel is an append-only log in S2's shape: every record gets a ``seq_num`` that starts at 0
and grows by one per record, never repeating and never leaving a gap, even after a trim.

An append works inside the caller's transaction and never commits; the unit of work commits (or,
in an autocommitting unit of work on PostgreSQL, the append's one query string is its own
transaction) and only then may the append be acknowledged. Several callers' appends to one
channel can be written as one group (``append_group``: one counter move, one insert), each still
getting its own ack. A group:

1. locks the channel's ``channels`` row (creating it on first use). Every appender of a channel
   queues on that lock, which is what makes ``next_seq`` gap-free under concurrency;
2. answers each retried part id (seen on the channel within the TTL, or earlier in the group) with
   the first append's position, writing nothing for it;
3. checks ``match_seq_num`` (S2's optimistic append);
4. moves the counter, inserts the records and remembers the part ids;
5. announces the new tail: ``pg_notify`` on PostgreSQL (delivered on commit to every process) and
   the ``on_appended`` callback with the records written, which the unit of work turns into an
   in-process wake-up that spares this process's readers a read.

``append_while_open`` also reads the session the channel belongs to, with a shared lock, and
writes only while it is open (``OpenSession``). On PostgreSQL all of it is one round trip
(``_PgAppend``); on SQLite, which runs in-process under the write lock ``BEGIN IMMEDIATE`` took,
a few prebuilt statements.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from session_core.db.tables import channel_parts, channel_records, channels
from session_core.errors import InvalidInput, VersionMismatch
from session_core.ids import is_session_friendly_id
from session_core.models import ChannelRecord, Io, Session, SessionStatus, session_status
from session_core.repositories.sql import SESSION_COLUMNS, SqlSessionRepository, session_from_columns
from session_core.streams.wakeups import pg_notify_tail_sql
from session_core.text import is_storable

DEFAULT_PART_ID_TTL_MS = 5 * 60 * 1000
# PostgreSQL's btree entries stop near 2,700 bytes; an externalId (at most 256 chars) stays far below.
MAX_KEY_BYTES = 2048
#: seq_nums and timestamps are 64-bit integers in every backend; positions past it hold nothing.
MAX_POSITION = 2**63 - 1


def stream_name(addressing_key: str, io: Io) -> str:
    """The S2 stream name of a session channel, relative to its environment (wire reference §7)."""
    return f"sessions/{addressing_key}/{io}"


def channel_key(environment_id: str, addressing_key: str, io: Io) -> str:
    """The store key of a session channel: ``{environmentId}/sessions/{addressingKey}/{io}``.

    The environment id keeps equal externalIds of different environments apart; what follows it is
    the stream name that ``PUT`` hands out, so the S2-compatible endpoint maps a token's stream
    to its key by prefixing the environment id.
    """
    return f"{environment_id}/{stream_name(addressing_key, io)}"


@dataclass(frozen=True)
class NewRecord:
    """A record to append. ``timestamp`` is the client's, in epoch ms; None means arrival time."""

    body: str
    headers: list[list[str]] = field(default_factory=list)
    timestamp: int | None = None


@dataclass(frozen=True)
class Append:
    """One caller's append within a group: its records, and its part id (``X-Part-Id``) if any."""

    records: Sequence[NewRecord]
    part_id: str | None = None


@dataclass(frozen=True)
class OpenSession:
    """The session a guarded append (``append_while_open``) is for, and when it must be open.

    The append goes ahead only if the session ``addressing_key`` names exists in
    ``environment_id``, has that addressing key (its externalId, else its friendly id: so the
    caller knew the channel's key), and is neither closed nor expired at ``active_at``.
    """

    environment_id: str
    addressing_key: str
    active_at: datetime

    def holds_for(self, session: Session) -> bool:
        return (
            session.addressing_key == self.addressing_key
            and session_status(session, self.active_at) is SessionStatus.ACTIVE
        )


@dataclass(frozen=True)
class StreamPosition:
    """A point in a channel as S2 reports it: a seq_num and the timestamp of the record before it."""

    seq_num: int
    timestamp: int


@dataclass(frozen=True, eq=False)
class ReadBatch:
    """Records of a channel and its tail, which is never behind the last record.

    Compared by identity: one batch is handed to every reader that wants it, and they cache what
    they derive from it (its SSE encoding) by the batch.
    """

    records: list[ChannelRecord]
    tail: StreamPosition


@dataclass(frozen=True)
class AppendAck:
    """Where an append landed: ``start`` inclusive, ``end`` exclusive, ``tail`` after the append.

    ``is_duplicate`` marks a retried part id: the positions are the first append's and nothing
    was written this time.
    """

    start: StreamPosition
    end: StreamPosition
    tail: StreamPosition
    is_duplicate: bool = False


@dataclass(frozen=True)
class GuardedAppend:
    """What a guarded append found: the session as it read it (None if there is none), and the
    acks, or None when the session did not hold and nothing was written."""

    session: Session | None
    acks: list[AppendAck] | None


class SeqNumMismatch(VersionMismatch):
    """Raised when an append's ``match_seq_num`` is not the channel's tail; ``tail`` is the real one."""

    def __init__(self, match_seq_num: int, tail: int) -> None:
        super().__init__(f"match_seq_num {match_seq_num} does not match the tail seq_num {tail}")
        self.tail = tail


class StreamStore(Protocol):
    """Append-only channels addressed by key. Implementations work inside the caller's transaction.

    ``SqlChannelStore`` is the one in production, ``streams.memory.MemoryChannelStore`` the unit
    tests' fake; ``tests/integration/test_store_contract.py`` holds both to one contract.
    """

    def append(
        self,
        key: str,
        records: Sequence[NewRecord],
        *,
        now_ms: int,
        match_seq_num: int | None = None,
        part_id: str | None = None,
        part_id_ttl_ms: int = DEFAULT_PART_ID_TTL_MS,
    ) -> AppendAck: ...

    def append_group(
        self,
        key: str,
        appends: Sequence[Append],
        *,
        now_ms: int,
        part_id_ttl_ms: int = DEFAULT_PART_ID_TTL_MS,
    ) -> list[AppendAck]: ...

    def append_while_open(
        self,
        session: OpenSession,
        io: Io,
        appends: Sequence[Append],
        *,
        now_ms: int,
        part_id_ttl_ms: int = DEFAULT_PART_ID_TTL_MS,
    ) -> GuardedAppend: ...

    def read(
        self, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
    ) -> list[ChannelRecord]: ...

    def tail(self, key: str) -> StreamPosition: ...

    def read_with_tail(
        self, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
    ) -> tuple[list[ChannelRecord], StreamPosition]: ...

    def first_seq_at(self, key: str, timestamp: int) -> int: ...

    def trim(self, key: str, before_seq: int) -> None: ...


def wanted_timestamps(records: Sequence[NewRecord], now_ms: int) -> list[int]:
    """Each record's timestamp before the channel's last one is known: the running maximum of the
    client timestamps (capped at arrival time) or arrival time.

    ``max(previous, wanted)`` is then the stored timestamp, which PostgreSQL computes inside the
    append statement, where ``previous`` is first read.
    """
    wanted, last = [], 0
    for record in records:
        last = max(last, now_ms if record.timestamp is None else min(record.timestamp, now_ms))
        wanted.append(last)
    return wanted


def assign_timestamps(records: Sequence[NewRecord], previous: int, now_ms: int) -> list[int]:
    """Timestamp records as S2's client-prefer mode does.

    A record keeps its client timestamp capped at arrival time (else gets arrival time), and is
    never stamped earlier than the record before it, so timestamps never decrease along a channel.
    """
    return [max(previous, wanted) for wanted in wanted_timestamps(records, now_ms)]


def is_storable_key(key: str) -> bool:
    """Whether every backend can hold (and so look up) channel key ``key``."""
    return len(key.encode("utf-8", "surrogatepass")) <= MAX_KEY_BYTES and is_storable(key)


def validate_append(key: str, append: Append) -> None:
    """Refuse an append every backend cannot store alike: no records, NUL, lone surrogates, huge keys.

    :raise InvalidInput: naming the first offending record, so the client gets a 4xx, never a 500.
    """
    if not is_storable_key(key):
        raise InvalidInput("Channel name is too long or holds characters that cannot be stored")
    if append.part_id is not None and not is_storable(append.part_id):
        raise InvalidInput("The part id holds a NUL character or an unpaired surrogate")
    records = append.records
    if not records:
        raise InvalidInput("An append needs at least one record")
    for index, record in enumerate(records):
        texts = [record.body, *(part for header in record.headers for part in header)]
        if not all(is_storable(text) for text in texts):
            raise InvalidInput(f"Record {index} holds a NUL character or an unpaired surrogate")


@dataclass
class GroupPlan:
    """Which appends of a group write, at which offset from the tail, and which repeat a part id.

    ``seen`` maps an append to the ``(seq_num, created_at)`` its part id got on the channel,
    ``repeats`` to the earlier append of the group with the same part id.
    """

    records: list[NewRecord] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)
    seen: dict[int, tuple[int, int]] = field(default_factory=dict)
    repeats: dict[int, int] = field(default_factory=dict)
    new_parts: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def of(cls, appends: Sequence[Append], seen_parts: Mapping[str, tuple[int, int]]) -> GroupPlan:
        plan = cls()
        first_of_part: dict[str, int] = {}
        for index, item in enumerate(appends):
            part = item.part_id
            if part is not None:
                if part in seen_parts:
                    plan.seen[index] = seen_parts[part]
                    continue
                if part in first_of_part:
                    plan.repeats[index] = first_of_part[part]
                    continue
                first_of_part[part] = index
                plan.new_parts.append((part, len(plan.records)))
            plan.offsets[index] = len(plan.records)
            plan.records.extend(item.records)
        return plan

    def acks(
        self,
        appends: Sequence[Append],
        start_seq: int,
        stamps: Sequence[int],
        tail: StreamPosition,
        now_ms: int,
    ) -> list[AppendAck]:
        """Each append's ack, once the written records start at ``start_seq`` with ``stamps``."""
        acks: dict[int, AppendAck] = {}
        for index, offset in self.offsets.items():
            last = offset + len(appends[index].records)
            start = StreamPosition(start_seq + offset, stamps[offset])
            acks[index] = AppendAck(start, StreamPosition(start_seq + last, stamps[last - 1]), tail)
        repeated = {index: (acks[first].start.seq_num, now_ms) for index, first in self.repeats.items()}
        for index, (seq_num, created_at) in (self.seen | repeated).items():
            start = StreamPosition(seq_num, created_at)
            end = StreamPosition(seq_num + len(appends[index].records), created_at)
            acks[index] = AppendAck(start, end, tail, is_duplicate=True)
        return [acks[index] for index in range(len(appends))]


def _prepared(name: str, sql: str, parameters: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """``PREPARE`` and ``EXECUTE`` texts for ``sql``, written with psycopg2's ``%(name)s``
    placeholders; ``parameters`` lists the names it may use, with their SQL types."""
    used = [(name, kind) for name, kind in parameters if f"%({name})s" in sql]
    positional = sql % {name: f"${n}" for n, (name, _) in enumerate(used, 1)}
    prepare = f"PREPARE {name} ({', '.join(kind for _, kind in used)}) AS {positional}"
    return prepare, f"EXECUTE {name}({', '.join(f'%({name})s' for name, _ in used)})"


def _unprepared(sql: str, parameters: tuple[tuple[str, str], ...]) -> str:
    """``sql`` to run as it is, each placeholder cast to the type ``PREPARE`` would declare for it
    (psycopg2 sends values as literals, and an empty array or a NULL has no type of its own)."""
    return sql % {name: f"CAST(%({name})s AS {kind})" for name, kind in parameters}


class _PgAppend:
    """One PostgreSQL append, as a query string that takes one round trip.

    The first statement creates the channel row on first use, else locks it without writing it
    (ON CONFLICT DO UPDATE locks the conflicting row even when its WHERE is false): appenders of a
    channel queue there. The second runs the append. Both are prepared once per connection, since
    parsing and planning them cost more than running them. The append starts once the lock is
    granted, so its snapshot, taken when it starts, sees every part id earlier lock holders
    committed: ``seen`` is exact, and a seen part id makes it write nothing (the caller plans
    again without it).

    With ``guard_column`` (``friendly_id`` or ``external_id``, the column ``session_ref`` names) the
    append also reads that session with a shared lock, so a racing close commits after it, and
    writes only while the session is open and ``session_ref`` is its addressing key; the channel
    row is then only created for such a session. psycopg2 sends both statements as one string:
    ``run`` executes the prepared ones, ``unprepared`` is the same SQL sent whole each time, for
    connections that cannot keep a prepared statement (a pooler in transaction mode).
    """

    PARAMETERS = (
        ("key", "text"),
        ("count", "bigint"),
        ("wanted", "bigint[]"),
        ("last_wanted", "bigint"),
        ("headers", "text[]"),
        ("bodies", "text[]"),
        ("parts", "text[]"),
        ("part_offsets", "bigint[]"),
        ("has_parts", "boolean"),
        ("fresh_after", "bigint"),
        ("ttl", "bigint"),
        ("now", "bigint"),
        ("match", "bigint"),
    )
    GUARD_PARAMETERS = (("environment_id", "text"), ("session_ref", "text"), ("active_at", "timestamp"))

    def __init__(self, guard_column: str | None = None) -> None:
        self.name = f"sessions_channel_append_{guard_column or 'unguarded'}_v2"
        parameters = self.PARAMETERS + (self.GUARD_PARAMETERS if guard_column else ())
        lock, body = self._lock(guard_column), self._body(guard_column)
        prepare_lock, run_lock = _prepared(f"{self.name}_lock", lock, parameters)
        prepare_append, run_append = _prepared(self.name, body, parameters)
        self.prepare = f"{prepare_lock}; {prepare_append}"
        self.run = f"{run_lock}; {run_append}"
        self.unprepared = f"{_unprepared(lock, parameters)}; {_unprepared(body, parameters)}"

    @staticmethod
    def _session(guard_column: str, columns: str, *, is_open: bool = False) -> str:
        where = f"environment_id = %(environment_id)s AND {guard_column} = %(session_ref)s"
        if is_open:
            where += " AND coalesce(external_id, friendly_id) = %(session_ref)s"
        return f"SELECT {columns} FROM sessions WHERE {where} FOR SHARE"

    def _lock(self, guard_column: str | None) -> str:
        values = "VALUES (%(key)s, 0, 0, 0)"
        if guard_column:
            values = f"SELECT %(key)s, 0, 0, 0 FROM ({self._session(guard_column, '1', is_open=True)}) AS s"
        return (
            f"INSERT INTO channels (key, next_seq, last_timestamp, parts_swept_at) {values}"
            " ON CONFLICT (key) DO UPDATE SET next_seq = channels.next_seq WHERE false"
        )

    def _body(self, guard_column: str | None) -> str:
        session_cte = session_columns = guard = ""
        if guard_column:
            session_cte = f"s AS ({self._session(guard_column, ', '.join(SESSION_COLUMNS))}), "
            session_columns = ", ".join(f"s.{column}" for column in SESSION_COLUMNS) + ","
            is_open = """EXISTS (SELECT 1 FROM s
                WHERE coalesce(s.external_id, s.friendly_id) = %(session_ref)s
                AND s.closed_at IS NULL AND (s.expires_at IS NULL OR s.expires_at >= %(active_at)s))"""
            guard = f"\n              AND {is_open}"
            session_columns += f" {is_open} AS is_open,"
        return f"""
        WITH {session_cte}o AS (
            SELECT next_seq, last_timestamp, parts_swept_at FROM channels WHERE key = %(key)s
        ), seen AS (
            SELECT part_id, seq_num, created_at FROM channel_parts
            WHERE channel_key = %(key)s AND part_id = ANY(%(parts)s) AND created_at > %(fresh_after)s
        ), c AS (
            UPDATE channels SET
                next_seq = o.next_seq + %(count)s,
                last_timestamp = greatest(o.last_timestamp, %(last_wanted)s),
                parts_swept_at = CASE WHEN %(has_parts)s AND %(now)s - o.parts_swept_at >= %(ttl)s
                    THEN %(now)s ELSE o.parts_swept_at END
            FROM o
            WHERE channels.key = %(key)s
              AND NOT EXISTS (SELECT 1 FROM seen)
              AND (%(match)s IS NULL OR o.next_seq = %(match)s){guard}
            RETURNING o.next_seq AS start_seq, o.last_timestamp AS previous,
                channels.next_seq AS tail_seq, channels.last_timestamp AS tail_timestamp,
                %(has_parts)s AND %(now)s - o.parts_swept_at >= %(ttl)s AS is_sweep_due
        ), r AS (
            INSERT INTO channel_records (channel_key, seq_num, timestamp, headers, body)
            SELECT %(key)s, c.start_seq + t.ord - 1, greatest(c.previous, t.wanted), t.headers::jsonb,
                t.body
            FROM c, unnest(%(wanted)s, %(headers)s, %(bodies)s)
                WITH ORDINALITY AS t(wanted, headers, body, ord)
        ), p AS (
            INSERT INTO channel_parts (channel_key, part_id, seq_num, created_at)
            SELECT %(key)s, t.part_id, c.start_seq + t.part_offset, %(now)s
            FROM c, unnest(%(parts)s, %(part_offsets)s) AS t(part_id, part_offset)
            ON CONFLICT (channel_key, part_id)
                DO UPDATE SET seq_num = excluded.seq_num, created_at = excluded.created_at
        ), n AS (
            SELECT {pg_notify_tail_sql("c.tail_seq", "%(key)s")} FROM c
        )
        SELECT {session_columns} o.next_seq, o.last_timestamp, c.start_seq, c.previous, c.tail_seq,
            c.tail_timestamp, c.is_sweep_due,
            seen.part_id AS seen_part, seen.seq_num AS seen_seq, seen.created_at AS seen_at,
            (SELECT count(*) FROM n) AS notified
        FROM (SELECT) AS one {"LEFT JOIN s ON true " if guard_column else ""}LEFT JOIN o ON true
            LEFT JOIN c ON true LEFT JOIN seen ON true
        """


_PG_APPENDS = {column: _PgAppend(column) for column in (None, "friendly_id", "external_id")}
#: ``Connection.info`` key: the names of the statements prepared on that connection, for its whole life.
_PREPARED = "sessions_prepared_statements"

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
# SQLite only: the transaction already holds the database's write lock.
_SQLITE_STATE = sa.select(channels.c.next_seq, channels.c.last_timestamp, channels.c.parts_swept_at).where(
    channels.c.key == _KEY
)
_SQLITE_CREATE = sqlite.insert(channels).on_conflict_do_nothing(index_elements=[channels.c.key])
_SQLITE_SEEN = sa.select(channel_parts.c.part_id, channel_parts.c.seq_num, channel_parts.c.created_at).where(
    channel_parts.c.channel_key == _KEY,
    channel_parts.c.part_id.in_(sa.bindparam("parts", expanding=True)),
    channel_parts.c.created_at > sa.bindparam("fresh_after"),
)
_SQLITE_MOVE = (
    channels.update()
    .where(channels.c.key == _KEY)
    .values(
        next_seq=sa.bindparam("new_next_seq"),
        last_timestamp=sa.bindparam("new_last_timestamp"),
        parts_swept_at=sa.bindparam("new_parts_swept_at"),
    )
)
_SQLITE_INSERT_RECORDS = channel_records.insert()
_sqlite_remember = sqlite.insert(channel_parts)
# An expired row under the same part id may still be there: take it over.
_SQLITE_REMEMBER = _sqlite_remember.on_conflict_do_update(
    index_elements=[channel_parts.c.channel_key, channel_parts.c.part_id],
    set_={"seq_num": _sqlite_remember.excluded.seq_num, "created_at": _sqlite_remember.excluded.created_at},
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


class SqlChannelStore:
    """``StreamStore`` over the ``channels``, ``channel_records`` and ``channel_parts`` tables.

    It runs on the caller's connection and transaction and never commits. ``on_appended(key, batch)``
    is called inside the transaction after each append that wrote records, with those records and
    the tail after them, exactly as a read would return them once committed. Statements are built
    once, at import: building and cache-keying them per call cost more CPU than running them.
    On PostgreSQL the append is prepared once per connection unless ``prepare`` is False (see
    ``Settings.pg_prepare``); either way it sends the same SQL.
    """

    def __init__(
        self,
        conn: sa.Connection,
        on_appended: Callable[[str, ReadBatch], None] | None = None,
        *,
        prepare: bool = True,
    ) -> None:
        self._conn = conn
        self._on_appended = on_appended
        self._is_postgres = conn.dialect.name == "postgresql"
        self._prepare = prepare

    def append(
        self,
        key: str,
        records: Sequence[NewRecord],
        *,
        now_ms: int,
        match_seq_num: int | None = None,
        part_id: str | None = None,
        part_id_ttl_ms: int = DEFAULT_PART_ID_TTL_MS,
    ) -> AppendAck:
        """Append ``records`` to channel ``key`` and return where they landed.

        A ``part_id`` seen on this channel within ``part_id_ttl_ms`` returns the first append's
        position and writes nothing (the check runs under the channel lock, so concurrent retries
        cannot both write). Part ids of the channel that expired are deleted at most once per TTL.

        :raise InvalidInput: no records, or text that cannot be stored.
        :raise SeqNumMismatch: ``match_seq_num`` is given and is not the tail.
        """
        return self._append(key, [Append(records, part_id)], now_ms, part_id_ttl_ms, match_seq_num)[0]

    def append_group(
        self,
        key: str,
        appends: Sequence[Append],
        *,
        now_ms: int,
        part_id_ttl_ms: int = DEFAULT_PART_ID_TTL_MS,
    ) -> list[AppendAck]:
        """Append several callers' appends to channel ``key`` in order, as one write; one ack each.

        Each append is what ``append`` would do with it alone, one after the other: a part id
        already on the channel, or earlier in the group, answers with the first position and
        writes nothing.

        :raise InvalidInput: an append without records, or text that cannot be stored.
        """
        return self._append(key, appends, now_ms, part_id_ttl_ms, None)

    def append_while_open(
        self,
        session: OpenSession,
        io: Io,
        appends: Sequence[Append],
        *,
        now_ms: int,
        part_id_ttl_ms: int = DEFAULT_PART_ID_TTL_MS,
    ) -> GuardedAppend:
        """``append_group`` to a session's channel, but only while ``session`` holds (see there).

        On PostgreSQL the session is read, with a shared lock, in the append's own round trip.

        :raise InvalidInput: an append without records, or text that cannot be stored.
        """
        key = channel_key(session.environment_id, session.addressing_key, io)
        for item in appends:
            validate_append(key, item)
        if self._is_postgres:
            acks, row = self._append_postgres(key, appends, now_ms, part_id_ttl_ms, None, session)
            return GuardedAppend(None if row.id is None else session_from_columns(row._mapping), acks)
        # SQLite: the transaction holds the write lock, so nobody closes the session meanwhile.
        found = SqlSessionRepository(self._conn).get_by_ref(session.environment_id, session.addressing_key)
        if found is None or not session.holds_for(found):
            return GuardedAppend(found, None)
        return GuardedAppend(found, self._append_sqlite(key, appends, now_ms, part_id_ttl_ms, None))

    def _append(
        self, key: str, appends: Sequence[Append], now_ms: int, ttl_ms: int, match_seq_num: int | None
    ) -> list[AppendAck]:
        for item in appends:
            validate_append(key, item)
        if self._is_postgres:
            return cast(
                list[AppendAck], self._append_postgres(key, appends, now_ms, ttl_ms, match_seq_num)[0]
            )
        return self._append_sqlite(key, appends, now_ms, ttl_ms, match_seq_num)

    def _append_postgres(
        self,
        key: str,
        appends: Sequence[Append],
        now_ms: int,
        ttl_ms: int,
        match_seq_num: int | None,
        guard: OpenSession | None = None,
    ) -> tuple[list[AppendAck] | None, sa.Row[Any]]:
        """Append in one round trip (two with a part id seen); with ``guard``, only while it holds.

        Returns the acks (None when the guard held the append back) and the statement's last row,
        which carries the guarded session's columns.
        """
        column = (
            None
            if guard is None
            else "friendly_id"
            if is_session_friendly_id(guard.addressing_key)
            else "external_id"
        )
        statement = _PG_APPENDS[column]
        sql = statement.unprepared
        if self._prepare:
            prepared: set[str] = self._conn.info.setdefault(_PREPARED, set())
            if statement.name not in prepared:
                self._conn.exec_driver_sql(statement.prepare)
                prepared.add(statement.name)
            sql = statement.run
        guard_parameters = (
            {}
            if guard is None
            else {
                "environment_id": guard.environment_id,
                "session_ref": guard.addressing_key,
                "active_at": guard.active_at,
            }
        )
        seen: dict[str, tuple[int, int]] = {}
        plan = GroupPlan.of(appends, seen)
        while True:
            wanted = wanted_timestamps(plan.records, now_ms)
            rows = self._conn.exec_driver_sql(
                sql,
                {
                    "key": key,
                    "count": len(plan.records),
                    "wanted": wanted,
                    "last_wanted": wanted[-1],
                    "headers": [json.dumps(r.headers) if r.headers else None for r in plan.records],
                    "bodies": [record.body for record in plan.records],
                    "parts": [part for part, _ in plan.new_parts],
                    "part_offsets": [offset for _, offset in plan.new_parts],
                    "has_parts": bool(plan.new_parts),
                    "fresh_after": now_ms - ttl_ms,
                    "ttl": ttl_ms,
                    "now": now_ms,
                    "match": match_seq_num,
                    **guard_parameters,
                },
            ).all()
            row = rows[0]
            if guard is not None and not row.is_open:
                return None, row
            found = {r.seen_part: (r.seen_seq, r.seen_at) for r in rows if r.seen_part is not None}
            if found:  # nothing was written: plan again, answering these from the channel
                seen.update(found)
                plan = GroupPlan.of(appends, seen)
                if not plan.records:  # all of them repeat part ids (the lock is held: the tail stands)
                    tail = StreamPosition(row.next_seq, row.last_timestamp)
                    return plan.acks(appends, tail.seq_num, [], tail, now_ms), row
                continue
            if row.start_seq is None:  # once nothing was seen, only match_seq_num stops the update
                raise SeqNumMismatch(cast(int, match_seq_num), row.next_seq)
            if row.is_sweep_due:
                self._conn.execute(_SWEEP, {"k": key, "expired_before": now_ms - ttl_ms})
            tail = StreamPosition(row.tail_seq, row.tail_timestamp)
            stamps = [max(row.previous, stamp) for stamp in wanted]
            self._announce(key, row.start_seq, plan.records, stamps, tail)
            return plan.acks(appends, row.start_seq, stamps, tail, now_ms), row

    def _append_sqlite(
        self, key: str, appends: Sequence[Append], now_ms: int, ttl_ms: int, match_seq_num: int | None
    ) -> list[AppendAck]:
        state = self._conn.execute(_SQLITE_STATE, {"k": key}).first()
        if state is None:
            self._conn.execute(
                _SQLITE_CREATE, {"key": key, "next_seq": 0, "last_timestamp": 0, "parts_swept_at": 0}
            )
            next_seq, previous, swept_at = 0, 0, 0
        else:
            next_seq, previous, swept_at = state
        parts = [item.part_id for item in appends if item.part_id is not None]
        seen: dict[str, tuple[int, int]] = {}
        if parts:
            found = self._conn.execute(
                _SQLITE_SEEN, {"k": key, "parts": parts, "fresh_after": now_ms - ttl_ms}
            )
            seen = {part: (seq_num, created_at) for part, seq_num, created_at in found}
        plan = GroupPlan.of(appends, seen)
        tail = StreamPosition(next_seq, previous)
        if not plan.records:
            return plan.acks(appends, next_seq, [], tail, now_ms)
        if match_seq_num is not None and match_seq_num != next_seq:
            raise SeqNumMismatch(match_seq_num, next_seq)

        stamps = assign_timestamps(plan.records, previous, now_ms)
        tail = StreamPosition(next_seq + len(plan.records), stamps[-1])
        is_sweep_due = bool(plan.new_parts) and now_ms - swept_at >= ttl_ms
        self._conn.execute(
            _SQLITE_MOVE,
            {
                "k": key,
                "new_next_seq": tail.seq_num,
                "new_last_timestamp": tail.timestamp,
                "new_parts_swept_at": now_ms if is_sweep_due else swept_at,
            },
        )
        self._conn.execute(
            _SQLITE_INSERT_RECORDS,
            [
                {
                    "channel_key": key,
                    "seq_num": next_seq + offset,
                    "timestamp": stamp,
                    "headers": record.headers or None,
                    "body": record.body,
                }
                for offset, (record, stamp) in enumerate(zip(plan.records, stamps, strict=True))
            ],
        )
        if plan.new_parts:
            if is_sweep_due:
                self._conn.execute(_SWEEP, {"k": key, "expired_before": now_ms - ttl_ms})
            self._conn.execute(
                _SQLITE_REMEMBER,
                [
                    {"channel_key": key, "part_id": part, "seq_num": next_seq + offset, "created_at": now_ms}
                    for part, offset in plan.new_parts
                ],
            )
        self._announce(key, next_seq, plan.records, stamps, tail)
        return plan.acks(appends, next_seq, stamps, tail, now_ms)

    def _announce(
        self, key: str, start_seq: int, records: list[NewRecord], stamps: list[int], tail: StreamPosition
    ) -> None:
        if self._on_appended is not None:
            written = [
                ChannelRecord(start_seq + offset, stamp, record.body, record.headers)
                for offset, (record, stamp) in enumerate(zip(records, stamps, strict=True))
            ]
            self._on_appended(key, ReadBatch(written, tail))

    def read(
        self, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
    ) -> list[ChannelRecord]:
        """Return up to ``limit`` records of ``key`` from ``start_seq`` on, in seq_num order, and
        no more than ``max_bytes`` plus one record (see ``stored_bytes``): the database stops
        there, so a read of huge records never holds more than that in memory."""
        rows = self._driver_rows(_READ, self._read_parameters(key, start_seq, limit, max_bytes))
        return [
            ChannelRecord(seq_num, timestamp, body, _headers(headers))
            for seq_num, timestamp, headers, body in rows
        ]

    def read_with_tail(
        self, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
    ) -> tuple[list[ChannelRecord], StreamPosition]:
        """``read`` and ``tail`` at once, seen from one snapshot: the tail is past every record returned."""
        rows = self._driver_rows(_READ_WITH_TAIL, self._read_parameters(key, start_seq, limit, max_bytes))
        if not rows:
            return [], StreamPosition(0, 0)
        records = [
            ChannelRecord(seq_num, timestamp, body, _headers(headers))
            for _, _, seq_num, timestamp, headers, body in rows
            if seq_num is not None
        ]
        return records, StreamPosition(rows[0][0], rows[0][1])

    @staticmethod
    def _read_parameters(key: str, start_seq: int, limit: int, max_bytes: int) -> dict[str, Any]:
        # At least one byte, so the first record always comes (a reader always makes progress).
        return {
            "k": key,
            "start_seq": _bounded(start_seq),
            "row_limit": limit,
            "max_bytes": max(1, max_bytes),
        }

    def _driver_rows(self, statement: sa.Executable, parameters: dict[str, Any]) -> list[Any]:
        """Rows as the driver returns them. Catch-up reads are thousands of rows, and SQLAlchemy's
        per-row processing cost as much as fetching them; ``_headers`` does the one conversion needed."""
        result = self._conn.execute(statement, parameters)
        try:
            return cast(list[Any], result.cursor.fetchall())
        finally:
            result.close()

    def tail(self, key: str) -> StreamPosition:
        """Return the seq_num the next record will get and the last record's timestamp (0, 0 if new)."""
        row = self._conn.execute(_TAIL, {"k": key}).first()
        return StreamPosition(0, 0) if row is None else StreamPosition(row.next_seq, row.last_timestamp)

    def first_seq_at(self, key: str, timestamp: int) -> int:
        """The seq_num of the first record stamped at or after ``timestamp``; the tail if none is.

        Timestamps never decrease along a channel, so this is where a read "from a time" starts.
        """
        found = self._conn.execute(_FIRST_AT, {"k": key, "at": _bounded(timestamp)}).scalar()
        return self.tail(key).seq_num if found is None else int(found)

    def trim(self, key: str, before_seq: int) -> None:
        """Delete the records of ``key`` below ``before_seq``; their seq_nums are never handed out again."""
        self._conn.execute(_TRIM, {"k": key, "before_seq": _bounded(before_seq)})
