"""The rules of an append, the same on every backend: what may be stored, how records are
timestamped, and how a group of callers' appends maps onto one write (``GroupPlan``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from session_core.channels.records import (
    MAX_KEY_BYTES,
    Append,
    AppendAck,
    NewRecord,
    ReadBatch,
    StreamPosition,
)
from session_core.errors import InvalidInput
from session_core.models import ChannelRecord
from session_core.text import is_storable


def wanted_timestamps(records: Sequence[NewRecord], now_ms: int) -> list[int]:
    """Each record's timestamp before the channel's last one is known: the running maximum of the
    client timestamps (capped at arrival time) or arrival time.

    ``max(previous, wanted)`` is then the stored timestamp, which PostgreSQL computes inside the
    append statement, where ``previous`` is first read.
    """
    wanted, last = [], 0
    for record in records:
        last = max(last, now_ms if record.timestamp is None else min(record.timestamp, now_ms))
        wanted.append(last)
    return wanted


def assign_timestamps(records: Sequence[NewRecord], previous: int, now_ms: int) -> list[int]:
    """Timestamp records as S2's client-prefer mode does.

    A record keeps its client timestamp capped at arrival time (else gets arrival time), and is
    never stamped earlier than the record before it, so timestamps never decrease along a channel.
    """
    return [max(previous, wanted) for wanted in wanted_timestamps(records, now_ms)]


def is_storable_key(key: str) -> bool:
    """Whether every backend can hold (and so look up) channel key ``key``."""
    return len(key.encode("utf-8", "surrogatepass")) <= MAX_KEY_BYTES and is_storable(key)


def validate_append(key: str, append: Append) -> None:
    """Refuse an append every backend cannot store alike: no records, NUL, lone surrogates, huge keys.

    :raise InvalidInput: naming the first offending record, so the client gets a 4xx, never a 500.
    """
    if not is_storable_key(key):
        raise InvalidInput("Channel name is too long or holds characters that cannot be stored")
    if append.part_id is not None and not is_storable(append.part_id):
        raise InvalidInput("The part id holds a NUL character or an unpaired surrogate")
    records = append.records
    if not records:
        raise InvalidInput("An append needs at least one record")
    for index, record in enumerate(records):
        texts = [record.body, *(part for header in record.headers for part in header)]
        if not all(is_storable(text) for text in texts):
            raise InvalidInput(f"Record {index} holds a NUL character or an unpaired surrogate")


@dataclass
class GroupPlan:
    """Which appends of a group write, at which offset from the tail, and which repeat a part id.

    ``seen`` maps an append to the ``(seq_num, created_at)`` its part id got on the channel,
    ``repeats`` to the earlier append of the group with the same part id.
    """

    records: list[NewRecord] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)
    seen: dict[int, tuple[int, int]] = field(default_factory=dict)
    repeats: dict[int, int] = field(default_factory=dict)
    new_parts: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def of(cls, appends: Sequence[Append], seen_parts: Mapping[str, tuple[int, int]]) -> GroupPlan:
        plan = cls()
        first_of_part: dict[str, int] = {}
        for index, item in enumerate(appends):
            part = item.part_id
            if part is not None:
                if part in seen_parts:
                    plan.seen[index] = seen_parts[part]
                    continue
                if part in first_of_part:
                    plan.repeats[index] = first_of_part[part]
                    continue
                first_of_part[part] = index
                plan.new_parts.append((part, len(plan.records)))
            plan.offsets[index] = len(plan.records)
            plan.records.extend(item.records)
        return plan

    def acks(
        self,
        appends: Sequence[Append],
        start_seq: int,
        stamps: Sequence[int],
        tail: StreamPosition,
        now_ms: int,
    ) -> list[AppendAck]:
        """Each append's ack, once the written records start at ``start_seq`` with ``stamps``."""
        acks: dict[int, AppendAck] = {}
        for index, offset in self.offsets.items():
            last = offset + len(appends[index].records)
            start = StreamPosition(start_seq + offset, stamps[offset])
            acks[index] = AppendAck(start, StreamPosition(start_seq + last, stamps[last - 1]), tail)
        repeated = {index: (acks[first].start.seq_num, now_ms) for index, first in self.repeats.items()}
        for index, (seq_num, created_at) in (self.seen | repeated).items():
            start = StreamPosition(seq_num, created_at)
            end = StreamPosition(seq_num + len(appends[index].records), created_at)
            acks[index] = AppendAck(start, end, tail, is_duplicate=True)
        return [acks[index] for index in range(len(appends))]


def written_batch(
    start_seq: int, records: Sequence[NewRecord], stamps: Sequence[int], tail: StreamPosition
) -> ReadBatch:
    """The records an append wrote from ``start_seq`` with ``stamps``, as a read will return them."""
    written = [
        ChannelRecord(start_seq + offset, stamp, record.body, record.headers)
        for offset, (record, stamp) in enumerate(zip(records, stamps, strict=True))
    ]
    return ReadBatch(written, tail)
