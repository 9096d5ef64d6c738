"""S2 stream use cases behind the S2-compatible endpoint: append to, read and tail one stream.

A stream is named relative to the caller's environment (``sessions/{key}/{io}``, as ``PUT`` hands
it out) and is the same channel the realtime routes serve. Only a secret key of the environment or
a token minted for that one stream may use it (``scopes.authorize_stream``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from session_core.channels.append_rules import is_storable_key
from session_core.channels.records import AppendAck, NewRecord, ReadBatch, StreamPosition
from session_core.channels.wakeups import WakeupHub
from session_core.errors import InvalidInput, SessionsError, VersionMismatch
from session_core.models import refuse_if_not_active
from session_core.repositories.ports import AbstractUnitOfWork
from session_core.s2 import ReadLimits, clip_records, session_channel_of, trim_point
from session_core.scopes import Principal, authorize_stream
from session_core.services.channels import epoch_ms, read_batch


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
    channel = session_channel_of(name)
    return None if channel is None else (environment_id, channel[0])


def _refuse_if_session_not_active(uow: AbstractUnitOfWork, key: str, now: datetime) -> None:
    """Refuse writes to the channel of a closed or expired session (the rule the realtime routes
    follow). The row is read with a shared lock, so a racing close commits after this append."""
    owner = session_of_key(key)
    if owner is None:
        return
    session = uow.sessions.get_by_ref(*owner, lock="share")
    if session is not None and session.addressing_key == owner[1]:
        refuse_if_not_active(session, now, "append to")


def append_to_stream(
    uow: AbstractUnitOfWork,
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
        trim_to = trim_point(records, ack.start.seq_num)
        if trim_to is not None:
            uow.channels.trim(key, trim_to)
        uow.commit()
    return ack


def stream_tail(uow: AbstractUnitOfWork, key: str) -> StreamPosition:
    """The next seq_num of the stream and its last record's timestamp."""
    with uow:
        return uow.channels.tail(key)


def resolve_start(uow: AbstractUnitOfWork, key: str, start: ReadStart, clamp: bool) -> int:
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
    uow_factory: Callable[[], AbstractUnitOfWork],
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
