"""Python client for the sessions service: sessions, their ``.in``/``.out`` channels, and runs.

``SessionsClient`` blocks; ``AsyncSessionsClient`` is its asyncio twin. Both depend on httpx only.
"""

from session_client._async import AsyncChannel, AsyncRuns, AsyncSessions, AsyncSessionsClient
from session_client._core import Retries, token_claims
from session_client._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    RunFinalError,
    SessionClosedError,
    SessionsError,
    UnprocessableEntityError,
)
from session_client._models import (
    CONTROL_HEADER,
    ControlRecord,
    CreatedSession,
    DataRecord,
    Headers,
    Io,
    Record,
    Run,
    Session,
)
from session_client._sync import Channel, Runs, Sessions, SessionsClient

__all__ = [
    "CONTROL_HEADER",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncChannel",
    "AsyncRuns",
    "AsyncSessions",
    "AsyncSessionsClient",
    "AuthenticationError",
    "BadRequestError",
    "Channel",
    "ConflictError",
    "ControlRecord",
    "CreatedSession",
    "DataRecord",
    "Headers",
    "InternalServerError",
    "Io",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "Record",
    "Retries",
    "Run",
    "RunFinalError",
    "Runs",
    "Session",
    "SessionClosedError",
    "Sessions",
    "SessionsClient",
    "SessionsError",
    "UnprocessableEntityError",
    "token_claims",
]
