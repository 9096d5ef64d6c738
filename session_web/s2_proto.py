"""The few protobuf messages S2's client sends for appends that carry bytes records (a trim command).

``@s2-dev/streamstore`` switches a unary append to ``application/protobuf`` as soon as one record
is bytes, which ``AppendRecord.trim()`` always is. Only ``AppendInput`` is read and ``AppendAck``
written, so a hand-written codec of the wire format (varints and length-delimited fields) does::

    AppendInput    { repeated AppendRecord records = 1; optional uint64 match_seq_num = 2;
                     optional string fencing_token = 3; }
    AppendRecord   { optional uint64 timestamp = 1; repeated Header headers = 2; bytes body = 3; }
    Header         { bytes name = 1; bytes value = 2; }
    AppendAck      { StreamPosition start = 1; StreamPosition end = 2; StreamPosition tail = 3; }
    StreamPosition { uint64 seq_num = 1; uint64 timestamp = 2; }
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from session_core.channels.records import AppendAck, StreamPosition
from session_core.errors import InvalidInput
from session_core.s2 import BatchBudget

CONTENT_TYPE = "application/protobuf"
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


@dataclass
class ProtoRecord:
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    timestamp: int | None = None


@dataclass
class ProtoAppendInput:
    records: list[ProtoRecord] = field(default_factory=list)
    match_seq_num: int | None = None
    fencing_token: str | None = None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise InvalidInput("Malformed protobuf: bad varint")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field number, wire type, value)``; unknown wire types are skipped as protobuf says."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == _VARINT:
            value, pos = _varint(data, pos)
            yield number, wire_type, value
        elif wire_type == _LEN:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise InvalidInput("Malformed protobuf: truncated field")
            yield number, wire_type, data[pos : pos + length]
            pos += length
        elif wire_type in (_FIXED64, _FIXED32):
            pos += 8 if wire_type == _FIXED64 else 4
        else:
            raise InvalidInput("Malformed protobuf: unsupported wire type")


def _header(data: bytes) -> tuple[bytes, bytes]:
    name, value = b"", b""
    for number, _, item in _fields(data):
        if number == 1 and isinstance(item, bytes):
            name = item
        elif number == 2 and isinstance(item, bytes):
            value = item
    return name, value


def _record(data: bytes, budget: BatchBudget) -> ProtoRecord:
    record = ProtoRecord()
    for number, _, item in _fields(data):
        if number == 1 and isinstance(item, int):
            record.timestamp = item
        elif number == 2 and isinstance(item, bytes):
            name, value = _header(item)
            budget.add_header(len(name), len(value))
            record.headers.append((name, value))
        elif number == 3 and isinstance(item, bytes):
            budget.add_body(len(item))
            record.body = item
    return record


def decode_append_input(data: bytes, budget: BatchBudget | None = None) -> ProtoAppendInput:
    """Read an ``AppendInput``, stopping as soon as the batch passes ``budget``'s limits.

    :raise InvalidInput: bytes that are not one, too many records or headers.
    :raise PayloadTooLarge: more than 1 MiB of metered bytes.
    """
    budget = budget or BatchBudget()
    parsed = ProtoAppendInput()
    for number, _, item in _fields(data):
        if number == 1 and isinstance(item, bytes):
            budget.add_record()
            parsed.records.append(_record(item, budget))
        elif number == 2 and isinstance(item, int):
            parsed.match_seq_num = item
        elif number == 3 and isinstance(item, bytes):
            try:
                parsed.fencing_token = item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput("Malformed protobuf: fencing_token is not UTF-8") from None
    return parsed


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _position(number: int, position: StreamPosition) -> bytes:
    body = b"\x08" + _encode_varint(position.seq_num) + b"\x10" + _encode_varint(position.timestamp)
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(body)) + body


def encode_append_ack(ack: AppendAck) -> bytes:
    """Write an ``AppendAck``."""
    return _position(1, ack.start) + _position(2, ack.end) + _position(3, ack.tail)
