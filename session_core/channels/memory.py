"""An in-memory ``ChannelStore``: the channel store of the unit tests' fake unit of work.

It keeps the SQL store's rules (gap-free seq_nums, part ids, ``match_seq_num``, client-prefer
timestamps, trims) by reusing its pure parts, and passes the same contract tests. It has no
transactions: what it writes is there at once, which is all a test of one use case at a time needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from session_core.channels.append_rules import GroupPlan, assign_timestamps
from session_core.channels.port import ChannelStore
from session_core.channels.records import (
    MAX_POSITION,
    Append,
    AppendAck,
    ReadBatch,
    SeqNumMismatch,
    StreamPosition,
)
from session_core.models import ChannelRecord, Session


@dataclass
class MemoryChannel:
    """One channel: its kept records, its tail, and its part ids with ``(seq_num, created_at)``."""

    records: list[ChannelRecord] = field(default_factory=list)
    tail: StreamPosition = StreamPosition(0, 0)
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)


class MemoryChannelStore(ChannelStore):
    """``ChannelStore`` over ``channels``, a dict a test keeps for as long as its "database" lives.

    ``find_session(environment_id, session_ref)`` is what ``append_while_open`` reads the session
    with (the sessions repository's ``get_by_ref``).
    """

    def __init__(
        self,
        channels: dict[str, MemoryChannel],
        find_session: Callable[[str, str], Session | None],
        on_appended: Callable[[str, ReadBatch], None] | None = None,
    ) -> None:
        super().__init__(on_appended)
        self._channels = channels
        self._find = find_session

    def _find_session(self, environment_id: str, session_ref: str) -> Session | None:
        return self._find(environment_id, session_ref)

    def _write(
        self, key: str, appends: Sequence[Append], now_ms: int, ttl_ms: int, match_seq_num: int | None
    ) -> tuple[list[AppendAck], ReadBatch | None]:
        channel = self._channels.setdefault(key, MemoryChannel())
        fresh_after = now_ms - ttl_ms
        seen = {part: at for part, at in channel.parts.items() if at[1] > fresh_after}
        plan = GroupPlan.of(appends, seen)
        start = channel.tail.seq_num
        if not plan.records:
            return plan.acks(appends, start, [], channel.tail, now_ms), None
        if match_seq_num is not None and match_seq_num != start:
            raise SeqNumMismatch(match_seq_num, start)
        stamps = assign_timestamps(plan.records, channel.tail.timestamp, now_ms)
        written = [
            ChannelRecord(start + offset, stamp, record.body, list(record.headers))
            for offset, (record, stamp) in enumerate(zip(plan.records, stamps, strict=True))
        ]
        channel.records += written
        channel.tail = StreamPosition(start + len(written), stamps[-1])
        channel.parts.update((part, (start + offset, now_ms)) for part, offset in plan.new_parts)
        return plan.acks(appends, start, stamps, channel.tail, now_ms), ReadBatch(written, channel.tail)

    def read(
        self, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
    ) -> list[ChannelRecord]:
        channel = self._channels.get(key)
        records = [] if channel is None else channel.records
        found: list[ChannelRecord] = []
        total, max_bytes = 0, max(1, max_bytes)
        for record in records:
            if record.seq_num < start_seq:
                continue
            if len(found) == limit or total >= max_bytes:
                break
            found.append(record)
            total += len(record.body.encode()) + (
                len(json.dumps(record.headers).encode()) if record.headers else 0
            )
        return found

    def tail(self, key: str) -> StreamPosition:
        channel = self._channels.get(key)
        return StreamPosition(0, 0) if channel is None else channel.tail

    def read_with_tail(
        self, key: str, start_seq: int, limit: int, max_bytes: int = MAX_POSITION
    ) -> tuple[list[ChannelRecord], StreamPosition]:
        return self.read(key, start_seq, limit, max_bytes), self.tail(key)

    def first_seq_at(self, key: str, timestamp: int) -> int:
        channel = self._channels.get(key)
        records = [] if channel is None else channel.records
        return next((r.seq_num for r in records if r.timestamp >= timestamp), self.tail(key).seq_num)

    def trim(self, key: str, before_seq: int) -> None:
        channel = self._channels.get(key)
        if channel is not None:
            channel.records = [record for record in channel.records if record.seq_num >= before_seq]
