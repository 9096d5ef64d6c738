"""Per-request bookkeeping around the Flask app: the request id, one access-log line, the request metrics.

It wraps the WSGI app rather than using Flask hooks, because a response ends after Flask is done
with it: the line is written when the server closes the response body, so an SSE read is logged
when its stream closes, with the stream's lifetime and the bytes it sent. The line holds the
method, the route *template* (never the path or query string, which may carry ids or tokens),
status, duration, bytes and request id; never a header value or a body.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, request

from session_web import direct_write, metrics

logger = logging.getLogger("session_web.access")

#: The WSGI environ keys this module shares with the app: the request id and the matched rule.
REQUEST_ID_KEY = "sessions.request_id"
ROUTE_KEY = "sessions.route"
UNMATCHED_ROUTE = "unmatched"
#: A client's own ``X-Request-Id`` is kept when it is 1-128 visible ASCII characters (no spaces,
#: so the key=value log line stays parseable); anything else is replaced by a generated id.
_CLIENT_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-Id`` when it is acceptable, else a fresh one."""
    if header is not None and _CLIENT_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def route_template(rule: str) -> str:
    """A Flask URL rule as it is logged and labelled: ``/x/<session:ref>`` becomes ``/x/<ref>``."""
    return _CONVERTER.sub(r"<\1>", rule)


class _Exchange:
    """One request's facts, gathered as it is answered, written out once when it ends."""

    def __init__(self, environ: dict[str, Any], request_id: str) -> None:
        self.environ = environ
        self.request_id = request_id
        self.started = time.perf_counter()
        self.status = 500
        self.seconds_to_headers: float | None = None
        self.sent = 0
        self.is_finished = False

    def finish(self) -> None:
        if self.is_finished:
            return
        self.is_finished = True
        seconds = time.perf_counter() - self.started
        method = self.environ.get("REQUEST_METHOD", "")
        route = self.environ.get(ROUTE_KEY, UNMATCHED_ROUTE)
        to_headers = seconds if self.seconds_to_headers is None else self.seconds_to_headers
        metrics.count_request(method, route, self.status, to_headers)
        fields = {
            "method": method,
            "route": route,
            "status": self.status,
            "duration_ms": round(seconds * 1000, 1),
            "bytes": self.sent + getattr(self.environ.get(direct_write.ENVIRON_KEY), "sent", 0),
            "request_id": self.request_id,
        }
        logger.info(
            "request " + " ".join(f"{key}={value}" for key, value in fields.items()),
            extra={"fields": fields},
        )


class _Body:
    """The response body, passed through unchanged; counts bytes and ends the exchange on close."""

    def __init__(self, body: Iterable[bytes], exchange: _Exchange) -> None:
        self._body = body
        self._exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._exchange.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._exchange.finish()


class RequestObserver:
    """WSGI middleware: request id in and out, access log line and request metrics per request."""

    def __init__(self, app: WSGIApp) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        exchange = _Exchange(environ, request_id_from(environ.get("HTTP_X_REQUEST_ID")))
        environ[REQUEST_ID_KEY] = exchange.request_id

        def observed_start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            exchange.status = int(status.split(" ", 1)[0])
            exchange.seconds_to_headers = time.perf_counter() - exchange.started
            headers = [(k, v) for k, v in headers if k.lower() != "x-request-id"]
            headers.append(("X-Request-Id", exchange.request_id))
            return start_response(status, headers, *exc_info)

        try:
            body = self._app(environ, observed_start_response)
        except BaseException:
            exchange.finish()
            raise
        return _Body(body, exchange)


def _remember_route() -> None:
    if request.url_rule is not None:
        request.environ[ROUTE_KEY] = route_template(request.url_rule.rule)


def observe_requests(app: Flask) -> None:
    """Observe every request of ``app``; call it before other ``before_request`` hooks are added,
    since one that answers early (a CORS preflight) skips the hooks after it."""
    app.before_request(_remember_route)
    app.wsgi_app = RequestObserver(app.wsgi_app)  # type: ignore[method-assign]
