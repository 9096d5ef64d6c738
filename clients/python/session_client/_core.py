"""What the sync and async clients share: requests as data, the retry policy, the SSE decoder, the
subscribe cursor and run-token claims. No I/O here, so both twins behave the same and it is unit-tested.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from session_client._errors import APIStatusError
from session_client._models import Io, Record, record_from_s2

#: Statuses worth another try: rate limits and a proxy or server that is restarting.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: How long one live read stays open at the tail before the server ends it and we reopen it.
SUBSCRIBE_WAIT_SECONDS = 60
#: Until a heartbeat says otherwise (it answers ``leaseSeconds``), the server's default lease.
DEFAULT_LEASE_SECONDS = 30.0
USER_AGENT = "sessions-client-python/0.1"


def new_part_id() -> str:
    """A part id for ``X-Part-Id``: random, so two appends never share one by accident."""
    return uuid.uuid4().hex


def session_path(ref: str) -> str:
    """``/api/v1/sessions/<ref>``; an externalId may hold any character, so it is fully escaped."""
    return "/api/v1/sessions/" + quote(ref, safe="")


def channel_path(ref: str, io: Io) -> str:
    if io not in ("in", "out"):
        raise ValueError(f'io must be "in" or "out", not {io!r}')
    return f"/realtime/v1/sessions/{quote(ref, safe='')}/{io}"


def run_path(run_id: str) -> str:
    return "/api/v1/runs/" + quote(run_id, safe="")


def comma_list(value: str | Sequence[str] | None) -> str | None:
    """A list filter as the wire takes it: comma-joined."""
    if value is None or isinstance(value, str):
        return value
    return ",".join(value)


@dataclass(frozen=True)
class Call:
    """One HTTP request, described without sending it.

    ``idempotent`` says whether a request that may have reached the server can be sent again
    (appends are, thanks to their part id; creating a session without an externalId is not).
    """

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json: Any = None
    content: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = True

    def build(self, http: httpx.Client | httpx.AsyncClient, base_url: str, token: str) -> httpx.Request:
        headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT, **self.headers}
        if self.content is not None:
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return http.build_request(
                self.method, base_url + self.path, params=self.params, content=self.content, headers=headers
            )
        return http.build_request(
            self.method, base_url + self.path, params=self.params, json=self.json, headers=headers
        )


@dataclass(frozen=True)
class Retries:
    """Bounded retries with exponential backoff and jitter.

    ``max_retries`` more attempts after the first; delays grow from ``base_delay`` by doubling up
    to ``max_delay``, each drawn between half and all of that (jitter), and a ``Retry-After`` of
    a few seconds is honoured.
    """

    max_retries: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0

    def reconnect_delay(self, failures: int, response: httpx.Response | None = None) -> float:
        """How long a live read waits before reconnecting: a server's ``Retry-After`` (a busy
        server admitting no more live reads), else as ``delay`` capped at two seconds, so a
        reader is back soon after a restart."""
        after = _retry_after(response) if response is not None else None
        if after is not None:
            return min(after, self.max_delay)
        return min(self.delay(failures), 2.0)

    def delay(self, retry: int, response: httpx.Response | None = None) -> float:
        if response is not None:
            after = _retry_after(response)
            if after is not None:
                return min(after, self.max_delay)
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(retry, 32))
        return ceiling * (0.5 + random.random() / 2)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 60 else None


def should_retry_response(response: httpx.Response, call: Call) -> bool:
    """Retry 429 and 502-504 (an unsent request's 429 also when not idempotent), never a response
    marked ``x-should-retry: false``."""
    flag = response.headers.get("x-should-retry", "").lower()
    if flag == "false":
        return False
    if flag == "true":
        return True
    if response.status_code not in RETRY_STATUSES:
        return False
    return call.idempotent or response.status_code == 429


def should_retry_error(error: httpx.TransportError, call: Call) -> bool:
    """A connection that never opened is always safe to retry; a dropped one only when idempotent."""
    return call.idempotent or isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)


# --- server-sent events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str


class SSEDecoder:
    """Turn an event stream's lines into events (the parts of the SSE spec the server uses)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SSEEvent | None:
        """Take one line (without its line break); return the event a blank line completes."""
        if not line:
            if not self._data and not self._event:
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


class Reconnect(Exception):
    """The server asked the reader to resume elsewhere (an ``error`` event, e.g. on shutdown)."""


class RetryableStatus(Exception):
    """A live read answered with a status worth reconnecting after (429, 5xx)."""

    def __init__(self, error: APIStatusError) -> None:
        super().__init__(str(error))
        self.error = error


def response_of(error: BaseException) -> httpx.Response | None:
    """The answer a live read was refused with, if that is why it failed."""
    return error.error.response if isinstance(error, RetryableStatus) else None


class Cursor:
    """Where a live read is: the last seq_num delivered, and whether the session-closed marker came.

    Records at or before the cursor are dropped, so a reconnect never delivers one twice.
    """

    def __init__(self, after: int | None) -> None:
        self.last_seq = after
        self.closed = False

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Timeout-Seconds": str(SUBSCRIBE_WAIT_SECONDS)}
        if self.last_seq is not None:
            headers["Last-Event-ID"] = str(self.last_seq)
        return headers

    def take(self, event: SSEEvent) -> list[Record]:
        """The new records of one event; an ``error`` event raises ``Reconnect``."""
        if event.event == "error":
            raise Reconnect(event.data)
        if event.event != "batch" or self.closed:
            return []
        records: list[Record] = []
        for item in json.loads(event.data).get("records", []):
            seq = int(item["seq_num"])
            if self.last_seq is not None and seq <= self.last_seq:
                continue
            self.last_seq = seq
            record = record_from_s2(item)
            if record is None:
                continue
            records.append(record)
            if record.is_session_closed:
                self.closed = True
                break
        return records


# --- tokens ---------------------------------------------------------------------------------------


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the server verifies; the client only reads ``runId``).

    Secret keys and anything that is not a JWT have no claims.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def run_id_of(token: str) -> str | None:
    """The run a run token belongs to (its ``runId`` claim); None for other tokens."""
    run_id = token_claims(token).get("runId")
    return run_id if isinstance(run_id, str) else None
