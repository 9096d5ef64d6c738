"""Blueprint for a session's channels: ``/realtime/v1/sessions/<session>/<io>`` (wire reference §7).

``PUT`` grants direct S2 access (to our own S2-compatible endpoint), ``POST …/append`` writes one
record, ``POST …/records`` writes several (data, control and trim records, as an agent needs),
``GET`` tails the channel over SSE and ``GET …/records`` drains it once as JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from flask import Blueprint, Response, g, request

from session_core import envelopes
from session_core.errors import BadRequest
from session_core.models import IOS, ChannelRecord, Io, utcnow
from session_core.scopes import Principal
from session_core.services import channels as service
from session_core.services.s2_streams import ReadStart, resolve_start
from session_web import sse
from session_web.metrics import count_append
from session_web.routing import api_route, parse_json, read_body
from session_web.services import Services, services

bp = Blueprint("realtime", __name__, url_prefix="/realtime/v1/sessions")

#: The S2 basin we name in ``X-S2-Basin``; the published S2 client insists on S2's basin syntax.
S2_BASIN = "sessions"
S2_PATH = "/s2/v1"
S2_FLUSH_INTERVAL_MS = "100"
S2_MAX_RETRIES = "10"
MAX_TIMEOUT_SECONDS = sse.MAX_WAIT_SECONDS
MAX_PART_ID_LENGTH = envelopes.MAX_PART_ID_CHARS
#: A ``GET …/records`` page holds up to this many read batches of records, and stops at the record
#: that brings its stored bytes to ``RECORDS_PAGE_BYTES`` (the page's JSON is about that size):
#: callers page with ``afterEventId``, so fewer, fuller pages save them a request per batch.
RECORDS_PAGE_BATCHES = 10
RECORDS_PAGE_BYTES = 4 * 1024 * 1024
#: A seq_num as a client sends it: ASCII digits, few enough for a 64-bit integer.
_DIGITS = re.compile(r"[0-9]{1,19}")
#: The SSE ``id:`` of a ``batch`` event we send: ``next_seq,count,bytes`` (see ``sse.tail_events``).
_EMITTED_EVENT_ID = re.compile(r"([0-9]{1,19}),[0-9]{1,19},[0-9]{1,19}")
#: What an HTTP header value carries as it is: printable Latin-1, no line breaks or controls.
_HEADER_VALUE = re.compile(r"[\x20-\x7e\xa0-\xff]*")


def parse_io(value: str) -> Io:
    """The channel named in the URL: ``in`` or ``out``, else a 400 (``Params Error``)."""
    if value not in IOS:
        raise BadRequest("Params Error")
    return value


def parse_timeout_seconds(value: str | None, default: int) -> int:
    """``Timeout-Seconds``: an integer 1..600, with Trigger.dev's plain-text messages."""
    if value is None:
        return default
    try:
        seconds = int(value.strip())
    except ValueError:
        raise BadRequest("Invalid timeout seconds") from None
    if seconds <= 0:
        raise BadRequest("Timeout seconds must be greater than 0")
    if seconds > MAX_TIMEOUT_SECONDS:
        raise BadRequest("Timeout seconds must be less than 600")
    return seconds


def resume_seq(last_event_id: str | None) -> int:
    """The seq_num a live read resumes at, from the ``Last-Event-ID`` a client sends back.

    Two forms name a position exactly:

    - the SSE ``id:`` we emit, ``next_seq,count,bytes``, which a browser ``EventSource`` returns
      on reconnect: its first number is the seq_num *after* the batch, so the read resumes there;
    - a plain seq_num (what ``@trigger.dev/core`` sends: the last record it saw), optionally with
      a ``-suffix`` as Trigger.dev's parser allows: the read resumes after it.

    Anything else (absent, empty, garbage) replays the channel from the start.
    """
    value = (last_event_id or "").strip()
    emitted = _EMITTED_EVENT_ID.fullmatch(value)
    if emitted:
        return int(emitted.group(1))
    head = value.split("-")[0].strip()
    return int(head) + 1 if _DIGITS.fullmatch(head) else 0


def records_item(record: ChannelRecord) -> dict[str, Any] | None:
    """A record as ``GET …/records`` lists it; command records are left out (None).

    ``timestamp`` (arrival, epoch ms) goes beyond Trigger.dev's shape, which its clients ignore:
    our Python client's records carry it whether read live or from a page.
    """
    if envelopes.is_command_record(record):
        return None
    if record.headers and not record.body:  # a control record: headers only
        return {
            "data": "",
            "id": "",
            "seqNum": record.seq_num,
            "timestamp": record.timestamp,
            "headers": record.headers,
        }
    data, part = envelopes.open_envelope(record)
    item: dict[str, Any] = {"data": data, "id": part, "seqNum": record.seq_num, "timestamp": record.timestamp}
    if record.headers:
        item["headers"] = record.headers
    return item


def records_json(records: list[ChannelRecord]) -> bytes:
    """The ``GET …/records`` body: ``{"records": [records_item, …]}``, command records left out.

    Catch-up reads are thousands of records: orjson encodes the page in one call, and the standard
    library only a page holding what orjson refuses (numbers past 64 bits, lone surrogates). NaN
    and infinities, which a stored body may hold but JSON cannot, come out as null.
    """
    page = {"records": [item for item in map(records_item, records) if item is not None]}
    try:
        return orjson.dumps(page)
    except TypeError:
        return json.dumps(page).encode()


@api_route(bp, "/<session:session_ref>/<io>", methods=["PUT"], error_style="text")
def initialize_channel(
    principal: Principal, session_ref: str, io: str
) -> tuple[dict[str, str], int, dict[str, str]]:
    s = services()
    grant = service.initialize_channel(s.uow(), principal, session_ref, parse_io(io), utcnow())
    if not _HEADER_VALUE.fullmatch(grant.stream_name):
        raise BadRequest(
            "This session's externalId holds characters an HTTP header cannot carry (line breaks,"
            " control characters or characters past U+00FF), so X-S2-Stream-Name cannot name its"
            " channel; append with POST …/append instead"
        )
    endpoint = s.settings.base_url + S2_PATH  # never the request's Host: a client could forge it
    headers = {
        "X-S2-Access-Token": grant.access_token,
        "X-S2-Stream-Name": grant.stream_name,
        "X-S2-Basin": S2_BASIN,
        "X-S2-Flush-Interval-Ms": S2_FLUSH_INTERVAL_MS,
        "X-S2-Max-Retries": S2_MAX_RETRIES,
        "X-S2-Endpoint": endpoint,
    }
    return {"version": "v2"}, 202, headers


@api_route(bp, "/<session:session_ref>/<io>/append", methods=["POST"], error_style="ok")
def append_to_channel(principal: Principal, session_ref: str, io: str) -> dict[str, Any]:
    s = services()
    raw = read_body(s.settings.max_append_bytes)
    channel_io = parse_io(io)
    part = _part_id_header()
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("Request body must be UTF-8 text") from None
    seq = service.append_to_channel(
        s.uow(),
        s.launcher,
        s.appends,
        session_ref,
        channel_io,
        service.ChannelAppend(principal, body, part, utcnow()),
        s.settings.part_id_ttl_seconds,
    )
    count_append(channel_io, 1, len(raw))
    return {"ok": True, "seq": seq}


def _part_id_header() -> str | None:
    part = request.headers.get("X-Part-Id") or None
    if part is not None and len(part) > MAX_PART_ID_LENGTH:
        raise BadRequest("X-Part-Id is too long")
    return part


@api_route(bp, "/<session:session_ref>/<io>/records", methods=["POST"], error_style="ok")
def append_records(principal: Principal, session_ref: str, io: str) -> dict[str, Any]:
    s = services()
    channel_io = parse_io(io)
    body = parse_json(read_body(2 * s.settings.max_append_bytes))
    records, trim_before = envelopes.records_from_wire(body, s.settings.max_append_bytes)
    seq_nums = service.append_records(
        s.uow(),
        s.launcher,
        session_ref,
        channel_io,
        service.ChannelAppend(principal, "", _part_id_header(), utcnow()),
        records,
        trim_before,
        s.settings.part_id_ttl_seconds,
    )
    return {"ok": True, "seqNums": seq_nums}


@api_route(bp, "/<session:session_ref>/<io>", methods=["GET"])
def subscribe_to_channel(
    principal: Principal, session_ref: str, io: str
) -> Response | tuple[str, int, dict[str, str]]:
    s = services()
    channel_io = parse_io(io)
    is_head = request.method == "HEAD"
    if not is_head:
        s.live_reads.check()  # a full worker refuses before doing any work
    peek = request.headers.get("X-Peek-Settled") == "1" and not is_head
    live = service.open_live_read(s.read_uow, principal, session_ref, channel_io, peek, s.session_lookups)
    if is_head:
        return "", 200, {"X-Last-Chunk-Index": "0"}
    g.error_style = "text"  # the handler's own errors are plain text, as Trigger.dev answers them
    wait = parse_timeout_seconds(request.headers.get("Timeout-Seconds"), s.settings.sse_default_wait_seconds)
    options = sse.TailOptions(
        0 if live.is_settled else wait, s.settings.sse_ping_interval_seconds, end_on_close=True
    )
    events = sse.live_events(s, live.key, _start_seq(s, live.key), options)
    headers = {"X-Session-Settled": "true"} if live.is_settled else None
    return s.live_reads.hold(sse.event_stream(events, headers))


def _start_seq(s: Services, key: str) -> int:
    """Where a live read starts: after ``Last-Event-ID``, else ``tail_offset`` records before the tail
    (as S2's read parameter; the console's "latest records"), else at the start."""
    last_event_id = request.headers.get("Last-Event-ID")
    offset = request.args.get("tail_offset")
    if last_event_id is not None or offset is None:
        return resume_seq(last_event_id)
    if not _DIGITS.fullmatch(offset):
        raise BadRequest("tail_offset must be a non-negative integer")
    return resolve_start(s.read_uow(), key, ReadStart(tail_offset=int(offset)), clamp=True)


@api_route(bp, "/<session:session_ref>/<io>/records", methods=["GET"])
def read_channel_records(principal: Principal, session_ref: str, io: str) -> Response:
    s = services()
    channel_io = parse_io(io)
    after = request.args.get("afterEventId")
    if after is not None and not _DIGITS.fullmatch(after):
        raise BadRequest("Query Error")
    key = service.resolve_channel_for_read(s.read_uow(), principal, session_ref, channel_io)
    records = service.read_page(
        s.read_uow(),
        key,
        int(after) + 1 if after else 0,
        s.settings.read_batch_limit * RECORDS_PAGE_BATCHES,
        RECORDS_PAGE_BYTES,
    )
    return Response(records_json(records), mimetype="application/json")
