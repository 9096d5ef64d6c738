"""The SQL channel store: a thin ``ChannelStore`` facade over the two appends and the reads.

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

import sqlalchemy as sa

from session_core.channels import reads
from session_core.channels.pg_append import append_postgres
from session_core.channels.port import ChannelStore
from session_core.channels.records import (
    MAX_POSITION,
    Append,
    AppendAck,
    GuardedAppend,
    OpenSession,
    ReadBatch,
    StreamPosition,
)
from session_core.channels.sqlite_append import append_sqlite
from session_core.models import ChannelRecord, Io, Session
from session_core.repositories.sql import SqlSessionRepository, session_from_json


class SqlChannelStore(ChannelStore):
    """``ChannelStore`` over the ``channels``, ``channel_records`` and ``channel_parts`` tables.

    It runs on the caller's connection and transaction and never commits. On PostgreSQL the append
    is prepared once per connection unless ``prepare`` is False (see ``Settings.pg_prepare``);
    either way it sends the same SQL.
    """

    def __init__(
        self,
        conn: sa.Connection,
        on_appended: Callable[[str, ReadBatch], None] | None = None,
        *,
        prepare: bool = True,
    ) -> None:
        super().__init__(on_appended)
        self._conn = conn
        self._is_postgres = conn.dialect.name == "postgresql"
        self._prepare = prepare

    def _write(
        self, key: str, appends: Sequence[Append], now_ms: int, ttl_ms: int, match_seq_num: int | None
    ) -> tuple[list[AppendAck], ReadBatch | None]:
        if not self._is_postgres:
            return append_sqlite(self._conn, key, appends, now_ms, ttl_ms, match_seq_num)
        acks, _, written = append_postgres(
            self._conn, key, appends, now_ms, ttl_ms, match_seq_num, prepare=self._prepare
        )
        assert acks is not None  # only a guard holds an append back
        return acks, written

    def _append_while_open(
        self, session: OpenSession, io: Io, appends: Sequence[Append], now_ms: int, ttl_ms: int
    ) -> GuardedAppend:
        """On PostgreSQL, read the session with a shared lock in the append's own round trip."""
        if not self._is_postgres:  # SQLite's transaction holds the write lock: nobody closes it
            return super()._append_while_open(session, io, appends, now_ms, ttl_ms)
        acks, row, written = append_postgres(
            self._conn, None, appends, now_ms, ttl_ms, guard=(session, io), prepare=self._prepare
        )
        self._announce(row.channel_key, written)
        return GuardedAppend(None if row.session is None else session_from_json(row.session), acks)

    def _find_session(self, environment_id: str, session_ref: str) -> Session | None:
        return SqlSessionRepository(self._conn).get_by_ref(environment_id, session_ref)

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
