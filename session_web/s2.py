"""Blueprint for our S2-compatible endpoint, where ``PUT``'s ``X-S2-Endpoint`` points (DESIGN.md decision 4).

It serves what ``@s2-dev/streamstore``'s fetch transport calls (wire reference §13): appends, reads
(JSON, or SSE with ``Accept: text/event-stream``) and the tail of one stream, with S2's JSON shapes,
its 412 for a lost ``match_seq_num`` and its 416 for a read past the tail. Bodies and header values
are raw UTF-8 text, or base64 with ``s2-format: base64``; an append holding a bytes record (a trim
command) arrives as protobuf (``s2_proto``). Binary bodies other than trim commands are refused.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from flask import Blueprint, Response, jsonify, request

from session_core import s2
from session_core.channels.records import MAX_POSITION, NewRecord, SeqNumMismatch
from session_core.errors import BadRequest, InvalidInput, PayloadTooLarge
from session_core.models import IOS, ChannelRecord, utcnow
from session_core.scopes import Principal
from session_core.services import s2_streams as service
from session_web import metrics, s2_proto, sse
from session_web.routing import api_route, parse_json, read_body
from session_web.services import services

bp = Blueprint("s2", __name__, url_prefix="/s2/v1")

MAX_BATCH_RECORDS = s2.MAX_BATCH_RECORDS
MAX_BATCH_METERED_BYTES = s2.MAX_BATCH_METERED_BYTES
MAX_APPEND_BODY_BYTES = 2 * 1024 * 1024
DEFAULT_READ_COUNT = 1000
MAX_UNARY_WAIT_SECONDS = 60
#: ASCII digits only (``str.isdigit`` takes "²", which ``int`` refuses), and few enough for ``int``.
_QUERY_INT = re.compile(r"[0-9]{1,19}")


def stream_io(name: str) -> str:
    """The channel a stream name ends with (``in``/``out``) as metrics label it; ``other`` otherwise."""
    io = name.rsplit("/", 1)[-1]
    return io if io in IOS else "other"


def _is_base64() -> bool:
    return request.headers.get("s2-format", "").lower() == "base64"


def _raw(value: Any, is_base64: bool, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    try:
        return base64.b64decode(value, validate=True) if is_base64 else value.encode("utf-8")
    except ValueError:  # binascii.Error, a non-ASCII base64 string, an unpaired surrogate
        raise InvalidInput(f"{what} must be {'base64' if is_base64 else 'UTF-8 text'}") from None


def _optional_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what} must be a non-negative integer")
    return value


def _checked_batch(records: list[NewRecord]) -> list[NewRecord]:
    """Hold a batch to S2's limits: 1 to 1000 records, at most 1 MiB metered."""
    if not 1 <= len(records) <= MAX_BATCH_RECORDS:
        raise InvalidInput(f"A batch holds 1 to {MAX_BATCH_RECORDS} records")
    metered = sum(s2.metered_bytes(ChannelRecord(0, 0, r.body, r.headers)) for r in records)
    if metered > MAX_BATCH_METERED_BYTES:
        raise PayloadTooLarge("Batch is over 1 MiB of metered bytes")
    return records


def parse_append_input(data: Any, is_base64: bool) -> tuple[list[NewRecord], int | None, str | None]:
    """S2's ``AppendInput`` JSON as ``(records, match_seq_num, fencing_token)``.

    :raise InvalidInput: a field of the wrong type, no records, or more than 1000.
    :raise PayloadTooLarge: a batch over 1 MiB as S2 meters it.
    """
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise InvalidInput("Expected an object with a records array")
    budget = s2.BatchBudget()
    records = []
    for index, raw in enumerate(data["records"]):
        budget.add_record()
        if not isinstance(raw, dict):
            raise InvalidInput(f"records[{index}] must be an object")
        headers = raw.get("headers") or []
        if not isinstance(headers, list) or not all(isinstance(h, list) and len(h) == 2 for h in headers):
            raise InvalidInput(f"records[{index}].headers must be [name, value] pairs")
        raw_headers = []
        for name, value in headers:
            pair = _raw(name, is_base64, "A header name"), _raw(value, is_base64, "A header value")
            budget.add_header(len(pair[0]), len(pair[1]))
            raw_headers.append(pair)
        body = _raw(raw.get("body", ""), is_base64, f"records[{index}].body")
        budget.add_body(len(body))
        records.append(
            s2.stored_record(
                raw_headers, body, _optional_int(raw.get("timestamp"), f"records[{index}].timestamp")
            )
        )
    fencing_token = data.get("fencing_token")
    if fencing_token is not None and not isinstance(fencing_token, str):
        raise InvalidInput("fencing_token must be a string")
    return _checked_batch(records), _optional_int(data.get("match_seq_num"), "match_seq_num"), fencing_token


def parse_proto_append_input(raw: bytes) -> tuple[list[NewRecord], int | None, str | None]:
    """S2's ``AppendInput`` protobuf (sent when a record is bytes, a trim command) as the JSON one."""
    parsed = s2_proto.decode_append_input(raw)
    records = [s2.stored_record(r.headers, r.body, r.timestamp) for r in parsed.records]
    return _checked_batch(records), parsed.match_seq_num, parsed.fencing_token


def _query_int(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if not _QUERY_INT.fullmatch(raw) or int(raw) > MAX_POSITION:
        raise BadRequest(f"{name} must be an integer from 0 to {MAX_POSITION}")
    return int(raw)


def parse_read_query() -> tuple[service.ReadStart, s2.ReadLimits, int | None, bool]:
    """The read query as ``(start, limits, wait, clamp)``; at most one start may be given."""
    start = service.ReadStart(_query_int("seq_num"), _query_int("timestamp"), _query_int("tail_offset"))
    if sum(value is not None for value in (start.seq_num, start.timestamp, start.tail_offset)) > 1:
        raise BadRequest("Only one of seq_num, timestamp and tail_offset may be given")
    limits = s2.ReadLimits(_query_int("count"), _query_int("bytes"), _query_int("until"))
    return start, limits, _query_int("wait"), request.args.get("clamp", "").lower() == "true"


@bp.errorhandler(SeqNumMismatch)
def _seq_num_mismatch(error: SeqNumMismatch) -> tuple[Response, int]:
    return jsonify({"seq_num_mismatch": error.tail}), 412


@bp.errorhandler(service.FencingTokenMismatch)
def _fencing_token_mismatch(error: service.FencingTokenMismatch) -> tuple[Response, int]:
    return jsonify({"fencing_token_mismatch": error.current}), 412


@bp.errorhandler(service.ReadPastTail)
def _read_past_tail(error: service.ReadPastTail) -> tuple[Response, int]:
    return jsonify({"tail": sse.position_json(error.tail)}), 416


@api_route(
    bp, "/streams/<path:name>/records", methods=["POST"], max_bytes=MAX_APPEND_BODY_BYTES, error_style="s2"
)
def append_to_stream(principal: Principal, name: str) -> Response:
    key = service.stream_key(principal, name)
    raw = read_body(MAX_APPEND_BODY_BYTES)
    is_proto = request.mimetype == s2_proto.CONTENT_TYPE
    records, match_seq_num, fencing_token = (
        parse_proto_append_input(raw) if is_proto else parse_append_input(parse_json(raw), _is_base64())
    )
    ack = service.append_to_stream(services().uow(), key, records, utcnow(), match_seq_num, fencing_token)
    metrics.count_append(stream_io(name), len(records), sum(len(r.body.encode()) for r in records))
    if s2_proto.CONTENT_TYPE in request.headers.get("Accept", ""):
        return Response(s2_proto.encode_append_ack(ack), mimetype=s2_proto.CONTENT_TYPE)
    return jsonify(
        {
            "start": sse.position_json(ack.start),
            "end": sse.position_json(ack.end),
            "tail": sse.position_json(ack.tail),
        }
    )


@api_route(bp, "/streams/<path:name>/records", methods=["GET"], error_style="s2")
def read_stream(principal: Principal, name: str) -> Response:
    s = services()
    key = service.stream_key(principal, name)
    start, limits, wait, clamp = parse_read_query()
    start_seq = service.resolve_start(s.read_uow(), key, start, clamp)
    is_base64 = _is_base64()
    if "text/event-stream" in request.headers.get("Accept", ""):
        wait_seconds = sse.live_wait_seconds(wait, s.settings.sse_default_wait_seconds)
        options = sse.TailOptions(wait_seconds, s.settings.sse_ping_interval_seconds, limits, is_base64)
        return s.live_reads.hold(sse.event_stream(sse.live_events(s, key, start_seq, options)))
    count = min(limits.count or DEFAULT_READ_COUNT, s.settings.read_batch_limit)
    limits = s2.ReadLimits(
        count, min(limits.bytes or MAX_BATCH_METERED_BYTES, MAX_BATCH_METERED_BYTES), limits.until
    )
    batch = service.read_stream(
        s.read_uow, s.hub, key, start_seq, limits, count, min(wait or 0, MAX_UNARY_WAIT_SECONDS)
    )
    return jsonify(
        {
            "records": [sse.record_json(record, is_base64=is_base64) for record in batch.records],
            "tail": sse.position_json(batch.tail),
        }
    )


@api_route(bp, "/streams/<path:name>/records/tail", methods=["GET"], error_style="s2")
def check_tail(principal: Principal, name: str) -> Response:
    tail = service.stream_tail(services().read_uow(), service.stream_key(principal, name))
    return jsonify({"tail": sse.position_json(tail)})
