"""Opaque keyset cursors on ``(created_at, id)``.

A cursor names the last row a client saw; pages continue strictly past it, so rows sharing a
timestamp are never repeated or skipped (Trigger.dev's cursor, on the id alone, can).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from session_core.errors import BadRequest

_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True, order=True)
class SessionKey:
    """A session's position in list order: newest first, ties broken by id."""

    created_at: datetime
    id: str


def encode_cursor(key: SessionKey) -> str:
    millis = (key.created_at - _EPOCH) // timedelta(milliseconds=1)
    raw = json.dumps([millis, key.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> SessionKey:
    """Parse a cursor made by ``encode_cursor``; anything else is a 400 for the caller."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        millis, session_id = json.loads(raw)
        if not isinstance(millis, int) or not isinstance(session_id, str):
            raise ValueError
        if not (session_id.isascii() and session_id.isalnum()):  # ids are cuids
            raise ValueError
        return SessionKey(_EPOCH + timedelta(milliseconds=millis), session_id)
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError):
        raise BadRequest("Invalid page cursor: pass back a pagination.next or .previous value") from None
