"""The one place errors become responses.

Domain errors map to statuses in ``STATUS``; the body style is chosen per route (``g.error_style``):
JSON ``{"error": …}`` for the control plane, ``{"ok": false, "error": …}`` for appends, plain
text where the realtime wire reference says so, and S2's ``{"code", "message"}`` on the S2
endpoint. Unexpected errors are logged and answered with a generic 500 that leaks nothing.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from flask import Flask, Response, g, jsonify, request
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from session_core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    SessionClosed,
    SessionsError,
    Unauthenticated,
    Unavailable,
    VersionMismatch,
)
from session_web.request_log import REQUEST_ID_KEY

logger = logging.getLogger(__name__)

ErrorStyle = Literal["json", "ok", "text", "s2"]
#: The ``code`` of an error in S2's shape (``{"code", "message"}``, what ``@s2-dev/streamstore`` reads).
S2_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    503: "unavailable",
}

# Most specific first: the first matching class decides the status.
STATUS: list[tuple[type[SessionsError], int]] = [
    (BadRequest, 400),
    (InvalidInput, 422),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (SessionClosed, 400),
    (VersionMismatch, 412),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (Unavailable, 503),
]

_HTTP_MESSAGES = {404: "Not found", 405: "Method not allowed", 413: "Request body too large"}


def status_for(error: SessionsError) -> int:
    return next((code for cls, code in STATUS if isinstance(error, cls)), 500)


def error_response(
    status: int, message: str, details: list[dict[str, Any]] | None = None, code: str | None = None
) -> Response:
    """Build an error in the current route's style; 4xx a retry cannot fix say so to the client."""
    style: ErrorStyle = g.get("error_style", "json")
    if style == "text":
        response = Response(message, status=status, mimetype="text/plain")
    elif style == "s2":
        response = jsonify({"code": S2_CODES.get(status, "internal"), "message": message})
        response.status_code = status
    else:
        body: dict[str, object] = {"ok": False, "error": message} if style == "ok" else {"error": message}
        if status == 403 and style == "json":
            body = {
                "error": f"Unauthorized: {message}",
                "code": "unauthorized",
                "param": "access_token",
                "type": "authorization",
            }
        if details:
            body["details"] = details
        if code is not None:
            body["code"] = code
        response = jsonify(body)
        response.status_code = status
    if 400 <= status < 500 and status not in (408, 429):
        response.headers["x-should-retry"] = "false"
    return response


def _sessions_error(error: SessionsError) -> Response:
    details = error.details if isinstance(error, InvalidInput) and not isinstance(error, BadRequest) else None
    response = error_response(status_for(error), error.message, details, getattr(error, "code", None))
    retry_after = getattr(error, "retry_after_seconds", None)
    if retry_after is not None:  # told to come back later: its connection is not kept meanwhile
        response.headers["Retry-After"] = str(retry_after)
        response.headers["Connection"] = "close"
    return response


def _http_error(error: HTTPException) -> Response:
    code = error.code or 500
    response = error_response(code, _HTTP_MESSAGES.get(code, error.name))
    if code == 405 and error.get_response().headers.get("Allow"):
        response.headers["Allow"] = error.get_response().headers["Allow"]
    return response


def _database_unavailable(error: sa_exc.DBAPIError) -> Response:
    """A lost or refused database connection: 503, which clients retry (appends safely, by part id)."""
    if not (isinstance(error, sa_exc.OperationalError) or error.connection_invalidated):
        return _unexpected(error)
    logger.warning(
        "database unavailable error=%s", str(error.orig).strip().splitlines()[0] if error.orig else error
    )
    return error_response(503, "Database unavailable; retry shortly")


def _unexpected(error: Exception) -> Response:
    request_id = request.environ.get(REQUEST_ID_KEY)
    logger.exception(
        "unhandled error request_id=%s", request_id, extra={"fields": {"request_id": request_id}}
    )
    return error_response(500, "Internal Server Error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(SessionsError, _sessions_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(sa_exc.DBAPIError, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
