"""Durable Streams protocol rules as pure functions: offsets, TTL, cursors, JSON mode, producers.

Nothing here does I/O, so every rule the conformance suite checks has a unit test of its own.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from session_core.errors import BadRequest, Conflict
from session_core.text import is_storable

#: Offsets are two zero-padded 16-digit halves, ``{high}_{low}``: opaque to clients, fixed width
#: (so byte order is position order), the shape the reference server mints. The position is
#: ``high * 10**16 + low``; ours is the record's seq_num, so ``high`` is 0 for any real stream.
_HALF = 10**16
_OFFSET = re.compile(r"([0-9]+)_([0-9]+)")
OFFSET_START = "-1"
OFFSET_NOW = "now"
#: Stream-TTL and sub-offsets: a non-negative decimal integer, no sign, no leading zeros.
_STRICT_INT = re.compile(r"0|[1-9][0-9]*")
_PRODUCER_INT = re.compile(r"[0-9]+")
MAX_SAFE_INTEGER = 2**53 - 1
#: Seconds a TTL may run; more would overflow millisecond arithmetic in every client.
MAX_TTL_SECONDS = 10**11
DEFAULT_CONTENT_TYPE = "application/octet-stream"
JSON_TYPE = "application/json"
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+")
#: Cursor intervals: 20 s buckets counted from 2024-10-09T00:00:00Z (the protocol's epoch).
CURSOR_EPOCH_MS = 1_728_432_000_000
CURSOR_INTERVAL_MS = 20_000
MAX_CURSOR_JITTER_SECONDS = 3600


def format_offset(position: int) -> str:
    """The offset naming ``position``; never ``-1`` or ``now``."""
    high, low = divmod(position, _HALF)
    return f"{high:016d}_{low:016d}"


def parse_offset(text: str) -> int | None:
    """The position an offset names, or None when it is not an offset we could have minted."""
    match = _OFFSET.fullmatch(text)
    if match is None or len(text) > 200:
        return None
    return int(match.group(1)) * _HALF + int(match.group(2))


def normalize_content_type(value: str | None) -> str:
    """The media type alone, lower-cased: ``application/json; charset=utf-8`` is ``application/json``."""
    return (value or "").split(";")[0].strip().lower()


def creation_content_type(value: str | None) -> str | None:
    """The content type a PUT names, or None when it names none (empty or not a media type)."""
    if value is None or not _MEDIA_TYPE.match(value.strip()):
        return None
    return value.strip()


def is_json_type(content_type: str) -> bool:
    return normalize_content_type(content_type) == JSON_TYPE


def is_text_type(content_type: str) -> bool:
    """Whether SSE may carry this type's bytes as text: ``text/*`` and JSON; others go as base64."""
    media = normalize_content_type(content_type)
    return media.startswith("text/") or media == JSON_TYPE


def parse_ttl(value: str) -> int:
    """``Stream-TTL`` in seconds. :raise BadRequest: anything but a plain decimal integer."""
    if not _STRICT_INT.fullmatch(value) or int(value) > MAX_TTL_SECONDS:
        raise BadRequest("Invalid Stream-TTL value")
    return int(value)


def parse_expires_at(value: str) -> int:
    """``Stream-Expires-At`` (RFC 3339) as epoch milliseconds; a zoneless time is UTC.

    :raise BadRequest: not a timestamp.
    """
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise BadRequest("Invalid Stream-Expires-At timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp() * 1000)


def parse_sub_offset(value: str) -> int:
    """``Stream-Fork-Sub-Offset``: bytes (binary) or messages (JSON) into the record at the fork offset."""
    if not _STRICT_INT.fullmatch(value) or int(value) > MAX_SAFE_INTEGER:
        raise BadRequest("Invalid Stream-Fork-Sub-Offset format")
    return int(value)


def is_expired(ttl_seconds: int | None, expires_at_ms: int | None, last_access_ms: int, now_ms: int) -> bool:
    """Whether a stream has expired: past its absolute expiry, or idle for its (sliding) TTL."""
    if expires_at_ms is not None and now_ms >= expires_at_ms:
        return True
    return ttl_seconds is not None and now_ms >= last_access_ms + ttl_seconds * 1000


def response_cursor(client_cursor: str | None, now_ms: int, rng: random.Random | None = None) -> str:
    """``Stream-Cursor``: the current 20 s interval, or, when the client echoes one at or past it,
    a strictly larger one (1 s to 1 h of jitter) so CDN-collapsed long-polls never loop."""
    current = (now_ms - CURSOR_EPOCH_MS) // CURSOR_INTERVAL_MS
    if client_cursor is None or not client_cursor.isdigit() or len(client_cursor) > 18:
        return str(current)
    echoed = int(client_cursor)
    if echoed < current:
        return str(current)
    jitter_seconds = (rng or random).randint(1, MAX_CURSOR_JITTER_SECONDS)
    return str(echoed + max(1, math.ceil(jitter_seconds * 1000 / CURSOR_INTERVAL_MS)))


def etag(path: str, start: str, end: str, closed: bool) -> str:
    """A read's ETag: stream, start and end offsets, and ``:c`` once the read reached a closed tail."""
    encoded = base64.b64encode(path.encode()).decode()
    return f'"{encoded}:{start}:{end}{":c" if closed else ""}"'


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _compact(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if is_storable(text) else json.dumps(value, separators=(",", ":"))


def json_messages(raw: bytes, *, allow_empty: bool) -> list[str]:
    """A JSON-mode body as the messages it adds, each as compact JSON text.

    A top-level array is flattened one level (each element a message); any other value is one
    message. An empty array adds nothing, which only a create may do.

    :raise BadRequest: invalid JSON, or an empty array where it is not allowed.
    """
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadRequest("Invalid JSON") from None
    if not isinstance(value, list):
        return [_compact(value)]
    if not value and not allow_empty:
        raise BadRequest("Empty arrays are not allowed")
    return [_compact(item) for item in value]


def json_record_body(messages: list[str]) -> str:
    """A JSON-mode record's stored body: its messages as one JSON array."""
    return "[" + ",".join(messages) + "]"


def json_record_messages(body: str) -> str:
    """A stored JSON-mode record's messages, comma-joined (the array without its brackets)."""
    return body[1:-1]


def json_array(bodies: list[str]) -> str:
    """Stored JSON-mode records as the one JSON array a read returns."""
    return "[" + ",".join(inner for inner in map(json_record_messages, bodies) if inner) + "]"


@dataclass(frozen=True)
class ProducerHeaders:
    """``Producer-Id``/``-Epoch``/``-Seq`` of an append, all three or none."""

    producer_id: str
    epoch: int
    seq: int


def parse_producer(producer_id: str | None, epoch: str | None, seq: str | None) -> ProducerHeaders | None:
    """The producer tuple of a request; None without producer headers.

    :raise BadRequest: only some of the three, an empty id, or a count that is not a safe integer.
    """
    given = [producer_id, epoch, seq]
    if all(part is None for part in given):
        return None
    if producer_id is None or epoch is None or seq is None:
        raise BadRequest("Producer-Id, Producer-Epoch and Producer-Seq must be sent together")
    if not producer_id or not is_storable(producer_id) or len(producer_id) > 1024:
        raise BadRequest("Invalid Producer-Id")
    numbers = []
    for name, text in (("Producer-Epoch", epoch), ("Producer-Seq", seq)):
        if not _PRODUCER_INT.fullmatch(text) or int(text) > MAX_SAFE_INTEGER:
            raise BadRequest(f"Invalid {name}: must be a non-negative integer")
        numbers.append(int(text))
    return ProducerHeaders(producer_id, numbers[0], numbers[1])


@dataclass(frozen=True)
class ProducerState:
    epoch: int
    last_seq: int


@dataclass(frozen=True)
class ProducerVerdict:
    """What an append with producer headers gets (§5.2.1).

    ``status`` is ``accepted`` (write, then store ``state``), ``duplicate`` (204, nothing written;
    ``last_seq`` is the highest accepted), ``stale_epoch`` (403, ``current_epoch``),
    ``invalid_epoch_seq`` (400) or ``sequence_gap`` (409, ``expected_seq``).
    """

    status: str
    state: ProducerState | None = None
    last_seq: int = 0
    current_epoch: int = 0
    expected_seq: int = 0


def judge_producer(state: ProducerState | None, request: ProducerHeaders) -> ProducerVerdict:
    """Kafka-style idempotent producer validation: fence stale epochs, drop duplicates, refuse gaps."""
    fresh = ProducerVerdict("accepted", ProducerState(request.epoch, request.seq))
    if state is None:
        return fresh if request.seq == 0 else ProducerVerdict("sequence_gap", expected_seq=0)
    if request.epoch < state.epoch:
        return ProducerVerdict("stale_epoch", current_epoch=state.epoch)
    if request.epoch > state.epoch:
        return fresh if request.seq == 0 else ProducerVerdict("invalid_epoch_seq")
    if request.seq <= state.last_seq:
        return ProducerVerdict("duplicate", last_seq=state.last_seq)
    if request.seq == state.last_seq + 1:
        return fresh
    return ProducerVerdict("sequence_gap", expected_seq=state.last_seq + 1)


def ds_channel_key(environment_id: str, stream_id: str) -> str:
    """The channel-store key of a stream's records; ``ds/`` keeps them apart from session channels."""
    return f"{environment_id}/ds/{stream_id}"


@dataclass(frozen=True)
class DsStream:
    """A Durable Stream's configuration and state (see ``ds_streams`` in the tables)."""

    id: str
    environment_id: str
    path: str
    content_type: str
    created_at_ms: int
    last_access_ms: int
    ttl_seconds: int | None = None
    expires_at: str | None = None
    expires_at_ms: int | None = None
    closed: bool = False
    closed_by: ProducerHeaders | None = None
    soft_deleted: bool = False
    ref_count: int = 0
    source_id: str | None = None
    forked_from: str | None = None
    fork_seq: int | None = None
    fork_sub_offset: int = 0
    stream_seq: str | None = None

    @property
    def key(self) -> str:
        return ds_channel_key(self.environment_id, self.id)

    @property
    def first_own_seq(self) -> int:
        """Where the stream's own records start: its fork point, else 0."""
        return self.fork_seq or 0


class StreamPathTaken(Conflict):
    """Raised when a stream is created at a path another stream already holds (a racing create won)."""

    def __init__(self) -> None:
        super().__init__("A stream already exists at this path")
