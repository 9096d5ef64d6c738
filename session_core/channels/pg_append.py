"""The PostgreSQL append: one round trip, commit included, however many callers it serves.

Two statements sent as one query string (psycopg2 runs them as one implicit transaction when the
connection autocommits):

``LOCK_CHANNEL`` creates the channel's row on first use, else locks it without writing it (ON
CONFLICT DO UPDATE locks the conflicting row even when its WHERE is false): appenders of a channel
queue there. ``APPEND`` runs once the lock is granted, so its snapshot sees every part id that
earlier lock holders committed: ``seen`` is exact, and a seen part id makes it write nothing (the
caller plans again without it, ``append_postgres``).

An append is either to a channel ``key`` the caller names, or guarded: to the channel of the
session that ``friendly_id`` or ``external_id`` names in ``environment_id`` (the other is NULL),
only while that session is open. The guarded form reads the session ``FOR SHARE`` in both
statements, so a racing close commits after the append, and derives the channel's key from the
row (``channel_key``: the externalId, else the friendly id), so either of a session's names
appends in one round trip. The unguarded form passes NULL for those and its ``key``.

Both statements are prepared once per connection (parsing and planning cost more than running
them) unless the connection cannot keep them (a pooler in transaction mode): then the same SQL is
sent whole each time (``Settings.pg_prepare``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, cast

import sqlalchemy as sa

from session_core.channels.append_rules import GroupPlan, wanted_timestamps, written_batch
from session_core.channels.reads import sweep_part_ids
from session_core.channels.records import (
    Append,
    AppendAck,
    OpenSession,
    ReadBatch,
    SeqNumMismatch,
    StreamPosition,
)
from session_core.ids import is_session_friendly_id
from session_core.models import Io

LOCK_CHANNEL = """
WITH s AS (
    SELECT friendly_id, external_id FROM sessions
    WHERE environment_id = %(environment_id)s
      AND (friendly_id = %(friendly_id)s OR external_id = %(external_id)s)
    FOR SHARE
)
INSERT INTO channels (key, next_seq, last_timestamp, parts_swept_at)
SELECT coalesce(%(key)s,
    %(environment_id)s || '/sessions/' || coalesce(s.external_id, s.friendly_id) || '/' || %(io)s), 0, 0, 0
FROM (SELECT) AS one LEFT JOIN s ON true
WHERE %(key)s IS NOT NULL OR s.friendly_id IS NOT NULL
ON CONFLICT (key) DO UPDATE SET next_seq = channels.next_seq WHERE false
"""

APPEND = """
WITH s AS (
    SELECT * FROM sessions
    WHERE environment_id = %(environment_id)s
      AND (friendly_id = %(friendly_id)s OR external_id = %(external_id)s)
    FOR SHARE
), k AS (
    SELECT coalesce(%(key)s, (SELECT
            %(environment_id)s || '/sessions/' || coalesce(external_id, friendly_id) || '/' || %(io)s
            FROM s)) AS key,
        %(key)s IS NOT NULL OR EXISTS (SELECT 1 FROM s
            WHERE closed_at IS NULL AND (expires_at IS NULL OR expires_at >= %(active_at)s)) AS is_open
), o AS (  -- 1: the counter (LOCK_CHANNEL holds its row)
    SELECT next_seq, last_timestamp, parts_swept_at FROM channels WHERE key = (SELECT key FROM k)
), seen AS (  -- 2: part ids seen on the channel within the TTL
    SELECT part_id, seq_num, created_at FROM channel_parts
    WHERE channel_key = (SELECT key FROM k) AND part_id = ANY(%(parts)s) AND created_at > %(fresh_after)s
), c AS (  -- 3, 4: match_seq_num, then move the counter
    UPDATE channels SET
        next_seq = o.next_seq + %(count)s,
        last_timestamp = greatest(o.last_timestamp, %(last_wanted)s),
        parts_swept_at = CASE WHEN %(has_parts)s AND %(now)s - o.parts_swept_at >= %(ttl)s
            THEN %(now)s ELSE o.parts_swept_at END
    FROM o, k
    WHERE channels.key = k.key AND k.is_open
      AND NOT EXISTS (SELECT 1 FROM seen)
      AND (%(match)s IS NULL OR o.next_seq = %(match)s)
    RETURNING o.next_seq AS start_seq, o.last_timestamp AS previous,
        channels.next_seq AS tail_seq, channels.last_timestamp AS tail_timestamp,
        %(has_parts)s AND %(now)s - o.parts_swept_at >= %(ttl)s AS is_sweep_due
), r AS (  -- 4: insert the records
    INSERT INTO channel_records (channel_key, seq_num, timestamp, headers, body)
    SELECT k.key, c.start_seq + t.ord - 1, greatest(c.previous, t.wanted), t.headers::jsonb, t.body
    FROM c, k, unnest(%(wanted)s, %(headers)s, %(bodies)s) WITH ORDINALITY AS t(wanted, headers, body, ord)
), p AS (  -- 4: remember the part ids
    INSERT INTO channel_parts (channel_key, part_id, seq_num, created_at)
    SELECT k.key, t.part_id, c.start_seq + t.part_offset, %(now)s
    FROM c, k, unnest(%(parts)s, %(part_offsets)s) AS t(part_id, part_offset)
    ON CONFLICT (channel_key, part_id)
        DO UPDATE SET seq_num = excluded.seq_num, created_at = excluded.created_at
), n AS (  -- 5: announce the tail (tail_notice), delivered on commit
    SELECT pg_notify('sessions_channel_tail', c.tail_seq::text || ' ' || k.key) FROM c, k
)
SELECT to_jsonb(s) AS session, k.key AS channel_key, k.is_open, o.next_seq, o.last_timestamp,
    c.start_seq, c.previous, c.tail_seq, c.tail_timestamp, c.is_sweep_due,
    seen.part_id AS seen_part, seen.seq_num AS seen_seq, seen.created_at AS seen_at,
    (SELECT count(*) FROM n) AS notified
FROM k LEFT JOIN s ON true LEFT JOIN o ON true LEFT JOIN c ON true LEFT JOIN seen ON true
"""

#: Every parameter of the two statements, with the SQL type ``PREPARE`` declares for it.
PARAMETERS = (
    ("key", "text"),
    ("environment_id", "text"),
    ("friendly_id", "text"),
    ("external_id", "text"),
    ("io", "text"),
    ("active_at", "timestamp"),
    ("count", "bigint"),
    ("wanted", "bigint[]"),
    ("last_wanted", "bigint"),
    ("headers", "text[]"),
    ("bodies", "text[]"),
    ("parts", "text[]"),
    ("part_offsets", "bigint[]"),
    ("has_parts", "boolean"),
    ("fresh_after", "bigint"),
    ("ttl", "bigint"),
    ("now", "bigint"),
    ("match", "bigint"),
)
#: ``Connection.info`` key: whether the statements are prepared on that connection (for its life).
_PREPARED = "sessions_channel_append_prepared"
_NAME = "sessions_channel_append_v3"


def _placeholders(sql: str, render: Callable[[int, str, str], str]) -> str:
    """``sql`` with each ``%(name)s`` placeholder replaced by ``render(position, name, type)``."""
    return sql % {name: render(n, name, kind) for n, (name, kind) in enumerate(PARAMETERS, 1)}


def _prepare(name: str, sql: str) -> str:
    types = ", ".join(kind for _, kind in PARAMETERS)
    return f"PREPARE {name} ({types}) AS {_placeholders(sql, lambda n, _, __: f'${n}')}"


def _execute(name: str) -> str:
    return f"EXECUTE {name}({', '.join(f'%({name})s' for name, _ in PARAMETERS)})"


def _cast(sql: str) -> str:
    """``sql`` to send whole, each placeholder cast to the type ``PREPARE`` would declare for it
    (psycopg2 sends values as literals, and an empty array or a NULL has no type of its own)."""
    return _placeholders(sql, lambda _, name, kind: f"CAST(%({name})s AS {kind})")


#: The query strings of an append: ``PREPARE_BOTH`` once per connection, then ``EXECUTE_BOTH``;
#: or ``SEND_BOTH``, the same SQL whole, each time.
PREPARE_BOTH = f"{_prepare(_NAME + '_lock', LOCK_CHANNEL)}; {_prepare(_NAME, APPEND)}"
EXECUTE_BOTH = f"{_execute(_NAME + '_lock')}; {_execute(_NAME)}"
SEND_BOTH = f"{_cast(LOCK_CHANNEL)}; {_cast(APPEND)}"


def append_postgres(
    conn: sa.Connection,
    key: str | None,
    appends: Sequence[Append],
    now_ms: int,
    ttl_ms: int,
    match_seq_num: int | None = None,
    guard: tuple[OpenSession, Io] | None = None,
    *,
    prepare: bool = True,
) -> tuple[list[AppendAck] | None, sa.Row[Any], ReadBatch | None]:
    """Append to channel ``key``, or with ``guard`` to the channel ``io`` of the session it names
    while that session is open; one round trip (two with a part id seen).

    Returns the acks (None when the guard held the append back), the statement's last row, which
    carries the guarded session (as JSON: one column costs the driver less than nineteen) and
    the channel's key, and the records written (None if nothing was).

    :raise SeqNumMismatch: ``match_seq_num`` is given and is not the tail.
    """
    sql = SEND_BOTH
    if prepare:
        if not conn.info.get(_PREPARED):
            conn.exec_driver_sql(PREPARE_BOTH)
            conn.info[_PREPARED] = True
        sql = EXECUTE_BOTH
    session, io = guard if guard is not None else (None, None)
    ref = None if session is None else session.session_ref
    by_friendly_id = ref is not None and is_session_friendly_id(ref)
    target = {
        "key": key if session is None else None,
        "environment_id": None if session is None else session.environment_id,
        "friendly_id": ref if by_friendly_id else None,
        "external_id": None if by_friendly_id else ref,
        "io": io,
        "active_at": None if session is None else session.active_at,
    }
    seen: dict[str, tuple[int, int]] = {}
    plan = GroupPlan.of(appends, seen)
    while True:
        wanted = wanted_timestamps(plan.records, now_ms)
        rows = conn.exec_driver_sql(
            sql,
            {
                **target,
                "count": len(plan.records),
                "wanted": wanted,
                "last_wanted": wanted[-1],
                "headers": [json.dumps(r.headers) if r.headers else None for r in plan.records],
                "bodies": [record.body for record in plan.records],
                "parts": [part for part, _ in plan.new_parts],
                "part_offsets": [offset for _, offset in plan.new_parts],
                "has_parts": bool(plan.new_parts),
                "fresh_after": now_ms - ttl_ms,
                "ttl": ttl_ms,
                "now": now_ms,
                "match": match_seq_num,
            },
        ).all()
        row = rows[0]
        if not row.is_open:
            return None, row, None
        found = {r.seen_part: (r.seen_seq, r.seen_at) for r in rows if r.seen_part is not None}
        if found:  # nothing was written: plan again, answering these from the channel
            seen.update(found)
            plan = GroupPlan.of(appends, seen)
            if not plan.records:  # all of them repeat part ids (the lock is held: the tail stands)
                tail = StreamPosition(row.next_seq, row.last_timestamp)
                return plan.acks(appends, tail.seq_num, [], tail, now_ms), row, None
            continue
        if row.start_seq is None:  # once nothing was seen, only match_seq_num stops the update
            raise SeqNumMismatch(cast(int, match_seq_num), row.next_seq)
        if row.is_sweep_due:
            sweep_part_ids(conn, row.channel_key, now_ms - ttl_ms)
        tail = StreamPosition(row.tail_seq, row.tail_timestamp)
        stamps = [max(row.previous, stamp) for stamp in wanted]
        acks = plan.acks(appends, row.start_seq, stamps, tail, now_ms)
        return acks, row, written_batch(row.start_seq, plan.records, stamps, tail)
