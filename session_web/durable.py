"""Blueprint for the Durable Streams protocol: ``/v1/stream/{path}`` (create, append, read, HEAD, DELETE).

Views only translate HTTP to the use cases in ``session_core.durable.service`` and back: headers
in, ``Stream-*`` headers out. Live reads (long-poll and SSE) hold no database connection while they
wait: they wait on a wake-up hub subscription between short reads, as the realtime routes do.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, request

from session_core.durable import channels, service
from session_core.durable.rules import (
    JSON_TYPE,
    OFFSET_NOW,
    OFFSET_START,
    creation_content_type,
    etag,
    format_offset,
    is_json_type,
    is_text_type,
    json_array,
    json_messages,
    parse_expires_at,
    parse_offset,
    parse_producer,
    parse_sub_offset,
    parse_ttl,
    response_cursor,
)
from session_core.durable.service import (
    Appended,
    AppendRequest,
    CreateSpec,
    ReadResult,
    StreamClosed,
    StreamGone,
)
from session_core.errors import BadRequest, Conflict, Forbidden, NotFound, SessionsError, Unauthenticated
from session_core.models import Environment, Io, utcnow
from session_core.s2 import SESSIONS_PREFIX, session_channel_of
from session_core.scopes import Principal, PrincipalKind
from session_core.services import channels as channel_service
from session_core.services.channels import ChannelAppend
from session_web.errors import error_response
from session_web.routing import current_principal
from session_web.services import Services, services

PREFIX = "/v1/stream"
bp = Blueprint("durable", __name__, url_prefix=PREFIX)

#: Response headers a browser client may read (CORS), and what every response carries (§12).
EXPOSE_HEADERS = (
    "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
    "Stream-Expires-At, Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
    "Producer-Expected-Seq, Producer-Received-Seq, ETag, Content-Type, Location"
)
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cross-Origin-Resource-Policy": "cross-origin"}
#: Cacheable reads (catch-up and long-poll 200s): immutable history, briefly reusable at the tail.
CACHEABLE = "private, max-age=60, stale-while-revalidate=300"
#: A read returns at most this many records, and stops at the record that brings its stored bytes
#: to ``READ_MAX_BYTES``; the client reads on from Stream-Next-Offset. A catch-up of a long stream
#: is then a few requests, not one per thousand records.
READ_LIMIT = 10_000
READ_MAX_BYTES = 4 * 1024 * 1024
#: An SSE response ends after this long; the client reconnects from its last offset (§5.7).
SSE_LIFETIME_SECONDS = 60.0
#: Appends and initial bodies up to this size are taken (the app's own limit is lower).
MAX_BODY_BYTES = 16 * 1024 * 1024


def _now_ms() -> int:
    return int(time.time() * 1000)


@bp.before_request
def _text_errors() -> None:
    g.error_style = "text"
    request.max_content_length = MAX_BODY_BYTES


@bp.after_request
def _protocol_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    if "Origin" not in request.headers:
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
    return response


@bp.errorhandler(StreamGone)
def _gone(error: StreamGone) -> Response:
    return error_response(410, error.message)


@bp.errorhandler(StreamClosed)
def _closed(error: StreamClosed) -> Response:
    response = error_response(409, error.message)
    response.headers["Stream-Closed"] = "true"
    response.headers["Stream-Next-Offset"] = format_offset(error.tail)
    return response


def _principal(svc: Services) -> Principal:
    """Who is asking: the bearer token's principal, or without one the public environment's
    (``SESSIONS_DS_PUBLIC_ENVIRONMENT``), with a secret key's rights.

    :raise Unauthenticated: no (valid) credentials, and no public environment configured.
    """
    public = svc.settings.ds_public_environment
    if public and "Authorization" not in request.headers:
        return Principal(_public_environment(svc, public), PrincipalKind.PRIVATE)
    return current_principal(allow_jwt=True)


def _public_environment(svc: Services, slug: str) -> Environment:
    """The environment named by ``SESSIONS_DS_PUBLIC_ENVIRONMENT``, looked up once per process."""
    cache: dict[str, Environment] = current_app.extensions.setdefault("durable_public_environment", {})
    if slug not in cache:
        with svc.read_uow() as uow:
            environment = uow.environments.get_by_slug(slug)
        if environment is None:
            raise Unauthenticated("The public Durable Streams environment does not exist")
        cache[slug] = environment
    return cache[slug]


def _body() -> bytes:
    return request.get_data(cache=False)


def _flag(name: str) -> bool:
    return (request.headers.get(name) or "").strip().lower() == "true"


def _stream_path(value: str) -> str:
    """A stream named in a header (``Stream-Forked-From``): a URL, an absolute path, or a bare path."""
    path = urlsplit(value.strip()).path if "://" in value else value.strip()
    return path.removeprefix(PREFIX + "/").lstrip("/") if path.startswith(PREFIX + "/") else path.lstrip("/")


@bp.route("/<path:path>", methods=["GET", "HEAD", "PUT", "POST", "DELETE"])
def stream(path: str) -> Response:
    svc = services()
    principal = _principal(svc)
    channel = session_channel_of(path)
    if channel is not None:
        return _session_channel(svc, principal, path, *channel)
    if path.startswith(SESSIONS_PREFIX):
        raise NotFound("Stream not found")
    if not principal.is_secret_key:
        raise Forbidden("Durable Streams other than session channels need a secret key")
    views: dict[str, Callable[[Services, str, str], Response]] = {
        "PUT": _create,
        "POST": _append,
        "HEAD": _head,
        "GET": _read,
        "DELETE": _delete,
    }
    return views[request.method](svc, principal.environment.id, path)


def _create_spec() -> CreateSpec:
    headers = request.headers
    ttl, expires = headers.get("Stream-TTL"), headers.get("Stream-Expires-At")
    if ttl is not None and expires is not None:
        raise BadRequest("Cannot specify both Stream-TTL and Stream-Expires-At")
    forked_from = headers.get("Stream-Forked-From")
    fork_offset, sub_offset = headers.get("Stream-Fork-Offset"), headers.get("Stream-Fork-Sub-Offset")
    fork_seq = None
    if fork_offset is not None:
        fork_seq = parse_offset(fork_offset)
        if fork_seq is None:
            raise BadRequest("Invalid Stream-Fork-Offset format")
    sub = 0
    if sub_offset is not None:
        if forked_from is None:
            raise BadRequest("Stream-Fork-Sub-Offset requires Stream-Forked-From")
        sub = parse_sub_offset(sub_offset)
        if sub and fork_offset is None:
            raise BadRequest("Stream-Fork-Sub-Offset requires Stream-Fork-Offset")
    return CreateSpec(
        content_type=creation_content_type(headers.get("Content-Type")),
        ttl_seconds=None if ttl is None else parse_ttl(ttl),
        expires_at=expires,
        expires_at_ms=None if expires is None else parse_expires_at(expires),
        closed=_flag("Stream-Closed"),
        forked_from=None if forked_from is None else _stream_path(forked_from),
        fork_seq=fork_seq,
        fork_sub_offset=sub,
        body=_body(),
    )


def _create(svc: Services, environment_id: str, path: str) -> Response:
    created = service.create_stream(svc.uow(), environment_id, path, _create_spec(), _now_ms())
    response = Response(status=201 if created.is_new else 200, content_type=created.stream.content_type)
    response.headers["Stream-Next-Offset"] = format_offset(created.tail)
    if created.is_new:
        base = (svc.settings.public_url or request.host_url).rstrip("/")
        response.headers["Location"] = f"{base}{PREFIX}/{path}"
    if created.stream.closed:
        response.headers["Stream-Closed"] = "true"
    return response


def _append(svc: Services, environment_id: str, path: str) -> Response:
    headers = request.headers
    producer = parse_producer(
        headers.get("Producer-Id"), headers.get("Producer-Epoch"), headers.get("Producer-Seq")
    )
    body = _body()
    content_type = headers.get("Content-Type")
    if body and not content_type:
        raise BadRequest("Content-Type header is required")
    append = AppendRequest(body, content_type, _flag("Stream-Closed"), headers.get("Stream-Seq"), producer)
    outcome = service.append(svc.uow(), environment_id, path, append, _now_ms(), svc.ds_appends)
    return _appended(append, outcome)


def _appended(append: AppendRequest, outcome: Appended) -> Response:
    """The response to a POST: 204 (200 for an accepted producer append) or a producer refusal."""
    producer, verdict = append.producer, outcome.verdict
    response = Response(status=204)
    if producer is not None and verdict is not None:
        if verdict.status == "stale_epoch":
            response = error_response(403, "Stale producer epoch")
            response.headers["Producer-Epoch"] = str(verdict.current_epoch)
            return response
        if verdict.status == "invalid_epoch_seq":
            return error_response(400, "A new producer epoch must start at sequence 0")
        if verdict.status == "sequence_gap":
            response = error_response(409, "Producer sequence gap")
            response.headers["Producer-Expected-Seq"] = str(verdict.expected_seq)
            response.headers["Producer-Received-Seq"] = str(producer.seq)
            return response
        accepted = verdict.status == "accepted"
        response.status_code = 200 if accepted and append.body else 204
        response.headers["Producer-Epoch"] = str(producer.epoch)
        response.headers["Producer-Seq"] = str(producer.seq if accepted else verdict.last_seq)
    response.headers["Stream-Next-Offset"] = format_offset(outcome.tail)
    if outcome.closed:
        response.headers["Stream-Closed"] = "true"
    return response


def _head(svc: Services, environment_id: str, path: str) -> Response:
    found, tail = service.head(svc.read_uow(), svc.uow(), environment_id, path, _now_ms())
    response = Response(status=200, content_type=found.content_type)
    response.headers["Stream-Next-Offset"] = format_offset(tail)
    response.headers["Cache-Control"] = "no-store"
    response.headers["ETag"] = etag(path, OFFSET_START, format_offset(tail), found.closed)
    if found.closed:
        response.headers["Stream-Closed"] = "true"
    if found.ttl_seconds is not None:
        response.headers["Stream-TTL"] = str(found.ttl_seconds)
    if found.expires_at is not None:
        response.headers["Stream-Expires-At"] = found.expires_at
    return response


def _delete(svc: Services, environment_id: str, path: str) -> Response:
    service.delete(svc.uow(), environment_id, path, _now_ms())
    return Response(status=204)


def _offset_param() -> str | None:
    """The ``offset`` query parameter, checked: one, non-empty, ``-1``, ``now`` or one we mint."""
    values = request.args.getlist("offset")
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("Multiple offset parameters are not allowed")
    offset = values[0]
    if offset not in (OFFSET_START, OFFSET_NOW) and parse_offset(offset) is None:
        raise BadRequest("Invalid offset")
    return offset


def _start(offset: str | None) -> int | None:
    """The position a read starts at; None for ``now`` (the tail)."""
    if offset is None or offset == OFFSET_START:
        return 0
    return None if offset == OFFSET_NOW else parse_offset(offset)


def _read(svc: Services, environment_id: str, path: str) -> Response:
    def read_from(position: int | None) -> ReadResult:
        return service.read(
            svc.read_uow(), svc.uow(), environment_id, path, position, READ_LIMIT, _now_ms(), READ_MAX_BYTES
        )

    return _serve_read(svc, path, read_from, ("stream", environment_id, path))


def _serve_read(
    svc: Services, path: str, read_from: Callable[[int | None], ReadResult], reader: Hashable
) -> Response:
    """A GET: catch-up, ``offset=now``, long-poll or SSE, over ``read_from(position)``; ``reader``
    names what ``read_from`` reads, and as whom, so live readers that share it share their reads."""
    offset = _offset_param()
    live = request.args.get("live")
    if live in ("long-poll", "sse") and offset is None:
        raise BadRequest(f"live={live} needs an offset")
    start = _start(offset)
    result = read_from(start)
    if live == "sse":
        return _sse(svc, result, result.tail if start is None else start, read_from, reader)
    if live == "long-poll":
        return _long_poll(svc, path, result, start, read_from)
    if offset == OFFSET_NOW:
        response = Response("[]" if is_json_type(result.content_type) else b"", status=200)
        response.content_type = result.content_type
        response.headers["Cache-Control"] = "no-store"
        return _position_headers(response, result)
    return _data_response(path, offset or OFFSET_START, result)


def _position_headers(response: Response, result: ReadResult) -> Response:
    response.headers["Stream-Next-Offset"] = format_offset(result.next_seq)
    if result.up_to_date:
        response.headers["Stream-Up-To-Date"] = "true"
    if result.closed_at_tail:
        response.headers["Stream-Closed"] = "true"
    return response


def _payload(result: ReadResult) -> bytes:
    if is_json_type(result.content_type):
        return json_array(result.bodies).encode()
    return b"".join(base64.b64decode(body) for body in result.bodies)


def _data_response(path: str, offset: str, result: ReadResult, cursor: str | None = None) -> Response:
    """A 200 with records (or none), cacheable, with its ETag; 304 when the client has it."""
    tag = etag(path, offset, format_offset(result.next_seq), result.closed_at_tail)
    if request.headers.get("If-None-Match") == tag:
        response = Response(status=304)
        response.headers["ETag"] = tag
        return response
    response = Response(_payload(result), status=200, content_type=result.content_type)
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = CACHEABLE
    if cursor is not None:
        response.headers["Stream-Cursor"] = cursor
    return _position_headers(response, result)


def _long_poll(
    svc: Services,
    path: str,
    result: ReadResult,
    start: int | None,
    read_from: Callable[[int | None], ReadResult],
) -> Response:
    """Answer at once when there is data (or the stream is closed at the tail), else wait for an
    append up to ``SESSIONS_DS_LONG_POLL_MS`` and answer 204 with a cursor if none comes."""
    offset = request.args["offset"]
    cursor = response_cursor(request.args.get("cursor"), _now_ms())
    position = result.next_seq if start is None else start
    if not result.bodies and not result.closed_at_tail:
        deadline = time.monotonic() + svc.settings.ds_long_poll_ms / 1000
        with svc.hub.subscribe(result.key) as subscription:
            result = read_from(position)
            while not result.bodies and not result.closed_at_tail and not svc.hub.is_closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not subscription.wait(result.tail, remaining):
                    break
                result = read_from(position)
    if result.bodies:
        return _data_response(path, offset, result, cursor)
    response = Response(status=204)
    response.headers["Stream-Next-Offset"] = format_offset(max(position, result.next_seq))
    response.headers["Stream-Up-To-Date"] = "true"
    if result.closed_at_tail:
        response.headers["Stream-Closed"] = "true"
    else:
        response.headers["Stream-Cursor"] = cursor
    return response


def _sse_event(name: str, data: str) -> str:
    """One SSE event; every line of ``data`` (split at CR, LF or CRLF) gets its own ``data:``."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return f"event: {name}\n" + "".join(f"data:{line}\n" for line in lines) + "\n"


def _control(next_seq: int, cursor: str, *, up_to_date: bool, closed: bool) -> str:
    data: dict[str, Any] = {"streamNextOffset": format_offset(next_seq)}
    if closed:
        data["streamClosed"] = True
    else:
        data["streamCursor"] = cursor
        if up_to_date:
            data["upToDate"] = True
    return _sse_event("control", json.dumps(data, separators=(",", ":")))


def _sse(
    svc: Services,
    first: ReadResult,
    start: int,
    read_from: Callable[[int | None], ReadResult],
    reader: Hashable,
) -> Response:
    """``live=sse``: each record as a ``data`` event followed by its ``control`` event; base64 for
    types other than text and JSON. Ends at a closed tail, after ``SSE_LIFETIME_SECONDS``, or on
    shutdown; the client reconnects from the last ``streamNextOffset``.

    An append wakes every reader of the stream at once: those at one position share one read of
    what follows (``Services.ds_reads``) instead of each making its own round trips.
    """
    content_type = first.content_type
    is_base64 = not is_text_type(content_type)
    client_cursor = request.args.get("cursor")
    wait_seconds = svc.settings.ds_long_poll_ms / 1000

    def data_of(body: str) -> str:
        if is_json_type(content_type) or is_base64:
            return body
        return base64.b64decode(body).decode("utf-8", "replace")

    def events() -> Iterator[str]:
        position, result = start, first
        end_at = time.monotonic() + SSE_LIFETIME_SECONDS
        with svc.hub.subscribe(first.key) as subscription:
            while True:
                cursor = response_cursor(client_cursor, _now_ms())
                last = len(result.bodies) - 1
                # One write per read: a data event never leaves without its control event, so a
                # client that stops at the first complete event after some text has both.
                chunk = []
                for index, body in enumerate(result.bodies):
                    position += 1
                    at_tail = index == last and result.up_to_date
                    chunk.append(_sse_event("data", data_of(body)))
                    closed = at_tail and result.closed_at_tail
                    chunk.append(_control(position, cursor, up_to_date=at_tail, closed=closed))
                if not result.bodies:
                    position = result.next_seq
                    chunk.append(_control(position, cursor, up_to_date=True, closed=result.closed_at_tail))
                yield "".join(chunk)
                if result.closed_at_tail:
                    return
                is_woken = False
                if result.up_to_date:
                    remaining = end_at - time.monotonic()
                    if remaining <= 0 or svc.hub.is_closed:
                        return
                    is_woken = subscription.wait(result.tail, min(wait_seconds, remaining))
                try:
                    result = svc.ds_reads.do((reader, position), functools.partial(read_from, position))
                    if is_woken and not result.bodies and not result.closed_at_tail:
                        # A wake-up that moved no tail (a close or a delete writes no record) may
                        # have joined a read begun before that change: read again, alone.
                        result = read_from(position)
                except SessionsError:  # deleted or expired meanwhile
                    return

    response = Response(events(), status=200, content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    if is_base64:
        response.headers["Stream-SSE-Data-Encoding"] = "base64"
    return response


def _session_channel(svc: Services, principal: Principal, path: str, session_ref: str, io: Io) -> Response:
    """A session channel as a Durable Stream (see ``session_core.durable.channels``): read, append
    JSON messages, HEAD, and PUT to confirm it; it closes with its session and cannot be deleted."""
    if request.method == "DELETE":
        response = error_response(405, "Session channels end when their session closes")
        response.headers["Allow"] = "GET, HEAD, PUT, POST"
        return response

    def opened() -> channels.SessionChannel:
        return channels.open_channel(svc.read_uow(), principal, session_ref, io, utcnow())

    def read_from(position: int | None) -> ReadResult:
        channel = opened()
        bodies, next_seq, tail = channels.read_channel(
            svc.read_uow(), channel.key, position, READ_LIMIT, READ_MAX_BYTES
        )
        return ReadResult(channel.key, JSON_TYPE, channel.ended, bodies, next_seq, tail)

    if request.method == "GET":
        return _serve_read(svc, path, read_from, ("session", principal, session_ref, io))
    if request.method == "POST":
        return _append_to_session_channel(svc, principal, session_ref, io)
    current = read_from(None)
    if request.method == "PUT":
        spec = _create_spec()
        wanted = spec.content_type or JSON_TYPE
        if is_json_type(wanted) and spec == CreateSpec(content_type=spec.content_type, closed=current.closed):
            response = Response(status=200, content_type=JSON_TYPE)
        else:
            response = error_response(409, "A session channel is an application/json stream of its session")
    else:
        response = Response(status=200, content_type=JSON_TYPE)
        response.headers["Cache-Control"] = "no-store"
    response.headers["Stream-Next-Offset"] = format_offset(current.tail)
    if current.closed:
        response.headers["Stream-Closed"] = "true"
    return response


def _append_to_session_channel(svc: Services, principal: Principal, session_ref: str, io: Io) -> Response:
    """Each message of a JSON body becomes one record, as ``POST …/append`` stores a body."""
    headers = request.headers
    if any(name in headers for name in ("Stream-Closed", "Stream-Seq", "Producer-Id")):
        raise BadRequest("Session channels take plain appends: close the session to end them")
    body = _body()
    if not body:
        raise BadRequest("Empty body")
    if not is_json_type(headers.get("Content-Type") or ""):
        raise Conflict("A session channel takes application/json")
    seq = 0
    for text in json_messages(body, allow_empty=False):
        append = ChannelAppend(principal, text, None, utcnow())
        seq = channel_service.append_to_channel(
            svc.uow(), svc.launcher, svc.appends, session_ref, io, append, svc.settings.part_id_ttl_seconds
        )
    response = Response(status=204)
    response.headers["Stream-Next-Offset"] = format_offset(seq + 1)
    return response
