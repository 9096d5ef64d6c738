"""The SQLite append: a few prebuilt statements run in-process under the write lock.

The same algorithm as ``pg_append`` (read the counter, answer repeated part ids, check
``match_seq_num``, move the counter, insert records and part ids), one statement per step: SQLite
runs in this process, so round trips cost nothing, and ``BEGIN IMMEDIATE`` already serializes
every writer of the file.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from session_core.channels.append_rules import GroupPlan, assign_timestamps, written_batch
from session_core.channels.reads import sweep_part_ids
from session_core.channels.records import Append, AppendAck, ReadBatch, SeqNumMismatch, StreamPosition
from session_core.db.tables import channel_parts, channel_records, channels

_STATE = sa.select(channels.c.next_seq, channels.c.last_timestamp, channels.c.parts_swept_at).where(
    channels.c.key == sa.bindparam("k")
)
_CREATE = sqlite.insert(channels).on_conflict_do_nothing(index_elements=[channels.c.key])
_SEEN = sa.select(channel_parts.c.part_id, channel_parts.c.seq_num, channel_parts.c.created_at).where(
    channel_parts.c.channel_key == sa.bindparam("k"),
    channel_parts.c.part_id.in_(sa.bindparam("parts", expanding=True)),
    channel_parts.c.created_at > sa.bindparam("fresh_after"),
)
_MOVE = (
    channels.update()
    .where(channels.c.key == sa.bindparam("k"))
    .values(
        next_seq=sa.bindparam("new_next_seq"),
        last_timestamp=sa.bindparam("new_last_timestamp"),
        parts_swept_at=sa.bindparam("new_parts_swept_at"),
    )
)
_INSERT_RECORDS = channel_records.insert()
_remember_insert = sqlite.insert(channel_parts)
# An expired row under the same part id may still be there: take it over.
_REMEMBER = _remember_insert.on_conflict_do_update(
    index_elements=[channel_parts.c.channel_key, channel_parts.c.part_id],
    set_={"seq_num": _remember_insert.excluded.seq_num, "created_at": _remember_insert.excluded.created_at},
)


def append_sqlite(
    conn: sa.Connection,
    key: str,
    appends: Sequence[Append],
    now_ms: int,
    ttl_ms: int,
    match_seq_num: int | None,
) -> tuple[list[AppendAck], ReadBatch | None]:
    """Append a group to channel ``key`` inside the caller's transaction, which holds SQLite's
    write lock (``BEGIN IMMEDIATE``): nobody else reads or moves the counter meanwhile.

    Returns the acks and the records written (None when every append repeated a part id).

    :raise SeqNumMismatch: ``match_seq_num`` is given and is not the tail.
    """
    # The steps of pg_append's APPEND, one statement each. 1: the counter (the write lock is held).
    state = conn.execute(_STATE, {"k": key}).first()
    if state is None:
        conn.execute(_CREATE, {"key": key, "next_seq": 0, "last_timestamp": 0, "parts_swept_at": 0})
        next_seq, previous, swept_at = 0, 0, 0
    else:
        next_seq, previous, swept_at = state
    # 2: part ids seen on the channel within the TTL.
    parts = [item.part_id for item in appends if item.part_id is not None]
    seen: dict[str, tuple[int, int]] = {}
    if parts:
        found = conn.execute(_SEEN, {"k": key, "parts": parts, "fresh_after": now_ms - ttl_ms})
        seen = {part: (seq_num, created_at) for part, seq_num, created_at in found}
    plan = GroupPlan.of(appends, seen)
    tail = StreamPosition(next_seq, previous)
    if not plan.records:
        return plan.acks(appends, next_seq, [], tail, now_ms), None
    # 3: S2's optimistic append.
    if match_seq_num is not None and match_seq_num != next_seq:
        raise SeqNumMismatch(match_seq_num, next_seq)
    # 4: move the counter, insert the records, remember the part ids (5, the notice: the caller's).
    stamps = assign_timestamps(plan.records, previous, now_ms)
    tail = StreamPosition(next_seq + len(plan.records), stamps[-1])
    is_sweep_due = bool(plan.new_parts) and now_ms - swept_at >= ttl_ms
    conn.execute(
        _MOVE,
        {
            "k": key,
            "new_next_seq": tail.seq_num,
            "new_last_timestamp": tail.timestamp,
            "new_parts_swept_at": now_ms if is_sweep_due else swept_at,
        },
    )
    conn.execute(
        _INSERT_RECORDS,
        [
            {
                "channel_key": key,
                "seq_num": next_seq + offset,
                "timestamp": stamp,
                "headers": record.headers or None,
                "body": record.body,
            }
            for offset, (record, stamp) in enumerate(zip(plan.records, stamps, strict=True))
        ],
    )
    if plan.new_parts:
        if is_sweep_due:
            sweep_part_ids(conn, key, now_ms - ttl_ms)
        conn.execute(
            _REMEMBER,
            [
                {"channel_key": key, "part_id": part, "seq_num": next_seq + offset, "created_at": now_ms}
                for part, offset in plan.new_parts
            ],
        )
    acks = plan.acks(appends, next_seq, stamps, tail, now_ms)
    return acks, written_batch(next_seq, plan.records, stamps, tail)
