"""Tail notices: how an append tells every process's live readers that a channel moved.

The PostgreSQL append queues ``pg_notify`` with a ``tail_notice`` payload; ``PgTailListener``
parses it back. Both the store and the wake-up hub use this module, and neither imports the other.
"""

from __future__ import annotations

NOTIFY_CHANNEL = "sessions_channel_tail"
_POKE = "*"


def tail_notice(key: str, tail: int) -> str:
    """The NOTIFY payload announcing that channel ``key`` now ends before seq_num ``tail``."""
    return f"{tail} {key}"


def poke_notice(key: str) -> str:
    """The NOTIFY payload asking readers of channel ``key`` to read again, though its tail did not
    move (a Durable Stream closed or deleted)."""
    return f"{_POKE} {key}"


def parse_tail_notice(payload: str) -> tuple[str, int | None] | None:
    """Split a payload from ``tail_notice`` (or ``poke_notice``: tail None); None for anything else
    (never raise in the listener)."""
    tail, _, key = payload.partition(" ")
    if key and tail == _POKE:
        return key, None
    if not key or not tail.isdigit():
        return None
    return key, int(tail)


def pg_notify_tail_sql(tail: str, key: str) -> str:
    """A SQL call queueing the NOTIFY of ``tail_notice(key, tail)``, for SQL expressions ``tail``
    and ``key``: the append statement announces the tail it computes itself. PostgreSQL delivers
    the notice only if the transaction commits."""
    return f"pg_notify('{NOTIFY_CHANNEL}', ({tail})::text || ' ' || ({key}))"
