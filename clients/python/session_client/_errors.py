"""The client's exceptions: one small tree, shaped like httpx's and the OpenAI client's.

``SessionsError`` is the root. ``APIConnectionError`` means no answer came back (after the
retries); ``APIStatusError`` and its subclasses carry the server's status, message and body.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InternalServerError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RunFinalError",
    "SessionClosedError",
    "SessionsError",
    "UnprocessableEntityError",
]


class SessionsError(Exception):
    """Base of every error this client raises."""


class APIConnectionError(SessionsError):
    """The server could not be reached, or the connection dropped before an answer (after retries)."""

    def __init__(self, message: str, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    """The request timed out (after retries)."""


class APIStatusError(SessionsError):
    """The server answered with a 4xx or 5xx status.

    ``message`` is the server's ``error`` text (or its plain-text body), ``body`` the parsed JSON
    body (or the text), ``code`` the body's ``code`` when it has one (e.g. ``run_final``).
    """

    def __init__(self, message: str, response: httpx.Response, body: Any) -> None:
        super().__init__(f"{response.status_code}: {message}")
        self.message = message
        self.response = response
        self.status_code = response.status_code
        self.body = body
        self.code: str | None = body.get("code") if isinstance(body, dict) else None


class BadRequestError(APIStatusError):
    """400: the request is wrong; retrying it will not help."""


class SessionClosedError(BadRequestError):
    """The session is closed (or expired): appends and channel grants are refused."""


class AuthenticationError(APIStatusError):
    """401: no token, or one the server does not accept (expired, wrong environment)."""


class PermissionDeniedError(APIStatusError):
    """403: the token may not do this (e.g. a session token appending to ``.out``)."""


class NotFoundError(APIStatusError):
    """404: no such session or run in this environment."""


class ConflictError(APIStatusError):
    """409: e.g. re-creating a closed session's externalId."""


class RunFinalError(ConflictError):
    """409 ``run_final``: the run already ended (completed, failed, cancelled or expired)."""


class PayloadTooLargeError(APIStatusError):
    """413: the body is over the server's limit."""


class UnprocessableEntityError(APIStatusError):
    """422: the body does not validate; ``body["details"]`` says where."""


class RateLimitError(APIStatusError):
    """429, after the retries."""


class InternalServerError(APIStatusError):
    """5xx, after the retries when the status is retried."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def _message(body: Any, response: httpx.Response) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    if isinstance(body, str) and body:
        return body[:500]
    return response.reason_phrase or "HTTP error"


def status_error(response: httpx.Response) -> APIStatusError:
    """The exception for an error response whose body has been read."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    message = _message(body, response)
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = InternalServerError if response.status_code >= 500 else APIStatusError
    if cls is ConflictError and isinstance(body, dict) and body.get("code") == "run_final":
        cls = RunFinalError
    if cls is BadRequestError and _is_closed(message):
        cls = SessionClosedError
    return cls(message, response, body)


def _is_closed(message: str) -> bool:
    # The wire's 400s name the state: "Cannot append to a closed session" / "… an expired session".
    return "closed session" in message or "expired session" in message


def connection_error(error: httpx.TransportError) -> APIConnectionError:
    """The exception for a transport failure that is not retried (any more)."""
    try:
        request: httpx.Request | None = error.request
    except RuntimeError:  # an error raised before a request was attached
        request = None
    if isinstance(error, httpx.TimeoutException):
        return APITimeoutError(f"Request timed out: {error}", request)
    return APIConnectionError(f"Connection error: {error or type(error).__name__}", request)
