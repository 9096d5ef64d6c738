"""Domain models: plain dataclasses, no ORM, plus the pure rules that derive state from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from session_core.errors import SessionClosed

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


@dataclass(frozen=True)
class SessionRun:
    id: str
    session_id: str
    run_id: str
    reason: RunReason
    triggered_at: datetime


@dataclass(frozen=True)
class ChannelRecord:
    """One record of a channel, in S2's shape: headers are ``[name, value]`` pairs."""

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


def refuse_if_not_active(session: Session, now: datetime, action: str) -> None:
    """The one closed/expired rule for every write: ``Cannot {action} a closed (or expired) session``.

    :raise SessionClosed: the session is closed or has expired.
    """
    status = session_status(session, now)
    if status is SessionStatus.CLOSED:
        raise SessionClosed(f"Cannot {action} a closed session")
    if status is SessionStatus.EXPIRED:
        raise SessionClosed(f"Cannot {action} an expired session")
