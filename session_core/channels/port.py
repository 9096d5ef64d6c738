"""The channel store's port: what the services may ask of a channel, whatever holds it.

A channel is an append-only log in S2's shape (``records``). The checks of an append and the
announcement of what it wrote are written here once; a backend implements the write, the session
lookup a guarded append needs, and the reads. See ``store`` for the SQL one and how it appends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from session_core.channels.append_rules import validate_append
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
from session_core.models import ChannelRecord, Io, Session


class ChannelStore(ABC):
    """Append-only channels addressed by key, inside the caller's transaction.

    The checks of an append and the announcement of what it wrote live here, once; a backend
    implements the write (``_write``), the session lookup a guarded append needs, and the reads.
    ``SqlChannelStore`` is the one in production, ``channels.memory.MemoryChannelStore`` the unit
    tests' fake; ``tests/integration/test_store_contract.py`` holds both to one contract.
    ``on_appended(key, batch)`` is called inside the transaction after each append that wrote
    records, with those records and the tail after them, exactly as a read would return them once
    committed.
    """

    def __init__(self, on_appended: Callable[[str, ReadBatch], None] | None = None) -> None:
        self._on_appended = on_appended

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
        """``append_group`` to channel ``io`` of the session ``session`` names, only while it holds.

        :raise InvalidInput: an append without records, or text that cannot be stored.
        """
        for item in appends:
            validate_append(channel_key(session.environment_id, session.session_ref, io), item)
        return self._append_while_open(session, io, appends, now_ms, part_id_ttl_ms)

    def _append(
        self, key: str, appends: Sequence[Append], now_ms: int, ttl_ms: int, match_seq_num: int | None
    ) -> list[AppendAck]:
        for item in appends:
            validate_append(key, item)
        acks, written = self._write(key, appends, now_ms, ttl_ms, match_seq_num)
        self._announce(key, written)
        return acks

    def _append_while_open(
        self, session: OpenSession, io: Io, appends: Sequence[Append], now_ms: int, ttl_ms: int
    ) -> GuardedAppend:
        """Read the session, then append if it holds: for backends where nothing can close the
        session in between (SQLite's write lock, the memory store)."""
        found = self._find_session(session.environment_id, session.session_ref)
        if found is None or not session.holds_for(found):
            return GuardedAppend(found, None)
        key = channel_key(found.environment_id, found.addressing_key, io)
        acks, written = self._write(key, appends, now_ms, ttl_ms, None)
        self._announce(key, written)
        return GuardedAppend(found, acks)

    def _announce(self, key: str, written: ReadBatch | None) -> None:
        if written is not None and self._on_appended is not None:
            self._on_appended(key, written)

    @abstractmethod
    def _write(
        self, key: str, appends: Sequence[Append], now_ms: int, ttl_ms: int, match_seq_num: int | None
    ) -> tuple[list[AppendAck], ReadBatch | None]:
        """Write checked appends; return the acks and the records written (None if none were)."""

    @abstractmethod
    def _find_session(self, environment_id: str, session_ref: str) -> Session | None:
        """The session ``session_ref`` names, as the sessions repository's ``get_by_ref`` finds it."""

    @abstractmethod
    def read(
        self, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
    ) -> list[ChannelRecord]:
        """Up to ``limit`` records of ``key`` from ``start_seq`` on, in seq_num order, and no more
        than ``max_bytes`` plus one record (body and headers as JSON, UTF-8): a read of huge
        records never holds more than that in memory."""

    @abstractmethod
    def read_with_tail(
        self, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
    ) -> tuple[list[ChannelRecord], StreamPosition]:
        """``read`` and ``tail`` at once, seen from one snapshot: the tail is past every record returned."""

    @abstractmethod
    def tail(self, key: str) -> StreamPosition:
        """The seq_num the next record will get and the last record's timestamp (0, 0 if new)."""

    @abstractmethod
    def first_seq_at(self, key: str, timestamp: int) -> int:
        """The seq_num of the first record stamped at or after ``timestamp``; the tail if none is.

        Timestamps never decrease along a channel, so this is where a read "from a time" starts.
        """

    @abstractmethod
    def trim(self, key: str, before_seq: int) -> None:
        """Delete the records of ``key`` below ``before_seq``; their seq_nums are never handed out again."""
