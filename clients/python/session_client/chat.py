"""Run a chat agent that speaks Trigger.dev's chat protocol, turn by turn.

What ``@trigger.dev/sdk``'s ``AgentChat`` and ``TriggerChatTransport`` send and expect:

- ``.in`` holds input chunks, JSON strings such as ``{"kind": "message", "payload": {"message":
  {"id", "role": "user", "parts": [{"type": "text", "text"}]}, "chatId", "trigger":
  "submit-message"}}``; ``trigger: "close"`` ends the conversation, ``"action"`` asks for a turn
  without a model answer.
- ``.out`` holds each turn's UIMessageChunks as data records with object data (``start``,
  ``text-start``, ``text-delta``, ``text-end``, ``finish``…), then a ``turn-complete`` control
  record whose ``session-in-event-id`` is the last ``.in`` seq_num the turn handled.

``ChatAgent`` reads ``.in`` from where the last turn ended (that header on the last
turn-complete), calls your handler once per user message, writes what it yields, ends the turn
and trims ``.out`` to the previous turn-complete. An agent that restarts, in this process or a new
run, resumes without answering a message twice.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from session_client._errors import RunFinalError
from session_client._models import CONTROL_HEADER, ControlRecord, DataRecord, Record
from session_client._sync import Channel, SessionsClient

__all__ = [
    "SESSION_IN_EVENT_ID",
    "TURN_COMPLETE",
    "ChatAgent",
    "ChatHandler",
    "Chunk",
    "UserMessage",
    "close_chunk",
    "message_chunk",
    "resume_point",
]

TURN_COMPLETE = "turn-complete"
#: The turn-complete header naming the last ``.in`` seq_num the turn handled.
SESSION_IN_EVENT_ID = "session-in-event-id"

logger = logging.getLogger(__name__)

#: What a handler yields: a piece of the reply's text, or a UIMessageChunk written as it is.
Chunk = str | Mapping[str, Any]


@dataclass(frozen=True)
class UserMessage:
    """A user's message from ``.in``: its text (text parts joined), the UIMessage and the payload."""

    seq_num: int
    id: str
    text: str
    message: dict[str, Any]
    payload: dict[str, Any]


ChatHandler = Callable[[UserMessage], Iterable[Chunk]]


def message_chunk(text: str, chat_id: str, message_id: str | None = None) -> str:
    """The ``.in`` record a chat client sends for a user's text (as ``AgentChat.sendMessage`` does)."""
    message = {
        "id": message_id or f"msg-{uuid.uuid4().hex[:12]}",
        "role": "user",
        "parts": [{"type": "text", "text": text}],
    }
    payload = {"message": message, "chatId": chat_id, "trigger": "submit-message"}
    return json.dumps({"kind": "message", "payload": payload})


def close_chunk(chat_id: str) -> str:
    """The ``.in`` record a chat client sends to end the conversation (``AgentChat.close``)."""
    return json.dumps({"kind": "message", "payload": {"chatId": chat_id, "trigger": "close"}})


def parse_input(record: Record) -> dict[str, Any] | None:
    """An ``.in`` record's input chunk (a JSON string, or an object); None if it is none."""
    data = record.data
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    return data if isinstance(data, dict) and isinstance(data.get("kind"), str) else None


def user_message(record: Record, chunk: Mapping[str, Any]) -> UserMessage | None:
    """The user message a ``submit-message`` chunk carries, if any."""
    payload = chunk.get("payload")
    if not isinstance(payload, dict) or payload.get("trigger") != "submit-message":
        return None
    message = payload.get("message")
    if not isinstance(message, dict):
        return None
    parts = message.get("parts")
    if not isinstance(parts, list):
        parts = []
    text = "".join(
        str(part.get("text", "")) for part in parts if isinstance(part, dict) and part.get("type") == "text"
    )
    return UserMessage(record.seq_num, str(message.get("id", "")), text, message, payload)


def resume_point(out: Channel) -> tuple[int | None, int | None]:
    """``(seq_num of the last turn-complete on .out, its session-in-event-id)``, Nones before any.

    ``.out`` holds about one turn once agents trim it, so reading it whole is cheap.
    """
    last_turn: int | None = None
    in_cursor: int | None = None
    for record in out.records():
        if record.control != TURN_COMPLETE:
            continue
        last_turn = record.seq_num
        raw = record.header(SESSION_IN_EVENT_ID)
        if raw is not None and raw.isdigit():
            in_cursor = int(raw)
    return last_turn, in_cursor


class ChatAgent:
    """Answers one chat session's messages, turn by turn, until the chat closes.

    ``handler(message)`` yields the reply: strings are streamed as one text part, mappings are
    written as UIMessageChunks as they are. An exception in the handler ends that turn with an
    ``error`` chunk; the agent goes on with the next message. With a run token, ``run()``
    completes the run when the chat closes, and stops (without completing) when the run lost
    its lease to a successor.
    """

    def __init__(self, client: SessionsClient, session: str, handler: ChatHandler) -> None:
        self.client = client
        self.session = session
        self.handler = handler
        self.inbox = client.channel(session, "in")
        self.out = client.channel(session, "out")
        self.turns = 0

    def run(self) -> int:
        """Answer until a ``close`` message or the session closes; return the turns answered."""
        try:
            if self.client.run_id is not None:
                self.client.runs.heartbeat(self.client.run_id)  # claims the run: QUEUED -> EXECUTING
            last_turn, in_cursor = resume_point(self.out)
            for record in self.inbox.subscribe(after=in_cursor):
                if record.is_session_closed:
                    break
                chunk = parse_input(record)
                if chunk is None or chunk.get("kind") != "message":
                    continue  # stop, handover…: nothing to do between turns
                payload = chunk.get("payload")
                trigger = payload.get("trigger") if isinstance(payload, dict) else None
                if trigger == "close" and self._is_last(record):
                    break
                message = user_message(record, chunk)
                if message is not None:
                    last_turn = self._turn(message, last_turn)
                elif trigger == "action":
                    last_turn = self._end_turn([], record.seq_num, last_turn)
        except RunFinalError:
            logger.warning("run %s is over; stopping without answering further", self.client.run_id)
            return self.turns
        self._complete_run()
        return self.turns

    def _is_last(self, record: Record) -> bool:
        """Whether nothing follows ``record`` on ``.in``. A close followed by more messages is one a
        later run reads again (a close writes no turn-complete to move the cursor past it), and
        the user has spoken since: the chat goes on."""
        return next(iter(self.inbox.records(after=record.seq_num)), None) is None

    def _turn(self, message: UserMessage, last_turn: int | None) -> int:
        """Stream one reply to ``.out`` and end the turn; returns the turn-complete's seq_num."""
        text_id: str | None = None
        parts = 0
        self.out.write([DataRecord({"type": "start", "messageId": f"asst-{uuid.uuid4().hex[:12]}"})])
        try:
            for piece in self.handler(message):
                if isinstance(piece, str):
                    if text_id is None:
                        text_id, parts = f"text-{parts}", parts + 1
                        self.out.write([DataRecord({"type": "text-start", "id": text_id})])
                    self.out.write([DataRecord({"type": "text-delta", "id": text_id, "delta": piece})])
                else:
                    if text_id is not None:
                        self.out.write([DataRecord({"type": "text-end", "id": text_id})])
                        text_id = None
                    self.out.write([DataRecord(dict(piece))])
            ending = [] if text_id is None else [DataRecord({"type": "text-end", "id": text_id})]
            ending.append(DataRecord({"type": "finish", "finishReason": "stop"}))
        except Exception as error:  # the turn ends with the error; the chat goes on
            logger.exception("chat handler failed on .in record %s", message.seq_num)
            ending = [DataRecord({"type": "error", "errorText": str(error) or type(error).__name__})]
        self.turns += 1
        return self._end_turn(ending, message.seq_num, last_turn)

    def _end_turn(self, records: list[DataRecord], in_seq: int, last_turn: int | None) -> int:
        """Write the turn's last records and its turn-complete, then trim to the previous one."""
        complete = ControlRecord([(CONTROL_HEADER, TURN_COMPLETE), (SESSION_IN_EVENT_ID, str(in_seq))])
        seqs = self.out.write([*records, complete], trim_before=last_turn)
        return seqs[-1]

    def _complete_run(self) -> None:
        run_id = self.client.run_id
        if run_id is None:
            return
        try:
            self.client.runs.complete(run_id, output={"turns": self.turns})
        except RunFinalError:
            logger.info("run %s already ended", run_id)
