"""Durable Streams use cases: create (and fork), append and close, read, delete.

Each runs in one unit of work. A stream's row is locked (PostgreSQL) or the database write-locked
(SQLite) for every write, so closing, ``Stream-Seq`` and producer checks see no race, and producer
state commits with the records it vouches for. Expiry is enforced lazily, on each access: an
expired stream is deleted then (or soft-deleted while forks still read it) and answers 404.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, replace

from session_core.channels.group_commit import GroupCommit
from session_core.channels.records import MAX_POSITION, Append, NewRecord
from session_core.durable.rules import (
    DEFAULT_CONTENT_TYPE,
    DsStream,
    ProducerHeaders,
    ProducerVerdict,
    StreamPathTaken,
    is_expired,
    is_json_type,
    json_messages,
    json_record_body,
    judge_producer,
    normalize_content_type,
)
from session_core.errors import BadRequest, Conflict, NotFound, SessionsError
from session_core.repositories.ports import AbstractUnitOfWork


class StreamGone(SessionsError):
    """The stream was deleted but forks still read it: every direct operation is refused (410)."""


class StreamClosed(Conflict):
    """An append to a closed stream; ``tail`` is its final position."""

    def __init__(self, tail: int) -> None:
        super().__init__("Stream is closed")
        self.tail = tail


@dataclass(frozen=True)
class CreateSpec:
    """What a ``PUT`` asks for. ``content_type`` None means the default, or a fork's source's."""

    content_type: str | None = None
    ttl_seconds: int | None = None
    expires_at: str | None = None
    expires_at_ms: int | None = None
    closed: bool = False
    forked_from: str | None = None
    fork_seq: int | None = None
    fork_sub_offset: int = 0
    body: bytes = b""


@dataclass(frozen=True)
class Created:
    stream: DsStream
    tail: int
    is_new: bool


@dataclass(frozen=True)
class AppendRequest:
    """What a ``POST`` asks for; an empty ``body`` with ``close`` only closes the stream."""

    body: bytes
    content_type: str | None = None
    close: bool = False
    stream_seq: str | None = None
    producer: ProducerHeaders | None = None


@dataclass(frozen=True)
class Appended:
    """The outcome of a ``POST``: where the stream ends now, and the producer verdict if any."""

    tail: int
    closed: bool
    verdict: ProducerVerdict | None = None


@dataclass(frozen=True)
class ReadResult:
    """Stored record bodies from the read's start, and where the read ended (``next_seq``).

    ``key`` is the channel a live reader waits on for more; ``closed``, whether the stream takes no
    more records.
    """

    key: str
    content_type: str
    closed: bool
    bodies: list[str]
    next_seq: int
    tail: int

    @property
    def up_to_date(self) -> bool:
        return self.next_seq >= self.tail

    @property
    def closed_at_tail(self) -> bool:
        return self.closed and self.up_to_date


def record_body(content_type: str, data: bytes, *, allow_empty: bool = False) -> list[str]:
    """The record an append stores: JSON mode's messages as one JSON array, other types' bytes as
    base64 (so every byte round-trips through a text column); none for an empty append."""
    if not data:
        return []
    if is_json_type(content_type):
        messages = json_messages(data, allow_empty=allow_empty)
        return [json_record_body(messages)] if messages else []
    return [base64.b64encode(data).decode()]


def _gone_or_live(uow: AbstractUnitOfWork, stream: DsStream | None, now_ms: int) -> DsStream | None:
    """``stream`` unless it expired: then it is deleted (None), or soft-deleted while forked."""
    if stream is None or not is_expired(
        stream.ttl_seconds, stream.expires_at_ms, stream.last_access_ms, now_ms
    ):
        return stream
    if stream.ref_count > 0:
        return stream if stream.soft_deleted else uow.ds.save(replace(stream, soft_deleted=True))
    _remove(uow, stream)
    return None


def _remove(uow: AbstractUnitOfWork, stream: DsStream) -> None:
    """Delete ``stream``; a soft-deleted source no fork reads any more goes with it."""
    uow.ds.remove(stream)
    uow.wake_readers(stream.key)
    if stream.source_id is None:
        return
    source = uow.ds.get_by_id(stream.source_id, lock=True)
    if source is None:
        return
    source = replace(source, ref_count=max(0, source.ref_count - 1))
    if source.ref_count == 0 and source.soft_deleted:
        _remove(uow, source)
    else:
        uow.ds.save(source)


def _existing(
    uow: AbstractUnitOfWork, environment_id: str, path: str, now_ms: int, *, lock: bool
) -> DsStream:
    """The live stream at ``path``. :raise NotFound: none, or expired. :raise StreamGone: soft-deleted."""
    stream = _gone_or_live(uow, uow.ds.get(environment_id, path, lock=lock), now_ms)
    if stream is None:
        raise NotFound("Stream not found")
    if stream.soft_deleted:
        raise StreamGone("Stream is gone")
    return stream


def _same_config(stream: DsStream, spec: CreateSpec) -> bool:
    """Whether a repeated ``PUT`` asks for the stream as it is (then it is an idempotent 200)."""
    wanted_type = spec.content_type or (None if spec.forked_from else DEFAULT_CONTENT_TYPE)
    inherits_expiry = spec.forked_from is not None and spec.ttl_seconds is None and spec.expires_at is None
    return (
        (
            wanted_type is None
            or normalize_content_type(wanted_type) == normalize_content_type(stream.content_type)
        )
        and (
            inherits_expiry or (spec.ttl_seconds, spec.expires_at) == (stream.ttl_seconds, stream.expires_at)
        )
        and spec.closed == stream.closed
        and spec.forked_from == stream.forked_from
        and (spec.fork_seq is None or spec.fork_seq == stream.fork_seq)
        and spec.fork_sub_offset == stream.fork_sub_offset
    )


def create_stream(
    uow: AbstractUnitOfWork, environment_id: str, path: str, spec: CreateSpec, now_ms: int
) -> Created:
    """Create the stream at ``path`` (a fork if ``spec.forked_from``), or confirm the same one.

    :raise Conflict: the path holds a different stream, or a soft-deleted one; the fork's source
        is soft-deleted or of another content type.
    :raise NotFound: the fork's source does not exist.
    :raise BadRequest: a fork offset past the source's tail, a sub-offset past its record, a bad
        initial body.
    """
    for attempt in range(2):
        try:
            with uow:
                created = _create(uow, environment_id, path, spec, now_ms)
                uow.commit()
                return created
        except StreamPathTaken:  # a concurrent PUT created it first: answer as a repeat
            if attempt:
                raise
    raise AssertionError("unreachable")


def _create(
    uow: AbstractUnitOfWork, environment_id: str, path: str, spec: CreateSpec, now_ms: int
) -> Created:
    existing = _gone_or_live(uow, uow.ds.get(environment_id, path, lock=True), now_ms)
    if existing is not None:
        if existing.soft_deleted:
            raise Conflict("Stream was deleted but still has active forks; the path cannot be reused yet")
        if not _same_config(existing, spec):
            raise Conflict("Stream already exists with different configuration")
        return Created(existing, uow.channels.tail(existing.key).seq_num, is_new=False)
    stream = DsStream(
        id=f"ds_{secrets.token_hex(12)}",
        environment_id=environment_id,
        path=path,
        content_type=spec.content_type or DEFAULT_CONTENT_TYPE,
        created_at_ms=now_ms,
        last_access_ms=now_ms,
        ttl_seconds=spec.ttl_seconds,
        expires_at=spec.expires_at,
        expires_at_ms=spec.expires_at_ms,
        closed=spec.closed,
    )
    records: list[str] = []
    if spec.forked_from is not None:
        stream, records = _fork(uow, stream, spec, now_ms)
    records += record_body(stream.content_type, spec.body, allow_empty=True)
    uow.ds.insert(stream, stream.first_own_seq)
    if records:
        uow.channels.append(stream.key, [NewRecord(body) for body in records], now_ms=now_ms)
    return Created(stream, uow.channels.tail(stream.key).seq_num, is_new=True)


def _fork(
    uow: AbstractUnitOfWork, stream: DsStream, spec: CreateSpec, now_ms: int
) -> tuple[DsStream, list[str]]:
    """``stream`` as a fork of ``spec.forked_from``, and the records it starts with (a sub-offset's
    prefix of the source record at the fork point); takes a reference on the source."""
    assert spec.forked_from is not None
    source = _gone_or_live(uow, uow.ds.get(stream.environment_id, spec.forked_from, lock=True), now_ms)
    if source is None:
        raise NotFound("Source stream not found")
    if source.soft_deleted:
        raise Conflict("Source stream was deleted but still has active forks")
    if spec.content_type and normalize_content_type(spec.content_type) != normalize_content_type(
        source.content_type
    ):
        raise Conflict("Content type mismatch with source stream")
    source_tail = uow.channels.tail(source.key).seq_num
    fork_seq = source_tail if spec.fork_seq is None else spec.fork_seq
    if fork_seq > source_tail:
        raise BadRequest("Fork offset beyond source stream length")
    records = []
    if spec.fork_sub_offset:
        records = [_sub_offset_prefix(uow, source, fork_seq, spec.fork_sub_offset)]
    expiry = (
        (spec.ttl_seconds, None, None)
        if spec.ttl_seconds is not None or spec.expires_at is not None
        else (source.ttl_seconds, source.expires_at, source.expires_at_ms)
    )
    if spec.ttl_seconds is None and spec.expires_at is not None:
        expiry = (None, spec.expires_at, spec.expires_at_ms)
    uow.ds.save(replace(source, ref_count=source.ref_count + 1))
    fork = replace(
        stream,
        content_type=spec.content_type or source.content_type,
        ttl_seconds=expiry[0],
        expires_at=expiry[1],
        expires_at_ms=expiry[2],
        source_id=source.id,
        forked_from=spec.forked_from,
        fork_seq=fork_seq,
        fork_sub_offset=spec.fork_sub_offset,
    )
    return fork, records


def _sub_offset_prefix(uow: AbstractUnitOfWork, source: DsStream, fork_seq: int, sub_offset: int) -> str:
    """The first ``sub_offset`` bytes (JSON: messages) of the source's record at ``fork_seq``."""
    found = _read_chain(uow, source, fork_seq, fork_seq + 1, 1, MAX_POSITION)
    if not found:
        raise BadRequest("Invalid fork sub-offset: no data past the fork offset")
    body = found[0]
    if is_json_type(source.content_type):
        values = json.loads(body)
        if sub_offset > len(values):
            raise BadRequest("Invalid fork sub-offset: overshoots the message count")
        return json_record_body([json.dumps(value, separators=(",", ":")) for value in values[:sub_offset]])
    data = base64.b64decode(body)
    if sub_offset > len(data):
        raise BadRequest("Invalid fork sub-offset: overshoots the message length")
    return base64.b64encode(data[:sub_offset]).decode()


#: Appends to one stream (environment id, path) that arrive while one is written join the next
#: write; each item is a request and when it arrived (epoch ms).
DsAppendGroups = GroupCommit[tuple[str, str], tuple[AppendRequest, int], Appended]


def append(
    uow: AbstractUnitOfWork,
    environment_id: str,
    path: str,
    request: AppendRequest,
    now_ms: int,
    groups: DsAppendGroups,
) -> Appended:
    """Append (and/or close) as one transaction: the records, ``Stream-Seq``, the producer's state.

    Appends to the same stream arriving while one is being written are written together, in one
    transaction under one lock of the stream's row (``GroupCommit``): each is judged in arrival
    order as if it ran alone, and gets its own outcome or error.

    :raise NotFound, StreamGone: no such stream, or a soft-deleted one.
    :raise StreamClosed: the stream is closed (a retry of the closing producer append is not).
    :raise Conflict: content type or ``Stream-Seq`` mismatch.
    :raise BadRequest: an empty body without close, invalid JSON, an empty JSON array.
    """
    if not request.body and not request.close:
        raise BadRequest("Empty body")

    def run(batch: list[tuple[AppendRequest, int]]) -> list[Appended | SessionsError]:
        return append_batch(uow, environment_id, path, batch)

    return groups.submit((environment_id, path), (request, now_ms), run, size=len(request.body))


class _Writes:
    """The records of a batch's appends, held back to be written together in one round trip:
    when an append needs the stream's tail, and once the batch is judged."""

    def __init__(self, uow: AbstractUnitOfWork, key: str, now_ms: int) -> None:
        self._uow = uow
        self._key = key
        self._now_ms = now_ms
        self._held: list[Append] = []
        #: Where each append's records end once written (the stream's tail after it), by index.
        self._ends: list[int] = []
        self._tail: int | None = None

    def add(self, records: list[NewRecord]) -> int:
        """Hold ``records`` back; returns the index ``end`` takes once they are written."""
        self._held.append(Append(records))
        return len(self._ends) + len(self._held) - 1

    def tail(self) -> int:
        """The stream's tail after every append so far."""
        self.flush()
        if self._tail is None:
            self._tail = self._uow.channels.tail(self._key).seq_num
        return self._tail

    def end(self, index: int) -> int:
        return self._ends[index]

    def flush(self) -> None:
        if not self._held:
            return
        acks = self._uow.channels.append_group(self._key, self._held, now_ms=self._now_ms)
        self._ends.extend(ack.end.seq_num for ack in acks)
        self._tail = acks[-1].tail.seq_num
        self._held = []


def append_batch(
    uow: AbstractUnitOfWork, environment_id: str, path: str, batch: list[tuple[AppendRequest, int]]
) -> list[Appended | SessionsError]:
    """Judge a batch of appends to one stream in arrival order and write it; one outcome each.

    Each append is judged at its own arrival time: one that arrived after the stream expired is
    refused as it would have been alone, though the ones before it were taken.
    """
    first = min(arrived for _, arrived in batch)
    with uow:
        stream = original = _existing(uow, environment_id, path, first, lock=True)
        writes = _Writes(uow, stream.key, max(arrived for _, arrived in batch))
        judged: list[tuple[Appended, int | None] | SessionsError] = []
        for request, arrived in batch:
            try:
                if is_expired(stream.ttl_seconds, stream.expires_at_ms, stream.last_access_ms, arrived):
                    raise NotFound("Stream not found")
                stream, outcome, written = _append(uow, stream, request, arrived, writes)
            except SessionsError as error:
                judged.append(error)
            else:
                judged.append((outcome, written))
        writes.flush()
        if stream != original:
            uow.ds.save(stream)
        uow.commit()
    return [_written(item, writes) for item in judged]


def _written(
    judged: tuple[Appended, int | None] | SessionsError, writes: _Writes
) -> Appended | SessionsError:
    """An append's outcome once its batch is written: its tail is where its records ended."""
    if isinstance(judged, SessionsError):
        return judged
    outcome, written = judged
    return outcome if written is None else replace(outcome, tail=writes.end(written))


def _append(
    uow: AbstractUnitOfWork, stream: DsStream, request: AppendRequest, now_ms: int, writes: _Writes
) -> tuple[DsStream, Appended, int | None]:
    """One append of a batch: the stream as it leaves it, its outcome, and the index of its held
    records in ``writes`` (their end is its tail) if it has any."""
    producer = request.producer
    if stream.closed:
        tail = writes.tail()
        if producer is not None and producer == stream.closed_by:
            return stream, Appended(tail, True, ProducerVerdict("duplicate", last_seq=producer.seq)), None
        if not request.body and producer is None:
            return _renewed(stream, now_ms), Appended(tail, True), None
        raise StreamClosed(tail)
    if request.body and normalize_content_type(request.content_type) != normalize_content_type(
        stream.content_type
    ):
        raise Conflict("Content-Type does not match the stream's")
    verdict = None
    if producer is not None:
        verdict = judge_producer(uow.ds.producer(stream.id, producer.producer_id), producer)
        if verdict.status != "accepted":
            return stream, Appended(writes.tail(), False, verdict), None
    updated = stream
    if request.body and request.stream_seq is not None:
        if stream.stream_seq is not None and request.stream_seq <= stream.stream_seq:
            raise Conflict("Stream-Seq must be greater than the last one")
        updated = replace(updated, stream_seq=request.stream_seq)
    records = [NewRecord(body) for body in record_body(stream.content_type, request.body)]
    written = writes.add(records) if records else None
    if producer is not None and verdict is not None and verdict.state is not None:
        uow.ds.save_producer(stream.id, producer.producer_id, verdict.state, now_ms)
    if request.close:
        updated = replace(updated, closed=True, closed_by=producer)
        uow.wake_readers(stream.key)
    updated = _renewed(updated, now_ms)
    # An append that wrote learns its tail once the batch is written (``_written``).
    tail = -1 if written is not None else writes.tail()
    return updated, Appended(tail, updated.closed, verdict), written


def _renewed(stream: DsStream, now_ms: int) -> DsStream:
    """``stream`` with its sliding TTL restarted at ``now_ms`` (as it is without one); the batch
    writes it with the rest of the stream's state."""
    if stream.ttl_seconds is None:
        return stream
    return replace(stream, last_access_ms=max(now_ms, stream.last_access_ms))


def head(
    read_uow: AbstractUnitOfWork, write_uow: AbstractUnitOfWork, environment_id: str, path: str, now_ms: int
) -> tuple[DsStream, int]:
    """The stream and its tail, without renewing its TTL. :raise NotFound, StreamGone.

    Runs read-only unless the stream has just expired and must be deleted.
    """
    with read_uow:
        stream = read_uow.ds.get(environment_id, path)
        if not _needs_write(stream, now_ms, touch=False):
            live = _check_live(stream)
            return live, read_uow.channels.tail(live.key).seq_num
    with write_uow:
        stream = _existing(write_uow, environment_id, path, now_ms, lock=False)
        tail = write_uow.channels.tail(stream.key).seq_num
        write_uow.commit()
    return stream, tail


def delete(uow: AbstractUnitOfWork, environment_id: str, path: str, now_ms: int) -> None:
    """Delete the stream; one that forks still read is soft-deleted until the last fork goes.

    :raise NotFound, StreamGone.
    """
    with uow:
        stream = _existing(uow, environment_id, path, now_ms, lock=True)
        if stream.ref_count > 0:
            uow.ds.save(replace(stream, soft_deleted=True))
            uow.wake_readers(stream.key)
        else:
            _remove(uow, stream)
        uow.commit()


def read(
    read_uow: AbstractUnitOfWork,
    write_uow: AbstractUnitOfWork,
    environment_id: str,
    path: str,
    start: int | None,
    limit: int,
    now_ms: int,
    max_bytes: int = MAX_POSITION,
) -> ReadResult:
    """Read up to ``limit`` records from position ``start`` (None: the tail), renewing the TTL, and
    no more than ``max_bytes`` of stored records plus one.

    A fork's positions below its fork point come from its source, recursively. Streams without a
    TTL are read read-only (unless just expired), so readers never queue for the write lock.

    :raise NotFound, StreamGone.
    """
    with read_uow:
        stream = read_uow.ds.get(environment_id, path)
        if not _needs_write(stream, now_ms, touch=True):
            return _read(read_uow, _check_live(stream), start, limit, max_bytes)
    with write_uow:
        stream = _existing(write_uow, environment_id, path, now_ms, lock=False)
        result = _read(write_uow, write_uow.ds.touch(stream, now_ms), start, limit, max_bytes)
        write_uow.commit()
    return result


def _needs_write(stream: DsStream | None, now_ms: int, *, touch: bool) -> bool:
    """Whether an access must write: to renew a sliding TTL, or to delete an expired stream."""
    if stream is None:
        return False
    if touch and stream.ttl_seconds is not None:
        return True
    return is_expired(stream.ttl_seconds, stream.expires_at_ms, stream.last_access_ms, now_ms)


def _check_live(stream: DsStream | None) -> DsStream:
    if stream is None:
        raise NotFound("Stream not found")
    if stream.soft_deleted:
        raise StreamGone("Stream is gone")
    return stream


def _read(
    uow: AbstractUnitOfWork, stream: DsStream, start: int | None, limit: int, max_bytes: int
) -> ReadResult:
    tail = uow.channels.tail(stream.key).seq_num
    begin = tail if start is None else start
    bodies = _read_chain(uow, stream, begin, tail, limit, max_bytes) if begin < tail else []
    next_seq = begin + len(bodies) if bodies else tail
    return ReadResult(stream.key, stream.content_type, stream.closed, bodies, next_seq, tail)


def _read_chain(
    uow: AbstractUnitOfWork, stream: DsStream, start: int, end: int, limit: int, max_bytes: int
) -> list[str]:
    """Record bodies of positions ``start``..``end`` (exclusive) as ``stream`` sees them, up to
    ``limit`` of them and about ``max_bytes`` (each store read stops one record past its share)."""
    bodies: list[str] = []
    own_start = stream.first_own_seq
    if start < own_start and stream.source_id is not None:
        source = uow.ds.get_by_id(stream.source_id)
        if source is not None:
            bodies = _read_chain(uow, source, start, min(end, own_start), limit, max_bytes)
            if len(bodies) < min(end, own_start) - start:  # the source's part stopped at a bound
                return bodies
        max_bytes -= sum(len(body.encode()) for body in bodies)
        if len(bodies) >= limit or end <= own_start or max_bytes <= 0:
            return bodies[:limit]
    begin = max(start, own_start)
    records = uow.channels.read(stream.key, begin, min(limit - len(bodies), end - begin), max_bytes)
    return bodies + [record.body for record in records if record.seq_num < end]
