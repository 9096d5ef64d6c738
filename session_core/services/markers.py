"""The end-of-session marker: the control record closing a session writes to both channels.

Its wire form is Trigger.dev 4.8.3's (``v3/sessionStreams/wireProtocol.js``): an empty body and the
headers ``trigger-control: session-closed`` and ``session-closed-reason``. Readers that see it know
the conversation is over; our SSE route ends the stream right after sending it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from session_core.channels.records import NewRecord, channel_key
from session_core.envelopes import CONTROL_HEADER
from session_core.models import IOS, ChannelRecord, Session
from session_core.repositories.ports import AbstractUnitOfWork

SESSION_CLOSED = "session-closed"
SESSION_CLOSED_REASON = "session-closed-reason"


def session_closed_headers(reason: str | None) -> list[list[str]]:
    """The marker's headers; an absent reason is sent as an empty value."""
    return [[CONTROL_HEADER, SESSION_CLOSED], [SESSION_CLOSED_REASON, reason or ""]]


def is_session_closed_record(record: ChannelRecord) -> bool:
    """A control record (empty body) carrying ``trigger-control: session-closed``."""
    return not record.body and [CONTROL_HEADER, SESSION_CLOSED] in record.headers


def write_session_closed(uow: AbstractUnitOfWork, session: Session, now: datetime) -> None:
    """Append the marker to ``.out`` and ``.in`` inside the caller's (closing) transaction."""
    now_ms = int(now.replace(tzinfo=UTC).timestamp() * 1000)
    marker = NewRecord("", session_closed_headers(session.closed_reason))
    for io in IOS:
        uow.channels.append(
            channel_key(session.environment_id, session.addressing_key, io), [marker], now_ms=now_ms
        )
