"""Server-sent events in S2's read-session format, and the bounded live-tail generator behind them.

Events are ``batch`` (records and the tail), ``ping`` (a timestamp) and ``error`` (retryable, as the
S2 client treats it). The generator never holds a database connection between reads: each read
runs through ``fetch`` (one short unit of work) and waits on a hub subscription in between.
"""

from __future__ import annotations

import base64
import bisect
import json
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Response, request

from session_core.channels.records import ReadBatch, StreamPosition
from session_core.channels.wakeups import WakeupHub
from session_core.models import ChannelRecord
from session_core.s2 import ReadLimits, body_bytes, clip_records, metered_bytes
from session_core.services.channels import MAX_BATCH_BYTES, read_batch
from session_core.services.markers import is_session_closed_record
from session_web import direct_write, metrics
from session_web.direct_write import DirectSink
from session_web.services import Services

#: Headers every SSE response carries: no caching, no proxy buffering, v2 wire for Trigger's client.
SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "X-Stream-Version": "v2",
    "Access-Control-Expose-Headers": "*",
}
SHUTDOWN_MESSAGE = "Server is shutting down; reconnect to resume"
#: The longest a live read stays open at the tail without a record (realtime's ``Timeout-Seconds``,
#: S2's ``wait``): every live read ends, and the client reconnects from where it stopped.
MAX_WAIT_SECONDS = 600


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def record_json(record: ChannelRecord, *, is_base64: bool = False) -> dict[str, Any]:
    """A record as S2 sends it; empty headers and bodies are left out, as S2 leaves them out."""
    item: dict[str, Any] = {"seq_num": record.seq_num, "timestamp": record.timestamp}
    if record.headers:
        item["headers"] = [
            [_b64(n.encode()), _b64(v.encode())] if is_base64 else [n, v] for n, v in record.headers
        ]
    if record.body:
        item["body"] = _b64(body_bytes(record)) if is_base64 else record.body
    return item


def position_json(position: StreamPosition) -> dict[str, int]:
    return {"seq_num": position.seq_num, "timestamp": position.timestamp}


def event(name: str, data: str, event_id: str | None = None) -> str:
    """One SSE event; a multi-line ``data`` becomes several ``data:`` lines."""
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


def ping_event(now_ms: int) -> bytes:
    return event("ping", _json({"timestamp": now_ms})).encode()


def error_event(message: str) -> bytes:
    return event("error", message).encode()


#: Each batch's ``batch`` event data and metered bytes, by ``is_base64``. Readers woken by one
#: append share one batch (the records it wrote, or ``Services.reads``): a thousand readers taking
#: the whole batch encode it once, not once each.
_ENCODINGS: weakref.WeakKeyDictionary[ReadBatch, dict[bool, tuple[str, int]]] = weakref.WeakKeyDictionary()


def _batch_data(batch: ReadBatch, records: list[ChannelRecord], is_base64: bool) -> tuple[str, int]:
    """The ``batch`` event's data for ``records`` (a prefix of ``batch.records``) and their metered
    bytes; worked out once per batch when the prefix is the whole batch."""
    encodings = _ENCODINGS.setdefault(batch, {}) if len(records) == len(batch.records) else {}
    if is_base64 not in encodings:
        payload = {
            "records": [record_json(r, is_base64=is_base64) for r in records],
            "tail": position_json(batch.tail),
        }
        encodings[is_base64] = _json(payload), sum(metered_bytes(record) for record in records)
    return encodings[is_base64]


#: How many leading records of each batch fit in one ``batch`` event (``within_batch_bytes``).
_FITS: weakref.WeakKeyDictionary[ReadBatch, int] = weakref.WeakKeyDictionary()


def within_batch_bytes(batch: ReadBatch) -> int:
    """How many leading records of ``batch`` one ``batch`` event carries: up to the one that brings
    their metered bytes to ``MAX_BATCH_BYTES``. Reads are already bounded so; the records an
    append wrote (handed over without a read) may be more. Worked out once per batch."""
    if batch not in _FITS:
        fits, total = len(batch.records), 0
        for index, record in enumerate(batch.records):
            total += metered_bytes(record)
            if total >= MAX_BATCH_BYTES:
                fits = index + 1
                break
        _FITS[batch] = fits
    return _FITS[batch]


@dataclass(frozen=True)
class TailOptions:
    """How one live read runs: how long it stays open at the tail, and how often it pings."""

    wait_seconds: float
    ping_seconds: float
    limits: ReadLimits = ReadLimits()
    is_base64: bool = False
    #: End the read right after the end-of-session marker (the realtime route's readers).
    end_on_close: bool = False


def through_close(records: list[ChannelRecord]) -> list[ChannelRecord] | None:
    """The records up to and including the first end-of-session marker; None when none holds one."""
    for index, record in enumerate(records):
        if is_session_closed_record(record):
            return records[: index + 1]
    return None


def live_wait_seconds(requested: int | None, default: int) -> int:
    """How long a live read waits at the tail: what was asked for, else ``default``, at most 600 s."""
    return min(default if requested is None else requested, MAX_WAIT_SECONDS)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _observe_delivery(records: list[ChannelRecord], opened_ms: int) -> None:
    """Time how long the oldest record appended since the read opened waited for this delivery.

    Records from before the read are catch-up, not delivery; timestamps never decrease along a
    channel, so the first new record is found by bisection (a live reader's first record is new).
    """
    if records[-1].timestamp < opened_ms:
        return
    first_new = records[0]
    if first_new.timestamp < opened_ms:
        first_new = records[bisect.bisect_left(records, opened_ms, key=lambda r: r.timestamp)]
    metrics.observe_delivery((_now_ms() - first_new.timestamp) / 1000)


@dataclass
class _Step:
    """What a reader at one position sends from one batch, and where that leaves it."""

    records: list[ChannelRecord]
    #: The ``batch`` event carrying ``records``, encoded; None when there are none.
    text: bytes | None
    next_seq: int
    counted: int
    metered: int
    is_done: bool
    #: ``text`` framed for the wire, by ``chunked``: framed once for every reader it is written to.
    _framed: dict[bool, bytes] = field(default_factory=dict, compare=False)

    def on_wire(self, chunked: bool) -> bytes:
        """``text`` as a connection writes it (``direct_write.frame``); only for a step with text."""
        framed = self._framed.get(chunked)
        if framed is None:
            assert self.text is not None
            framed = self._framed[chunked] = direct_write.frame(self.text, chunked)
        return framed


#: Each batch's last step, by the reader's position and options: readers woken together at one
#: position (the usual fan-out) share one step, event text included. One slot per batch bounds the
#: memory to one event per batch, whatever mix of positions reads it.
_STEPS: weakref.WeakKeyDictionary[ReadBatch, tuple[tuple[object, ...], _Step]] = weakref.WeakKeyDictionary()


def _step(batch: ReadBatch, next_seq: int, counted: int, metered: int, options: TailOptions) -> _Step:
    """The step from ``next_seq`` (``counted`` records and ``metered`` bytes sent so far) over
    ``batch``, read from ``next_seq``: a pure function of its arguments, so worked out once for
    the readers that share them."""
    position = (next_seq, counted, metered, options.limits, options.is_base64, options.end_on_close)
    last = _STEPS.get(batch)
    if last is not None and last[0] == position:
        return last[1]
    records, is_done = clip_records(batch.records, options.limits, counted, metered)
    if len(records) > within_batch_bytes(batch):
        records, is_done = records[: within_batch_bytes(batch)], False
    closed = through_close(records) if options.end_on_close else None
    if closed is not None:
        records, is_done = closed, True
    text = None
    if records:
        data, size = _batch_data(batch, records, options.is_base64)
        counted += len(records)
        metered += size
        next_seq = records[-1].seq_num + 1
        text = event("batch", data, f"{next_seq},{counted},{metered}").encode()
    step = _Step(records, text, next_seq, counted, metered, is_done)
    _STEPS[batch] = (position, step)
    return step


def tail_events(
    fetch: Callable[[int], ReadBatch],
    hub: WakeupHub,
    key: str,
    start_seq: int,
    options: TailOptions,
    clock: Callable[[], float] = time.monotonic,
    sink: DirectSink | None = None,
) -> Iterator[bytes]:
    """Yield SSE events (UTF-8, as they go on the wire) from ``start_seq`` on, live, until the read is done.

    A ping goes out first so the response headers leave at once. Batches follow as records
    arrive; the read ends after ``wait_seconds`` at the tail without a record, when its limits
    are reached, after the end-of-session marker (with ``end_on_close``), or on shutdown (with an ``error``
    event: S2's client resumes elsewhere).
    Starting past the tail starts at the tail (S2's ``clamp``). The subscription is taken before
    the first read and dropped at the end, also when the client goes away and the server closes
    this generator.

    With a ``sink`` (the connection, see ``session_web.direct_write``), records this process appends
    while the read waits at the tail are written to the connection by the appender's fan-out, and
    this generator only catches up with where that left it.
    """
    with hub.subscribe(key) as subscription, metrics.open_subscriber():
        opened_ms = _now_ms()
        yield ping_event(opened_ms)
        next_seq, counted, metered = start_seq, 0, 0
        last_event_at = clock()
        idle_until = last_event_at + options.wait_seconds
        is_parked = False  # waiting at ``next_seq``, the tail: the fan-out may write for this read
        unsent = b""  # the rest of an event the fan-out began to write; the connection's next bytes

        def deliver_directly(batch: ReadBatch) -> bool:
            nonlocal next_seq, counted, metered, last_event_at, idle_until, unsent
            assert sink is not None
            if not is_parked or unsent or batch.records[0].seq_num != next_seq:
                return False
            step = _step(batch, next_seq, counted, metered, options)
            if step.text is None or step.is_done or step.next_seq < batch.tail.seq_num:
                return False  # a read at its limits or its end, or a batch it takes in parts
            try:
                wire = step.on_wire(sink.chunked)
                sent = sink.try_send(wire)
            except OSError:
                return False  # gone: the generator's own next write finds out and ends
            if not sent:
                return False
            next_seq, counted, metered = step.next_seq, step.counted, step.metered
            last_event_at = clock()
            idle_until = last_event_at + options.wait_seconds
            _observe_delivery(step.records, opened_ms)
            unsent = wire[sent:]
            return not unsent  # a full socket: wake the generator to send the rest

        def finish_unsent() -> None:
            """Send the rest of an event the fan-out began: nothing else may go out before it."""
            nonlocal unsent
            if unsent:
                sink.send_all(unsent)  # type: ignore[union-attr]  # only the fan-out sets ``unsent``
                unsent = b""

        if sink is not None:
            subscription.deliver_directly = deliver_directly
        while not hub.is_closed:
            finish_unsent()
            batch = subscription.take_written(next_seq) or fetch(next_seq)
            step = _step(batch, next_seq, counted, metered, options)
            if step.text is not None:
                next_seq, counted, metered = step.next_seq, step.counted, step.metered
                yield step.text
                _observe_delivery(step.records, opened_ms)
                last_event_at = clock()
                idle_until = last_event_at + options.wait_seconds
            if step.is_done:
                return
            if step.records and next_seq < batch.tail.seq_num:
                continue  # more records are already waiting
            # At the tail: also skips trimmed records, or clamps a start past the tail.
            next_seq = batch.tail.seq_num
            now = clock()
            if now >= idle_until:
                return
            is_parked = True
            woke = subscription.wait(next_seq, min(idle_until, last_event_at + options.ping_seconds) - now)
            is_parked = False
            if not woke and not unsent and clock() >= last_event_at + options.ping_seconds:
                yield ping_event(_now_ms())
                last_event_at = clock()
        finish_unsent()
        yield error_event(SHUTDOWN_MESSAGE)


def live_events(s: Services, key: str, start_seq: int, options: TailOptions) -> Iterator[bytes]:
    """Tail channel ``key``; each read is one short unit of work, shared by readers asking the same."""
    batch_size = s.settings.read_batch_limit

    def fetch(seq: int) -> ReadBatch:
        return s.reads.do((key, seq, batch_size), lambda: read_batch(s.read_uow(), key, seq, batch_size))

    sink = request.environ.get(direct_write.ENVIRON_KEY)
    return tail_events(fetch, s.hub, key, start_seq, options, sink=sink)


class _EventStreamResponse(Response):
    """A response whose body is already bytes: handed to the server as it is, not re-encoded event
    by event (what a fan-out to thousands of readers would pay once per reader and event)."""

    def iter_encoded(self) -> Iterator[bytes]:
        events: Iterator[bytes] = self.response  # type: ignore[assignment]
        return events


def event_stream(events: Iterator[bytes], headers: dict[str, str] | None = None) -> Response:
    """A streaming ``text/event-stream`` response; every event is written as soon as it is yielded."""
    return _EventStreamResponse(
        events, mimetype="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
    )
