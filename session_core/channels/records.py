"""Channel records and positions: the values every channel store takes and returns.

A channel is an append-only log in S2's shape: every record gets a ``seq_num`` that starts at 0
and grows by one per record, never repeating and never leaving a gap, even after a trim. Its
store key is ``{environmentId}/sessions/{addressingKey}/{io}`` (``channel_key``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from session_core.errors import VersionMismatch
from session_core.models import ChannelRecord, Io, Session, SessionStatus, session_status

DEFAULT_PART_ID_TTL_MS = 5 * 60 * 1000
# PostgreSQL's btree entries stop near 2,700 bytes; an externalId (at most 256 chars) stays far below.
MAX_KEY_BYTES = 2048
#: seq_nums and timestamps are 64-bit integers in every backend; positions past it hold nothing.
MAX_POSITION = 2**63 - 1


def stream_name(addressing_key: str, io: Io) -> str:
    """The S2 stream name of a session channel, relative to its environment (wire reference §7)."""
    return f"sessions/{addressing_key}/{io}"


def channel_key(environment_id: str, addressing_key: str, io: Io) -> str:
    """The store key of a session channel: ``{environmentId}/sessions/{addressingKey}/{io}``.

    The environment id keeps equal externalIds of different environments apart; what follows it is
    the stream name that ``PUT`` hands out, so the S2-compatible endpoint maps a token's stream
    to its key by prefixing the environment id.
    """
    return f"{environment_id}/{stream_name(addressing_key, io)}"


@dataclass(frozen=True)
class NewRecord:
    """A record to append. ``timestamp`` is the client's, in epoch ms; None means arrival time."""

    body: str
    headers: list[list[str]] = field(default_factory=list)
    timestamp: int | None = None


@dataclass(frozen=True)
class Append:
    """One caller's append within a group: its records, and its part id (``X-Part-Id``) if any."""

    records: Sequence[NewRecord]
    part_id: str | None = None


@dataclass(frozen=True)
class OpenSession:
    """The session a guarded append (``append_while_open``) is for, and when it must be open.

    The append goes ahead only if a session that ``session_ref`` names (its friendly id or its
    externalId) exists in ``environment_id`` and is neither closed nor expired at ``active_at``;
    it goes to that session's channel, whichever name the caller used.
    """

    environment_id: str
    session_ref: str
    active_at: datetime

    def holds_for(self, session: Session) -> bool:
        return session_status(session, self.active_at) is SessionStatus.ACTIVE


@dataclass(frozen=True)
class StreamPosition:
    """A point in a channel as S2 reports it: a seq_num and the timestamp of the record before it."""

    seq_num: int
    timestamp: int


@dataclass(frozen=True, eq=False)
class ReadBatch:
    """Records of a channel and its tail, which is never behind the last record.

    Compared by identity: one batch is handed to every reader that wants it, and they cache what
    they derive from it (its SSE encoding) by the batch.
    """

    records: list[ChannelRecord]
    tail: StreamPosition


@dataclass(frozen=True)
class AppendAck:
    """Where an append landed: ``start`` inclusive, ``end`` exclusive, ``tail`` after the append.

    ``is_duplicate`` marks a retried part id: the positions are the first append's and nothing
    was written this time.
    """

    start: StreamPosition
    end: StreamPosition
    tail: StreamPosition
    is_duplicate: bool = False


@dataclass(frozen=True)
class GuardedAppend:
    """What a guarded append found: the session as it read it (None if there is none), and the
    acks, or None when the session did not hold and nothing was written."""

    session: Session | None
    acks: list[AppendAck] | None


class SeqNumMismatch(VersionMismatch):
    """Raised when an append's ``match_seq_num`` is not the channel's tail; ``tail`` is the real one."""

    def __init__(self, match_seq_num: int, tail: int) -> None:
        super().__init__(f"match_seq_num {match_seq_num} does not match the tail seq_num {tail}")
        self.tail = tail
