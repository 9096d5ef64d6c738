"""S2 stream use cases behind the S2-compatible endpoint: append to, read and tail one stream.

A stream is named relative to the caller's environment (``sessions/{key}/{io}``, as ``PUT`` hands
it out) and is the same channel the realtime routes serve. Only a secret key of the environment or
a token minted for that one stream may use it (``channels.authorize_stream``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from session_core.channels.append_rules import is_storable_key
from session_core.channels.records import AppendAck, NewRecord, ReadBatch, StreamPosition
from session_core.channels.wakeups import WakeupHub
from session_core.db.uow import UnitOfWork
from session_core.errors import InvalidInput, PayloadTooLarge, SessionsError, VersionMismatch
from session_core.models import IOS, ChannelRecord, refuse_if_not_active
from session_core.scopes import Principal
from session_core.services.channels import authorize_stream, epoch_ms, read_batch


class ReadPastTail(SessionsError):
    """Raised when a read without ``clamp`` starts past the tail; ``tail`` is where the stream ends."""

    def __init__(self, tail: StreamPosition) -> None:
        super().__init__("Read starts past the tail of the stream")
        self.tail = tail


class FencingTokenMismatch(VersionMismatch):
    """Raised when an append names a fencing token other than the stream's (never set here: empty)."""

    def __init__(self, current: str) -> None:
        super().__init__("Fencing token does not match the stream's")
        self.current = current


@dataclass(frozen=True)
class ReadStart:
    """Where a read starts: a seq_num, the first record at a timestamp, or an offset back from the tail."""

    seq_num: int | None = None
    timestamp: int | None = None
    tail_offset: int | None = None


@dataclass(frozen=True)
class ReadLimits:
    """Where a read stops, as S2's ``count``, ``bytes`` and ``until`` (exclusive timestamp) say."""

    count: int | None = None
    bytes: int | None = None
    until: int | None = None


TRIM_COMMAND = ["", "trim"]
#: What every session channel's stream name starts with (``stream_name``).
SESSIONS_PREFIX = "sessions/"


#: S2's limits on one append batch, and ours on its headers (control records carry a few each).
MAX_BATCH_RECORDS = 1000
MAX_BATCH_HEADERS = 10_000
MAX_BATCH_METERED_BYTES = 1024 * 1024


@dataclass
class BatchBudget:
    """Counts a batch while it is decoded and refuses it the moment it passes a limit.

    A decoder calls ``add_record`` before decoding a record and ``add_header`` / ``add_body`` as
    it reads them, so a hostile body (200,000 empty records, a record of a million empty headers)
    costs at most a limit's worth of work before its 4xx, not the whole body's.
    """

    max_records: int = MAX_BATCH_RECORDS
    max_headers: int = MAX_BATCH_HEADERS
    max_metered_bytes: int = MAX_BATCH_METERED_BYTES
    records: int = 0
    headers: int = 0
    metered_bytes: int = 0

    def add_record(self) -> None:
        """:raise InvalidInput: past ``max_records`` records."""
        self.records += 1
        if self.records > self.max_records:
            raise InvalidInput(f"A batch holds 1 to {self.max_records} records")
        self._meter(8)

    def add_header(self, name_bytes: int, value_bytes: int) -> None:
        """:raise InvalidInput: past ``max_headers`` headers in the batch."""
        self.headers += 1
        if self.headers > self.max_headers:
            raise InvalidInput(f"A batch holds at most {self.max_headers} headers")
        self._meter(2 + name_bytes + value_bytes)

    def add_body(self, body_bytes: int) -> None:
        self._meter(body_bytes)

    def _meter(self, size: int) -> None:
        self.metered_bytes += size
        if self.metered_bytes > self.max_metered_bytes:
            raise PayloadTooLarge("Batch is over 1 MiB of metered bytes")


def stored_record(headers: list[tuple[bytes, bytes]], body: bytes, timestamp: int | None) -> NewRecord:
    """Turn an S2 record given as bytes into what the store keeps: UTF-8 text.

    A trim command's body, an 8-byte big-endian seq_num, is kept as its decimal digits
    (``body_bytes`` turns it back).

    :raise InvalidInput: a header or body that is not UTF-8, or a malformed trim command.
    """
    try:
        text_headers = [[name.decode("utf-8"), value.decode("utf-8")] for name, value in headers]
    except UnicodeDecodeError:
        raise InvalidInput("Header names and values must be UTF-8 text") from None
    if text_headers == [TRIM_COMMAND]:
        if len(body) != 8:
            raise InvalidInput("A trim command's body must be an 8-byte seq_num")
        return NewRecord(str(int.from_bytes(body, "big")), text_headers, timestamp)
    try:
        return NewRecord(body.decode("utf-8"), text_headers, timestamp)
    except UnicodeDecodeError:
        raise InvalidInput("Record bodies must be UTF-8 text; binary bodies are not supported") from None


def body_bytes(record: ChannelRecord) -> bytes:
    """A record's body as S2 hands out bytes; a trim command's seq_num is 8 big-endian bytes again."""
    if record.headers == [TRIM_COMMAND] and record.body.isdigit():
        return int(record.body).to_bytes(8, "big")
    return record.body.encode()


def _trim_point(records: Sequence[NewRecord], first_seq: int) -> int | None:
    """Where the batch's trim commands trim to; never past a command itself, which stays readable."""
    points = [
        min(int(record.body), first_seq + offset)
        for offset, record in enumerate(records)
        if record.headers == [TRIM_COMMAND]
    ]
    return max(points) if points else None


def metered_bytes(record: ChannelRecord) -> int:
    """A record's size as S2 meters it: ``8 + 2·headers + Σ header bytes + body bytes``."""
    header_bytes = sum(len(name.encode()) + len(value.encode()) for name, value in record.headers)
    return 8 + 2 * len(record.headers) + header_bytes + len(record.body.encode())


def clip_records(
    records: list[ChannelRecord], limits: ReadLimits, counted: int = 0, metered: int = 0
) -> tuple[list[ChannelRecord], bool]:
    """Keep the records within ``limits`` after ``counted`` records and ``metered`` bytes already read.

    Returns the kept records and whether the read is complete. A first record bigger than the byte
    limit is still returned, so a reader always makes progress.
    """
    kept: list[ChannelRecord] = []
    for record in records:
        if limits.until is not None and record.timestamp >= limits.until:
            return kept, True
        if limits.count is not None and counted + len(kept) >= limits.count:
            return kept, True
        if limits.bytes is not None:  # sizing every record costs live readers, who rarely set a limit
            size = metered_bytes(record)
            if metered + size > limits.bytes and (kept or counted):
                return kept, True
            metered += size
        kept.append(record)
    return kept, limits.count is not None and counted + len(kept) >= limits.count


def stream_key(principal: Principal, name: str) -> str:
    """The store key of stream ``name`` in the caller's environment, once the caller may use it.

    :raise Forbidden: a token minted for another stream, or for no stream at all.
    :raise InvalidInput: a name no store could hold (too long, NUL, an unpaired surrogate).
    """
    authorize_stream(principal, name)
    key = f"{principal.environment.id}/{name}"
    if not is_storable_key(key):
        raise InvalidInput("Stream name is too long or holds characters that cannot be stored")
    return key


def session_of_key(key: str) -> tuple[str, str] | None:
    """``(environment id, addressing key)`` of a session channel's store key, the inverse of
    ``channel_key``; None for a stream that is no session's channel."""
    environment_id, _, name = key.partition("/")
    if not name.startswith(SESSIONS_PREFIX):
        return None
    addressing_key, _, io = name[len(SESSIONS_PREFIX) :].rpartition("/")
    return (environment_id, addressing_key) if addressing_key and io in IOS else None


def _refuse_if_session_not_active(uow: UnitOfWork, key: str, now: datetime) -> None:
    """Refuse writes to the channel of a closed or expired session (the rule the realtime routes
    follow). The row is read with a shared lock, so a racing close commits after this append."""
    owner = session_of_key(key)
    if owner is None:
        return
    session = uow.sessions.get_by_ref(*owner, lock="share")
    if session is not None and session.addressing_key == owner[1]:
        refuse_if_not_active(session, now, "append to")


def append_to_stream(
    uow: UnitOfWork,
    key: str,
    records: Sequence[NewRecord],
    now: datetime,
    match_seq_num: int | None = None,
    fencing_token: str | None = None,
) -> AppendAck:
    """Append a batch atomically and return S2's ack once it is committed.

    Trim commands in the batch delete the records before their seq_num in the same transaction.
    Nothing is written, and nothing trimmed, on the channel of a closed or expired session.

    :raise SessionClosed: the stream is the channel of a closed or expired session.
    :raise FencingTokenMismatch: a non-empty fencing token (no stream here is ever fenced).
    :raise SeqNumMismatch: ``match_seq_num`` is not the tail.
    :raise InvalidInput: an empty batch, or text that cannot be stored.
    """
    if fencing_token:
        raise FencingTokenMismatch("")
    with uow:
        _refuse_if_session_not_active(uow, key, now)
        ack = uow.channels.append(key, records, now_ms=epoch_ms(now), match_seq_num=match_seq_num)
        trim_point = _trim_point(records, ack.start.seq_num)
        if trim_point is not None:
            uow.channels.trim(key, trim_point)
        uow.commit()
    return ack


def stream_tail(uow: UnitOfWork, key: str) -> StreamPosition:
    """The next seq_num of the stream and its last record's timestamp."""
    with uow:
        return uow.channels.tail(key)


def resolve_start(uow: UnitOfWork, key: str, start: ReadStart, clamp: bool) -> int:
    """The seq_num a read starts at; past the tail it is the tail with ``clamp``, else an error.

    :raise ReadPastTail: the start is past the tail and ``clamp`` is off.
    """
    with uow:
        tail = uow.channels.tail(key)
        if start.timestamp is not None:
            seq_num = uow.channels.first_seq_at(key, start.timestamp)
        elif start.tail_offset is not None:
            seq_num = max(0, tail.seq_num - start.tail_offset)
        else:
            seq_num = start.seq_num or 0
    if seq_num > tail.seq_num:
        if not clamp:
            raise ReadPastTail(tail)
        seq_num = tail.seq_num
    return seq_num


def read_stream(
    uow_factory: Callable[[], UnitOfWork],
    hub: WakeupHub,
    key: str,
    start_seq: int,
    limits: ReadLimits,
    batch_size: int,
    wait_seconds: float,
) -> ReadBatch:
    """Read up to ``batch_size`` records within ``limits``; at the tail, wait up to ``wait_seconds``.

    The subscription is taken before the first read, so a record appended in between wakes it.
    """
    deadline = time.monotonic() + wait_seconds
    with hub.subscribe(key) as subscription:
        while True:
            batch = read_batch(uow_factory(), key, start_seq, batch_size)
            remaining = deadline - time.monotonic()
            if batch.records or remaining <= 0 or hub.is_closed:
                return ReadBatch(clip_records(batch.records, limits)[0], batch.tail)
            subscription.wait(batch.tail.seq_num, remaining)
