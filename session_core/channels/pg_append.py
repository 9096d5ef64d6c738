"""The PostgreSQL append: one round trip, commit included, however many callers it serves.

See ``_PgAppend`` for the statements and ``append_postgres`` for the loop around them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa

from session_core.channels.append_rules import GroupPlan, wanted_timestamps, written_batch
from session_core.channels.notices import pg_notify_tail_sql
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
from session_core.repositories.sql import SESSION_COLUMNS


def _prepared(name: str, sql: str, parameters: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """``PREPARE`` and ``EXECUTE`` texts for ``sql``, written with psycopg2's ``%(name)s``
    placeholders; ``parameters`` lists the names it may use, with their SQL types."""
    used = [(name, kind) for name, kind in parameters if f"%({name})s" in sql]
    positional = sql % {name: f"${n}" for n, (name, _) in enumerate(used, 1)}
    prepare = f"PREPARE {name} ({', '.join(kind for _, kind in used)}) AS {positional}"
    return prepare, f"EXECUTE {name}({', '.join(f'%({name})s' for name, _ in used)})"


def _unprepared(sql: str, parameters: tuple[tuple[str, str], ...]) -> str:
    """``sql`` to run as it is, each placeholder cast to the type ``PREPARE`` would declare for it
    (psycopg2 sends values as literals, and an empty array or a NULL has no type of its own)."""
    return sql % {name: f"CAST(%({name})s AS {kind})" for name, kind in parameters}


class _PgAppend:
    """One PostgreSQL append, as a query string that takes one round trip.

    The first statement creates the channel row on first use, else locks it without writing it
    (ON CONFLICT DO UPDATE locks the conflicting row even when its WHERE is false): appenders of a
    channel queue there. The second runs the append. Both are prepared once per connection, since
    parsing and planning them cost more than running them. The append starts once the lock is
    granted, so its snapshot, taken when it starts, sees every part id earlier lock holders
    committed: ``seen`` is exact, and a seen part id makes it write nothing (the caller plans
    again without it).

    With ``guard_column`` (``friendly_id`` or ``external_id``, the column ``session_ref`` names) the
    append also reads that session with a shared lock, so a racing close commits after it, and
    writes only while the session is open and ``session_ref`` is its addressing key; the channel
    row is then only created for such a session. psycopg2 sends both statements as one string:
    ``run`` executes the prepared ones, ``unprepared`` is the same SQL sent whole each time, for
    connections that cannot keep a prepared statement (a pooler in transaction mode).
    """

    PARAMETERS = (
        ("key", "text"),
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
    GUARD_PARAMETERS = (("environment_id", "text"), ("session_ref", "text"), ("active_at", "timestamp"))

    def __init__(self, guard_column: str | None = None) -> None:
        self.name = f"sessions_channel_append_{guard_column or 'unguarded'}_v2"
        parameters = self.PARAMETERS + (self.GUARD_PARAMETERS if guard_column else ())
        lock, body = self._lock(guard_column), self._body(guard_column)
        prepare_lock, run_lock = _prepared(f"{self.name}_lock", lock, parameters)
        prepare_append, run_append = _prepared(self.name, body, parameters)
        self.prepare = f"{prepare_lock}; {prepare_append}"
        self.run = f"{run_lock}; {run_append}"
        self.unprepared = f"{_unprepared(lock, parameters)}; {_unprepared(body, parameters)}"

    @staticmethod
    def _session(guard_column: str, columns: str, *, is_open: bool = False) -> str:
        where = f"environment_id = %(environment_id)s AND {guard_column} = %(session_ref)s"
        if is_open:
            where += " AND coalesce(external_id, friendly_id) = %(session_ref)s"
        return f"SELECT {columns} FROM sessions WHERE {where} FOR SHARE"

    def _lock(self, guard_column: str | None) -> str:
        values = "VALUES (%(key)s, 0, 0, 0)"
        if guard_column:
            values = f"SELECT %(key)s, 0, 0, 0 FROM ({self._session(guard_column, '1', is_open=True)}) AS s"
        return (
            f"INSERT INTO channels (key, next_seq, last_timestamp, parts_swept_at) {values}"
            " ON CONFLICT (key) DO UPDATE SET next_seq = channels.next_seq WHERE false"
        )

    def _body(self, guard_column: str | None) -> str:
        session_cte = session_columns = guard = ""
        if guard_column:
            session_cte = f"s AS ({self._session(guard_column, ', '.join(SESSION_COLUMNS))}), "
            session_columns = ", ".join(f"s.{column}" for column in SESSION_COLUMNS) + ","
            is_open = """EXISTS (SELECT 1 FROM s
                WHERE coalesce(s.external_id, s.friendly_id) = %(session_ref)s
                AND s.closed_at IS NULL AND (s.expires_at IS NULL OR s.expires_at >= %(active_at)s))"""
            guard = f"\n              AND {is_open}"
            session_columns += f" {is_open} AS is_open,"
        return f"""
        WITH {session_cte}o AS (
            SELECT next_seq, last_timestamp, parts_swept_at FROM channels WHERE key = %(key)s
        ), seen AS (
            SELECT part_id, seq_num, created_at FROM channel_parts
            WHERE channel_key = %(key)s AND part_id = ANY(%(parts)s) AND created_at > %(fresh_after)s
        ), c AS (
            UPDATE channels SET
                next_seq = o.next_seq + %(count)s,
                last_timestamp = greatest(o.last_timestamp, %(last_wanted)s),
                parts_swept_at = CASE WHEN %(has_parts)s AND %(now)s - o.parts_swept_at >= %(ttl)s
                    THEN %(now)s ELSE o.parts_swept_at END
            FROM o
            WHERE channels.key = %(key)s
              AND NOT EXISTS (SELECT 1 FROM seen)
              AND (%(match)s IS NULL OR o.next_seq = %(match)s){guard}
            RETURNING o.next_seq AS start_seq, o.last_timestamp AS previous,
                channels.next_seq AS tail_seq, channels.last_timestamp AS tail_timestamp,
                %(has_parts)s AND %(now)s - o.parts_swept_at >= %(ttl)s AS is_sweep_due
        ), r AS (
            INSERT INTO channel_records (channel_key, seq_num, timestamp, headers, body)
            SELECT %(key)s, c.start_seq + t.ord - 1, greatest(c.previous, t.wanted), t.headers::jsonb,
                t.body
            FROM c, unnest(%(wanted)s, %(headers)s, %(bodies)s)
                WITH ORDINALITY AS t(wanted, headers, body, ord)
        ), p AS (
            INSERT INTO channel_parts (channel_key, part_id, seq_num, created_at)
            SELECT %(key)s, t.part_id, c.start_seq + t.part_offset, %(now)s
            FROM c, unnest(%(parts)s, %(part_offsets)s) AS t(part_id, part_offset)
            ON CONFLICT (channel_key, part_id)
                DO UPDATE SET seq_num = excluded.seq_num, created_at = excluded.created_at
        ), n AS (
            SELECT {pg_notify_tail_sql("c.tail_seq", "%(key)s")} FROM c
        )
        SELECT {session_columns} o.next_seq, o.last_timestamp, c.start_seq, c.previous, c.tail_seq,
            c.tail_timestamp, c.is_sweep_due,
            seen.part_id AS seen_part, seen.seq_num AS seen_seq, seen.created_at AS seen_at,
            (SELECT count(*) FROM n) AS notified
        FROM (SELECT) AS one {"LEFT JOIN s ON true " if guard_column else ""}LEFT JOIN o ON true
            LEFT JOIN c ON true LEFT JOIN seen ON true
        """


_PG_APPENDS = {column: _PgAppend(column) for column in (None, "friendly_id", "external_id")}
#: ``Connection.info`` key: the names of the statements prepared on that connection, for its whole life.
_PREPARED = "sessions_prepared_statements"


def append_postgres(
    conn: sa.Connection,
    key: str,
    appends: Sequence[Append],
    now_ms: int,
    ttl_ms: int,
    match_seq_num: int | None,
    guard: OpenSession | None = None,
    *,
    prepare: bool = True,
) -> tuple[list[AppendAck] | None, sa.Row[Any], ReadBatch | None]:
    """Append in one round trip (two with a part id seen); with ``guard``, only while it holds.

    Returns the acks (None when the guard held the append back), the statement's last row, which
    carries the guarded session's columns, and the records written (None if nothing was).
    """
    column = (
        None
        if guard is None
        else "friendly_id"
        if is_session_friendly_id(guard.addressing_key)
        else "external_id"
    )
    statement = _PG_APPENDS[column]
    sql = statement.unprepared
    if prepare:
        prepared: set[str] = conn.info.setdefault(_PREPARED, set())
        if statement.name not in prepared:
            conn.exec_driver_sql(statement.prepare)
            prepared.add(statement.name)
        sql = statement.run
    guard_parameters = (
        {}
        if guard is None
        else {
            "environment_id": guard.environment_id,
            "session_ref": guard.addressing_key,
            "active_at": guard.active_at,
        }
    )
    seen: dict[str, tuple[int, int]] = {}
    plan = GroupPlan.of(appends, seen)
    while True:
        wanted = wanted_timestamps(plan.records, now_ms)
        rows = conn.exec_driver_sql(
            sql,
            {
                "key": key,
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
                **guard_parameters,
            },
        ).all()
        row = rows[0]
        if guard is not None and not row.is_open:
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
            sweep_part_ids(conn, key, now_ms - ttl_ms)
        tail = StreamPosition(row.tail_seq, row.tail_timestamp)
        stamps = [max(row.previous, stamp) for stamp in wanted]
        acks = plan.acks(appends, row.start_seq, stamps, tail, now_ms)
        return acks, row, written_batch(row.start_seq, plan.records, stamps, tail)
