"""A session's channels as Durable Streams: ``sessions/{session}/{in|out}``.

They follow the realtime routes' rules (a secret key reaches every session of its environment, a
session token its own session's channels, only a secret key writes ``.out``) and present as
``application/json`` streams: each record is one message, the stored envelope
``{"data": <the appended text>, "id": <part id>}``, with ``"headers"`` when the record has some
(a control record, such as ``turn-complete``, is headers only). Offsets name seq_nums. A closed or
expired session's channels read as closed streams.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from session_core.channels.records import channel_key
from session_core.durable.rules import JSON_TYPE, json_record_body
from session_core.envelopes import open_envelope
from session_core.models import ChannelRecord, Io, SessionStatus, session_status
from session_core.repositories.ports import AbstractUnitOfWork
from session_core.scopes import Principal
from session_core.services.channels import find_session_for_read


def message(record: ChannelRecord) -> str:
    """A record as its stream's JSON message (see the module docstring)."""
    item: dict[str, Any] = {}
    if record.body:
        data, part = open_envelope(record)
        item = {"data": data, "id": part}
    if record.headers:
        item["headers"] = record.headers
    return json.dumps(item, separators=(",", ":"))


@dataclass(frozen=True)
class SessionChannel:
    """A readable session channel: its store key, and whether its session ended (closed or expired)."""

    key: str
    ended: bool
    content_type: str = JSON_TYPE


def open_channel(
    uow: AbstractUnitOfWork, principal: Principal, session_ref: str, io: Io, now: datetime
) -> SessionChannel:
    """The channel ``principal`` asks to read, in the realtime loaders' order.

    A ``session_…`` id needs a row and is NotFound before the scope check; an externalId without
    one names its (empty) channel.

    :raise NotFound: a friendly id without a session.
    :raise Forbidden: the token may read none of the session's names.
    """
    session = find_session_for_read(uow, principal, session_ref, "Stream not found")
    if session is None:
        return SessionChannel(channel_key(principal.environment.id, session_ref, io), ended=False)
    ended = session_status(session, now) is not SessionStatus.ACTIVE
    return SessionChannel(channel_key(principal.environment.id, session.addressing_key, io), ended)


def read_channel(
    uow: AbstractUnitOfWork, key: str, start: int | None, limit: int, max_bytes: int
) -> tuple[list[str], int, int]:
    """Up to ``limit`` messages from seq_num ``start`` (None: the tail), and no more than ``max_bytes``
    of stored records plus one, stored-body shaped (one-message JSON arrays), with the position
    after them and the tail."""
    with uow:
        if start is None:
            tail = uow.channels.tail(key).seq_num
            return [], tail, tail
        records, position = uow.channels.read_with_tail(key, start, limit, max_bytes)
    tail = position.seq_num
    bodies = [json_record_body([message(record)]) for record in records]
    return bodies, records[-1].seq_num + 1 if records else tail, tail
