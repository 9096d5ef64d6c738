"""S2's rules for streams and records: session channels' stream names, records as bytes, metering.

Pure rules behind the S2-compatible endpoint (``services/s2_streams.py``) and its wire codecs: the
name ``sessions/{key}/{io}`` a session channel goes by (as ``PUT`` hands it out, and as Durable
Streams address it), how a record's bytes become stored text and back, how S2 meters a record, and
the limits of one append batch and one read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from session_core.channels.records import NewRecord
from session_core.errors import InvalidInput, PayloadTooLarge
from session_core.models import IOS, ChannelRecord, Io

#: What every session channel's stream name starts with (``stream_name``).
SESSIONS_PREFIX = "sessions/"
TRIM_COMMAND = ["", "trim"]
#: S2's limits on one append batch, and ours on its headers (control records carry a few each).
MAX_BATCH_RECORDS = 1000
MAX_BATCH_HEADERS = 10_000
MAX_BATCH_METERED_BYTES = 1024 * 1024


def session_channel_of(name: str) -> tuple[str, Io] | None:
    """The session reference and channel a stream name ``sessions/{ref}/{io}`` names (the inverse of
    ``stream_name``); None for a stream that is no session's channel."""
    if not name.startswith(SESSIONS_PREFIX):
        return None
    ref, _, io = name[len(SESSIONS_PREFIX) :].rpartition("/")
    if not ref or io not in IOS:
        return None
    return ref, io


@dataclass(frozen=True)
class ReadLimits:
    """Where a read stops, as S2's ``count``, ``bytes`` and ``until`` (exclusive timestamp) say."""

    count: int | None = None
    bytes: int | None = None
    until: int | None = None


@dataclass
class BatchBudget:
    """Counts a batch while it is decoded and refuses it the moment it passes a limit.

    A decoder calls ``add_record`` before decoding a record and ``add_header`` / ``add_body`` as
    it reads them, so a hostile body (200,000 empty records, a record of a million empty headers)
    costs at most a limit's worth of work before its 4xx, not the whole body's.
    """

    max_records: int = MAX_BATCH_RECORDS
    max_headers: int = MAX_BATCH_HEADERS
    max_metered_bytes: int = MAX_BATCH_METERED_BYTES
    records: int = 0
    headers: int = 0
    metered_bytes: int = 0

    def add_record(self) -> None:
        """:raise InvalidInput: past ``max_records`` records."""
        self.records += 1
        if self.records > self.max_records:
            raise InvalidInput(f"A batch holds 1 to {self.max_records} records")
        self._meter(8)

    def add_header(self, name_bytes: int, value_bytes: int) -> None:
        """:raise InvalidInput: past ``max_headers`` headers in the batch."""
        self.headers += 1
        if self.headers > self.max_headers:
            raise InvalidInput(f"A batch holds at most {self.max_headers} headers")
        self._meter(2 + name_bytes + value_bytes)

    def add_body(self, body_bytes: int) -> None:
        self._meter(body_bytes)

    def _meter(self, size: int) -> None:
        self.metered_bytes += size
        if self.metered_bytes > self.max_metered_bytes:
            raise PayloadTooLarge("Batch is over 1 MiB of metered bytes")


def stored_record(headers: list[tuple[bytes, bytes]], body: bytes, timestamp: int | None) -> NewRecord:
    """Turn an S2 record given as bytes into what the store keeps: UTF-8 text.

    A trim command's body, an 8-byte big-endian seq_num, is kept as its decimal digits
    (``body_bytes`` turns it back).

    :raise InvalidInput: a header or body that is not UTF-8, or a malformed trim command.
    """
    try:
        text_headers = [[name.decode("utf-8"), value.decode("utf-8")] for name, value in headers]
    except UnicodeDecodeError:
        raise InvalidInput("Header names and values must be UTF-8 text") from None
    if text_headers == [TRIM_COMMAND]:
        if len(body) != 8:
            raise InvalidInput("A trim command's body must be an 8-byte seq_num")
        return NewRecord(str(int.from_bytes(body, "big")), text_headers, timestamp)
    try:
        return NewRecord(body.decode("utf-8"), text_headers, timestamp)
    except UnicodeDecodeError:
        raise InvalidInput("Record bodies must be UTF-8 text; binary bodies are not supported") from None


def body_bytes(record: ChannelRecord) -> bytes:
    """A record's body as S2 hands out bytes; a trim command's seq_num is 8 big-endian bytes again."""
    if record.headers == [TRIM_COMMAND] and record.body.isdigit():
        return int(record.body).to_bytes(8, "big")
    return record.body.encode()


def trim_point(records: Sequence[NewRecord], first_seq: int) -> int | None:
    """Where the batch's trim commands trim to; never past a command itself, which stays readable."""
    points = [
        min(int(record.body), first_seq + offset)
        for offset, record in enumerate(records)
        if record.headers == [TRIM_COMMAND]
    ]
    return max(points) if points else None


def metered_bytes(record: ChannelRecord) -> int:
    """A record's size as S2 meters it: ``8 + 2·headers + Σ header bytes + body bytes``."""
    header_bytes = sum(len(name.encode()) + len(value.encode()) for name, value in record.headers)
    return 8 + 2 * len(record.headers) + header_bytes + len(record.body.encode())


def clip_records(
    records: list[ChannelRecord], limits: ReadLimits, counted: int = 0, metered: int = 0
) -> tuple[list[ChannelRecord], bool]:
    """Keep the records within ``limits`` after ``counted`` records and ``metered`` bytes already read.

    Returns the kept records and whether the read is complete. A first record bigger than the byte
    limit is still returned, so a reader always makes progress.
    """
    kept: list[ChannelRecord] = []
    for record in records:
        if limits.until is not None and record.timestamp >= limits.until:
            return kept, True
        if limits.count is not None and counted + len(kept) >= limits.count:
            return kept, True
        if limits.bytes is not None:  # sizing every record costs live readers, who rarely set a limit
            size = metered_bytes(record)
            if metered + size > limits.bytes and (kept or counted):
                return kept, True
            metered += size
        kept.append(record)
    return kept, limits.count is not None and counted + len(kept) >= limits.count
