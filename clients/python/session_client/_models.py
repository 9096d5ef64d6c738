"""What the client hands back (sessions, records, runs) and what it writes (data and control records).

Parsing lives here, apart from I/O, so the sync and async clients share it and it is unit-tested
on its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias

__all__ = [
    "CONTROL_HEADER",
    "ControlRecord",
    "CreatedSession",
    "DataRecord",
    "Headers",
    "Io",
    "Record",
    "Run",
    "Session",
]

Io: TypeAlias = Literal["in", "out"]
#: Record headers as given: ``[("name", "value"), …]`` (order kept, names may repeat) or a mapping.
Headers: TypeAlias = Sequence[Sequence[str]] | Mapping[str, str]
#: The header naming a control record's subtype (``turn-complete``, ``session-closed``, …).
CONTROL_HEADER = "trigger-control"
SESSION_CLOSED = "session-closed"
FINAL_RUN_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "EXPIRED"})


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 wire date (``…Z``) as an aware datetime; None stays None."""
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def header_list(headers: Headers | None) -> list[list[str]]:
    """Headers as the wire carries them: a list of ``[name, value]`` pairs."""
    if headers is None:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    result = []
    for pair in pairs:
        name, value = pair
        result.append([str(name), str(value)])
    return result


@dataclass(frozen=True)
class Record:
    """One record of a channel.

    ``data`` is what was appended: a string appended as a string, a JSON value appended as JSON
    (parsed back). A control record (``is_control``) has no data, only headers, e.g.
    ``[("trigger-control", "turn-complete"), ("session-in-event-id", "7")]``.
    ``timestamp`` is the server's arrival time in epoch milliseconds.
    """

    seq_num: int
    data: Any
    part_id: str | None
    headers: list[tuple[str, str]]
    timestamp: int | None
    is_control: bool

    def header(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        return next((value for key, value in self.headers if key == name), None)

    @property
    def control(self) -> str | None:
        """A control record's subtype (``turn-complete``, ``session-closed``…); None for data."""
        return self.header(CONTROL_HEADER) if self.is_control else None

    @property
    def is_session_closed(self) -> bool:
        """Whether this is the end-of-session marker the server appends when the session closes."""
        return self.control == SESSION_CLOSED


def _headers(raw: Any) -> list[tuple[str, str]]:
    return [(str(pair[0]), str(pair[1])) for pair in raw or []]


def _open_envelope(body: str) -> tuple[Any, str | None]:
    """The ``(data, part id)`` of a stored body ``{"data": …, "id": …}``; other bodies are their own data."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body, None
    if isinstance(parsed, dict) and "data" in parsed:
        part = parsed.get("id")
        return parsed["data"], part if isinstance(part, str) and part else None
    return body, None


def record_from_s2(item: Mapping[str, Any]) -> Record | None:
    """A record of an SSE ``batch`` event (S2's form); None for S2 command records (trim, fence)."""
    headers = _headers(item.get("headers"))
    if headers and headers[0][0] == "":
        return None
    body = item.get("body") or ""
    timestamp = item.get("timestamp")
    if not body:
        return Record(int(item["seq_num"]), None, None, headers, timestamp, is_control=True)
    data, part = _open_envelope(body)
    return Record(int(item["seq_num"]), data, part, headers, timestamp, is_control=False)


def record_from_page(item: Mapping[str, Any]) -> Record:
    """A record of a ``GET …/records`` page (``{data, id, seqNum, headers?, timestamp?}``)."""
    headers = _headers(item.get("headers"))
    data, part = item.get("data"), item.get("id") or None
    is_control = data == "" and part is None and bool(headers)
    return Record(
        int(item["seqNum"]),
        None if is_control else data,
        part,
        headers,
        item.get("timestamp"),
        is_control=is_control,
    )


@dataclass(frozen=True)
class DataRecord:
    """A data record to write: ``data`` (any JSON value) stored as ``{"data": data, "id": part_id}``."""

    data: Any
    part_id: str | None = None
    headers: Headers | None = None

    def wire(self) -> dict[str, Any]:
        item: dict[str, Any] = {"data": self.data}
        if self.part_id is not None:
            item["id"] = self.part_id
        if self.headers:
            item["headers"] = header_list(self.headers)
        return item


@dataclass(frozen=True)
class ControlRecord:
    """A control record to write: no body, only headers (e.g. ``{"trigger-control": "turn-complete"}``)."""

    headers: Headers

    def wire(self) -> dict[str, Any]:
        return {"headers": header_list(self.headers)}


@dataclass(frozen=True)
class Session:
    """A session as the control plane returns it (wire names in snake_case)."""

    id: str
    external_id: str | None
    type: str
    task_identifier: str
    tags: list[str]
    metadata: Any
    closed_at: datetime | None
    closed_reason: str | None
    expires_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    current_run_id: str | None
    trigger_config: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None


@dataclass(frozen=True)
class CreatedSession(Session):
    """What ``sessions.create`` returns: the session, its run, a token for browsers, and whether the
    session already existed (``is_cached``: same externalId)."""

    run_id: str = ""
    public_access_token: str = ""
    is_cached: bool = False


def _session_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": body["id"],
        "external_id": body.get("externalId"),
        "type": body.get("type", ""),
        "task_identifier": body.get("taskIdentifier", ""),
        "tags": list(body.get("tags") or []),
        "metadata": body.get("metadata"),
        "closed_at": parse_time(body.get("closedAt")),
        "closed_reason": body.get("closedReason"),
        "expires_at": parse_time(body.get("expiresAt")),
        "created_at": parse_time(body.get("createdAt")),
        "updated_at": parse_time(body.get("updatedAt")),
        "current_run_id": body.get("currentRunId"),
        "trigger_config": body.get("triggerConfig"),
        "raw": dict(body),
    }


def session_from_wire(body: Mapping[str, Any]) -> Session:
    return Session(**_session_fields(body))


def created_from_wire(body: Mapping[str, Any]) -> CreatedSession:
    return CreatedSession(
        **_session_fields(body),
        run_id=body["runId"],
        public_access_token=body["publicAccessToken"],
        is_cached=bool(body["isCached"]),
    )


@dataclass(frozen=True)
class Run:
    """A session's run: its status and lease. ``token`` and ``lease_seconds`` come with heartbeats."""

    id: str
    session_id: str
    status: str
    reason: str
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    lease_expires_at: datetime | None
    output: Any
    error: Any
    token: str | None = None
    lease_seconds: float | None = None

    @property
    def is_final(self) -> bool:
        """COMPLETED, FAILED, CANCELLED or EXPIRED: the run is over."""
        return self.status in FINAL_RUN_STATUSES


def run_from_wire(body: Mapping[str, Any]) -> Run:
    return Run(
        id=body["id"],
        session_id=body.get("sessionId", ""),
        status=body["status"],
        reason=body.get("reason", ""),
        created_at=parse_time(body.get("createdAt")),
        started_at=parse_time(body.get("startedAt")),
        ended_at=parse_time(body.get("endedAt")),
        lease_expires_at=parse_time(body.get("leaseExpiresAt")),
        output=body.get("output"),
        error=body.get("error"),
        token=body.get("token"),
        lease_seconds=body.get("leaseSeconds"),
    )
