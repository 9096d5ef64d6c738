"""Channel records: the ``StreamStore`` port and its SQL implementation (SQLite and PostgreSQL).

A channel is an append-only log in S2's shape: every record gets a ``seq_num`` that starts at 0
and grows by one per record, never repeating and never leaving a gap, even after a trim.

An append works inside the caller's transaction and never commits; the unit of work commits and
only then may the append be acknowledged. It:

1. locks the channel's ``channels`` row (creating it on first use). Every appender of a channel
   queues on that lock, which is what makes ``next_seq`` gap-free under concurrency;
2. answers a retried ``part_id`` with the first append's position, writing nothing;
3. checks ``match_seq_num`` (S2's optimistic append);
4. moves the counter, inserts the records and remembers the part id;
5. announces the new tail: ``pg_notify`` on PostgreSQL (delivered on commit to every process) and
   the ``on_appended`` callback, which the unit of work turns into an in-process wake-up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from session_core.db.tables import channel_parts, channel_records, channels
from session_core.errors import InvalidInput, VersionMismatch
from session_core.models import ChannelRecord, Io
from session_core.streams.wakeups import notify_tail
from session_core.text import is_storable

DEFAULT_PART_ID_TTL_MS = 5 * 60 * 1000
# PostgreSQL's btree entries stop near 2,700 bytes; an externalId (at most 256 chars) stays far below.
MAX_KEY_BYTES = 2048


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
class StreamPosition:
    """A point in a channel as S2 reports it: a seq_num and the timestamp of the record before it."""

    seq_num: int
    timestamp: int


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


class SeqNumMismatch(VersionMismatch):
    """Raised when an append's ``match_seq_num`` is not the channel's tail; ``tail`` is the real one."""

    def __init__(self, match_seq_num: int, tail: int) -> None:
        super().__init__(f"match_seq_num {match_seq_num} does not match the tail seq_num {tail}")
        self.tail = tail


class StreamStore(Protocol):
    """Append-only channels addressed by key. Implementations work inside the caller's transaction."""

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

    def read(self, key: str, start_seq: int, limit: int) -> list[ChannelRecord]: ...

    def tail(self, key: str) -> StreamPosition: ...

    def first_seq_at(self, key: str, timestamp: int) -> int: ...

    def trim(self, key: str, before_seq: int) -> None: ...


def assign_timestamps(records: Sequence[NewRecord], previous: int, now_ms: int) -> list[int]:
    """Timestamp records as S2's client-prefer mode does.

    A record keeps its client timestamp capped at arrival time (else gets arrival time), and is
    never stamped earlier than the record before it, so timestamps never decrease along a channel.
    """
    stamps = []
    last = previous
    for record in records:
        wanted = now_ms if record.timestamp is None else min(record.timestamp, now_ms)
        last = max(last, wanted)
        stamps.append(last)
    return stamps


def validate_append(key: str, records: Sequence[NewRecord]) -> None:
    """Refuse an append every backend cannot store alike: no records, NUL, lone surrogates, huge keys.

    :raise InvalidInput: naming the first offending record, so the client gets a 4xx, never a 500.
    """
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES or not is_storable(key):
        raise InvalidInput("Channel name is too long or holds characters that cannot be stored")
    if not records:
        raise InvalidInput("An append needs at least one record")
    for index, record in enumerate(records):
        texts = [record.body, *(part for header in record.headers for part in header)]
        if not all(is_storable(text) for text in texts):
            raise InvalidInput(f"Record {index} holds a NUL character or an unpaired surrogate")


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which offers ``ON CONFLICT`` on both SQLite and PostgreSQL."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class SqlChannelStore:
    """``StreamStore`` over the ``channels``, ``channel_records`` and ``channel_parts`` tables.

    It runs on the caller's connection and transaction and never commits. ``on_appended(key, tail)``
    is called inside the transaction after each append that wrote records.
    """

    def __init__(self, conn: sa.Connection, on_appended: Callable[[str, int], None] | None = None) -> None:
        self._conn = conn
        self._on_appended = on_appended
        self._is_postgres = conn.dialect.name == "postgresql"

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
        validate_append(key, records)
        next_seq, last_timestamp, swept_at = self._lock_channel(key)
        if part_id is not None:
            first = self._find_part(key, part_id, now_ms - part_id_ttl_ms)
            if first is not None:
                start = StreamPosition(*first)
                end = StreamPosition(start.seq_num + len(records), start.timestamp)
                return AppendAck(start, end, StreamPosition(next_seq, last_timestamp), is_duplicate=True)
        if match_seq_num is not None and match_seq_num != next_seq:
            raise SeqNumMismatch(match_seq_num, next_seq)

        stamps = assign_timestamps(records, last_timestamp, now_ms)
        tail = StreamPosition(next_seq + len(records), stamps[-1])
        is_sweep_due = part_id is not None and now_ms - swept_at >= part_id_ttl_ms
        self._conn.execute(
            channels.update()
            .where(channels.c.key == key)
            .values(
                next_seq=tail.seq_num,
                last_timestamp=tail.timestamp,
                parts_swept_at=now_ms if is_sweep_due else swept_at,
            )
        )
        self._conn.execute(
            channel_records.insert(),
            [
                {
                    "channel_key": key,
                    "seq_num": next_seq + offset,
                    "timestamp": stamp,
                    "headers": record.headers or None,
                    "body": record.body,
                }
                for offset, (record, stamp) in enumerate(zip(records, stamps, strict=True))
            ],
        )
        if part_id is not None:
            if is_sweep_due:
                self._delete_expired_parts(key, now_ms - part_id_ttl_ms)
            self._remember_part(key, part_id, next_seq, now_ms)
        if self._is_postgres:
            notify_tail(self._conn, key, tail.seq_num)
        if self._on_appended is not None:
            self._on_appended(key, tail.seq_num)
        return AppendAck(StreamPosition(next_seq, stamps[0]), tail, tail)

    def read(self, key: str, start_seq: int, limit: int) -> list[ChannelRecord]:
        """Return up to ``limit`` records of ``key`` from ``start_seq`` on, in seq_num order."""
        rows = self._conn.execute(
            sa.select(
                channel_records.c.seq_num,
                channel_records.c.timestamp,
                channel_records.c.headers,
                channel_records.c.body,
            )
            .where(channel_records.c.channel_key == key, channel_records.c.seq_num >= start_seq)
            .order_by(channel_records.c.seq_num)
            .limit(limit)
        )
        return [ChannelRecord(row.seq_num, row.timestamp, row.body, row.headers or []) for row in rows]

    def tail(self, key: str) -> StreamPosition:
        """Return the seq_num the next record will get and the last record's timestamp (0, 0 if new)."""
        row = self._conn.execute(
            sa.select(channels.c.next_seq, channels.c.last_timestamp).where(channels.c.key == key)
        ).first()
        return StreamPosition(0, 0) if row is None else StreamPosition(row.next_seq, row.last_timestamp)

    def first_seq_at(self, key: str, timestamp: int) -> int:
        """The seq_num of the first record stamped at or after ``timestamp``; the tail if none is.

        Timestamps never decrease along a channel, so this is where a read "from a time" starts.
        """
        found = self._conn.execute(
            sa.select(channel_records.c.seq_num)
            .where(channel_records.c.channel_key == key, channel_records.c.timestamp >= timestamp)
            .order_by(channel_records.c.seq_num)
            .limit(1)
        ).scalar()
        return self.tail(key).seq_num if found is None else int(found)

    def trim(self, key: str, before_seq: int) -> None:
        """Delete the records of ``key`` below ``before_seq``; their seq_nums are never handed out again."""
        self._conn.execute(
            channel_records.delete().where(
                channel_records.c.channel_key == key, channel_records.c.seq_num < before_seq
            )
        )

    def _lock_channel(self, key: str) -> tuple[int, int, int]:
        """Lock the channel's counter row, creating it first on the channel's first append."""
        locking = (
            sa.select(channels.c.next_seq, channels.c.last_timestamp, channels.c.parts_swept_at)
            .where(channels.c.key == key)
            .with_for_update()
        )
        row = self._conn.execute(locking).first()
        if row is None:
            self._conn.execute(
                _insert(self._conn, channels)
                .values(key=key, next_seq=0, last_timestamp=0, parts_swept_at=0)
                .on_conflict_do_nothing(index_elements=[channels.c.key])
            )
            row = self._conn.execute(locking).one()
        return row.next_seq, row.last_timestamp, row.parts_swept_at

    def _find_part(self, key: str, part_id: str, fresh_after: int) -> tuple[int, int] | None:
        row = self._conn.execute(
            sa.select(channel_parts.c.seq_num, channel_parts.c.created_at).where(
                channel_parts.c.channel_key == key,
                channel_parts.c.part_id == part_id,
                channel_parts.c.created_at > fresh_after,
            )
        ).first()
        return None if row is None else (row.seq_num, row.created_at)

    def _remember_part(self, key: str, part_id: str, seq_num: int, now_ms: int) -> None:
        # An expired row under the same part id may still be there: take it over.
        statement = _insert(self._conn, channel_parts).values(
            channel_key=key, part_id=part_id, seq_num=seq_num, created_at=now_ms
        )
        self._conn.execute(
            statement.on_conflict_do_update(
                index_elements=[channel_parts.c.channel_key, channel_parts.c.part_id],
                set_={"seq_num": seq_num, "created_at": now_ms},
            )
        )

    def _delete_expired_parts(self, key: str, expired_before: int) -> None:
        self._conn.execute(
            channel_parts.delete().where(
                channel_parts.c.channel_key == key, channel_parts.c.created_at <= expired_before
            )
        )
