"""Domain models: plain dataclasses, no ORM, plus the pure rules that derive state from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from session_core.errors import Conflict, SessionClosed

JSONValue = Any  # a value json.dumps accepts; kept as an alias so signatures say what they mean

Io = Literal["in", "out"]
IOS: tuple[Io, ...] = ("out", "in")


class SessionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    CLOSED = "CLOSED"
    EXPIRED = "EXPIRED"


class EnvironmentType(StrEnum):
    DEVELOPMENT = "DEVELOPMENT"
    STAGING = "STAGING"
    PRODUCTION = "PRODUCTION"
    PREVIEW = "PREVIEW"


class RunReason(StrEnum):
    INITIAL = "initial"
    CONTINUATION = "continuation"
    UPGRADE = "upgrade"
    MANUAL = "manual"


def utcnow() -> datetime:
    """Naive UTC now, truncated to milliseconds: the precision every store keeps."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Environment:
    id: str
    slug: str
    type: EnvironmentType
    organization_id: str
    project_id: str
    api_key: str


@dataclass(frozen=True)
class EnvironmentSummary:
    """What an operator sees of an environment in a listing: never its key."""

    id: str
    slug: str
    type: EnvironmentType
    created_at: datetime


@dataclass(frozen=True)
class Session:
    id: str
    friendly_id: str
    external_id: str | None
    type: str
    task_identifier: str
    trigger_config: dict[str, JSONValue]
    tags: list[str]
    metadata: JSONValue | None
    organization_id: str
    project_id: str
    environment_id: str
    environment_type: str
    current_run_id: str | None
    current_run_version: int
    closed_at: datetime | None
    closed_reason: str | None
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def addressing_key(self) -> str:
        """The name channels and tokens use: ``externalId ?? friendlyId``."""
        return self.external_id if self.external_id is not None else self.friendly_id


class RunStatus(StrEnum):
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


#: A run in one of these states never runs again: heartbeats, completes and fails are refused.
FINAL_RUN_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.EXPIRED}
)


@dataclass(frozen=True)
class SessionRun:
    """One run of a session's agent. ``run_id`` is the ``run_…`` friendly id the wire shows.

    ``status`` is what was stored (QUEUED, EXECUTING or a final state written by the agent);
    EXPIRED is never stored but derived from the lease (``run_status``).
    """

    id: str
    session_id: str
    run_id: str
    reason: RunReason
    triggered_at: datetime
    status: RunStatus = RunStatus.QUEUED
    lease_expires_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    output: JSONValue | None = None
    error: JSONValue | None = None


@dataclass(slots=True)
class ChannelRecord:
    """One record of a channel, in S2's shape: headers are ``[name, value]`` pairs.

    Never changed once built, but not ``frozen``: a catch-up read builds ten thousand, and a frozen
    dataclass's ``__init__`` costs three times as much (5.5 ms per 10,000 on the bench machine).
    """

    seq_num: int
    timestamp: int
    body: str
    headers: list[list[str]] = field(default_factory=list)


def session_status(session: Session, now: datetime) -> SessionStatus:
    """CLOSED if closed; else EXPIRED once ``expires_at`` has passed; else ACTIVE."""
    if session.closed_at is not None:
        return SessionStatus.CLOSED
    if session.expires_at is not None and session.expires_at < now:
        return SessionStatus.EXPIRED
    return SessionStatus.ACTIVE


def refuse_if_not_active(
    session: Session,
    now: datetime,
    action: str,
    error: type[Conflict] = SessionClosed,
    message: str = "Cannot {action} {a_state} session",
) -> None:
    """The one closed/expired rule for every write: ``Cannot {action} a closed (or expired) session``.

    A caller that answers otherwise (create meeting an ended session under its externalId) passes
    its own ``error`` and ``message``, formatted with ``action``, ``state`` (``closed``, ``expired``)
    and ``a_state`` (``a closed``, ``an expired``).

    :raise SessionClosed: (or ``error``) the session is closed or has expired.
    """
    status = session_status(session, now)
    if status is SessionStatus.ACTIVE:
        return
    state = status.value.lower()
    a_state = f"an {state}" if status is SessionStatus.EXPIRED else f"a {state}"
    raise error(message.format(action=action, state=state, a_state=a_state))


def run_status(run: SessionRun, now: datetime) -> RunStatus:
    """The stored status, except that a run still QUEUED or EXECUTING whose lease lapsed is EXPIRED.

    A run without a lease (one recorded before runs had leases) never expires.
    """
    if run.status in FINAL_RUN_STATUSES:
        return run.status
    if run.lease_expires_at is not None and run.lease_expires_at < now:
        return RunStatus.EXPIRED
    return run.status


def is_run_live(run: SessionRun | None, now: datetime) -> bool:
    """Whether a session's current run still counts: it exists and is QUEUED or EXECUTING."""
    return run is not None and run_status(run, now) not in FINAL_RUN_STATUSES
