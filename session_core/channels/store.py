"""The channel store: the ``ChannelStore`` port and its SQL facade over both backends.

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
(``pg_append``); on SQLite, which runs in-process under the write lock ``BEGIN IMMEDIATE`` took,
a few prebuilt statements (``sqlite_append``). Reads and trims are the same on both (``reads``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast

import sqlalchemy as sa

from session_core.channels import reads
from session_core.channels.append_rules import validate_append
from session_core.channels.pg_append import append_postgres
from session_core.channels.records import (
    DEFAULT_PART_ID_TTL_MS,
    MAX_POSITION,
    Append,
    AppendAck,
    GuardedAppend,
    NewRecord,
    OpenSession,
    ReadBatch,
    StreamPosition,
    channel_key,
)
from session_core.channels.sqlite_append import append_sqlite
from session_core.models import ChannelRecord, Io
from session_core.repositories.sql import SqlSessionRepository, session_from_columns


class ChannelStore(Protocol):
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


class SqlChannelStore:
    """``ChannelStore`` over the ``channels``, ``channel_records`` and ``channel_parts`` tables.

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
        for item in appends:
            validate_append(channel_key(session.environment_id, session.session_ref, io), item)
        if self._is_postgres:
            acks, row, written = append_postgres(
                self._conn, None, appends, now_ms, part_id_ttl_ms, guard=(session, io), prepare=self._prepare
            )
            self._announce(row.channel_key, written)
            return GuardedAppend(None if row.id is None else session_from_columns(row._mapping), acks)
        # SQLite: the transaction holds the write lock, so nobody closes the session meanwhile.
        found = SqlSessionRepository(self._conn).get_by_ref(session.environment_id, session.session_ref)
        if found is None or not session.holds_for(found):
            return GuardedAppend(found, None)
        key = channel_key(found.environment_id, found.addressing_key, io)
        sqlite_acks, written = append_sqlite(self._conn, key, appends, now_ms, part_id_ttl_ms, None)
        self._announce(key, written)
        return GuardedAppend(found, sqlite_acks)

    def _append(
        self, key: str, appends: Sequence[Append], now_ms: int, ttl_ms: int, match_seq_num: int | None
    ) -> list[AppendAck]:
        for item in appends:
            validate_append(key, item)
        if self._is_postgres:
            acks, _, written = append_postgres(
                self._conn, key, appends, now_ms, ttl_ms, match_seq_num, prepare=self._prepare
            )
        else:
            acks, written = append_sqlite(self._conn, key, appends, now_ms, ttl_ms, match_seq_num)
        self._announce(key, written)
        return cast(list[AppendAck], acks)

    def _announce(self, key: str, written: ReadBatch | None) -> None:
        if written is not None and self._on_appended is not None:
            self._on_appended(key, written)

    def read(
        self, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
    ) -> list[ChannelRecord]:
        return reads.read(self._conn, key, start_seq, limit, max_bytes)

    def read_with_tail(
        self, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
    ) -> tuple[list[ChannelRecord], StreamPosition]:
        return reads.read_with_tail(self._conn, key, start_seq, limit, max_bytes)

    def tail(self, key: str) -> StreamPosition:
        return reads.tail(self._conn, key)

    def first_seq_at(self, key: str, timestamp: int) -> int:
        return reads.first_seq_at(self._conn, key, timestamp)

    def trim(self, key: str, before_seq: int) -> None:
        reads.trim(self._conn, key, before_seq)
