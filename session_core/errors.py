"""The errors session_core raises. They carry messages for people, never HTTP status codes.

SessionsError
├── InvalidInput            a value breaks the schema (details list the fields)
│   └── BadRequest          the request itself is malformed (empty body, bad JSON, bad header)
├── Unauthenticated         no credentials, or ones we do not recognise
├── Forbidden               valid credentials without the needed scope
├── NotFound                the addressed session, run or record does not exist
├── Conflict                the request contradicts the current state
│   ├── SessionClosed       a write to a closed (or expired) session
│   └── VersionMismatch     an optimistic check (run claim, match_seq_num) lost
├── PayloadTooLarge         a body over its route's limit, or without a length
└── Unavailable             a dependency (database, ClickHouse) cannot be reached
"""

from __future__ import annotations

from typing import Any


class SessionsError(Exception):
    """Base of every error session_core raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(SessionsError):
    """Raised when input parses but breaks the schema; ``details`` lists field messages."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class BadRequest(InvalidInput):
    """Raised when the request is malformed before any schema applies."""


class Unauthenticated(SessionsError):
    """Raised when credentials are missing, unknown, expired or forged."""


class Forbidden(SessionsError):
    """Raised when the credentials are valid but lack the scope the action needs."""


class NotFound(SessionsError):
    """Raised when the addressed resource does not exist in the caller's environment."""


class Conflict(SessionsError):
    """Raised when the request contradicts current state (a taken externalId, a closed session)."""


class SessionClosed(Conflict):
    """Raised on a write to a session that is closed or expired."""


class VersionMismatch(Conflict):
    """Raised when an optimistic check (run claim, ``match_seq_num``) loses a race."""


class PayloadTooLarge(SessionsError):
    """Raised when a body is over its limit or arrives without a length."""


class Unavailable(SessionsError):
    """Raised when a backing service cannot be reached; the request may be retried."""
