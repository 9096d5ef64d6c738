"""Decode pgoutput (protocol version 1) messages into typed values, and tuples into Python rows.

Pure: bytes in, dataclasses out. Column values arrive in PostgreSQL's text output format and are
converted by type oid; the replication connection pins ``DateStyle=ISO`` so timestamps parse.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "UNCHANGED_TOAST",
    "Begin",
    "Column",
    "Commit",
    "DecodeError",
    "Delete",
    "Ignored",
    "Insert",
    "Message",
    "Relation",
    "Truncate",
    "TupleValue",
    "Update",
    "decode_message",
    "decode_row",
    "format_lsn",
    "parse_lsn",
    "parse_text_array",
    "parse_value",
]

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class DecodeError(ValueError):
    """A payload or value is not what pgoutput v1 produces; replicating past it would lose data."""


class _Unchanged(enum.Enum):
    TOAST = "u"


UNCHANGED_TOAST = _Unchanged.TOAST
"""An UPDATE's new tuple omits an unchanged out-of-line (TOAST) value; it must come from the old one."""

TupleValue = str | bytes | None | _Unchanged


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    """Describes a table; PostgreSQL re-sends it after DDL, so callers overwrite by ``relid``."""

    relid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True)
class Insert:
    relid: int
    new: tuple[TupleValue, ...]


@dataclass(frozen=True)
class Update:
    """``old`` is the whole old row under REPLICA IDENTITY FULL, key columns only on a key change."""

    relid: int
    old: tuple[TupleValue, ...] | None
    new: tuple[TupleValue, ...]


@dataclass(frozen=True)
class Delete:
    relid: int
    old: tuple[TupleValue, ...]


@dataclass(frozen=True)
class Truncate:
    relids: tuple[int, ...]
    options: int


@dataclass(frozen=True)
class Ignored:
    """A message the replicator has no use for: Type, Origin or a logical decoding Message."""

    kind: str


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Ignored


def format_lsn(lsn: int) -> str:
    """Render an LSN the way PostgreSQL prints it (``16/B374D848``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """Turn ``HI/LO`` into the 64-bit integer used as ClickHouse's ``_version``."""
    high, sep, low = text.partition("/")
    if not sep:
        raise DecodeError(f"not an LSN: {text!r}")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise DecodeError(f"not an LSN: {text!r}") from None


class _Reader:
    def __init__(self, payload: bytes) -> None:
        self._buf = memoryview(payload)
        self._pos = 0

    def _unpack(self, fmt: str, size: int) -> int:
        (value,) = struct.unpack_from(fmt, self._buf, self._pos)
        self._pos += size
        return int(value)

    def char(self) -> str:
        return chr(self._unpack("!B", 1))

    def u8(self) -> int:
        return self._unpack("!B", 1)

    def i16(self) -> int:
        return self._unpack("!h", 2)

    def i32(self) -> int:
        return self._unpack("!i", 4)

    def u32(self) -> int:
        return self._unpack("!I", 4)

    def i64(self) -> int:
        return self._unpack("!q", 8)

    def u64(self) -> int:
        return self._unpack("!Q", 8)

    def timestamp(self) -> datetime:
        return PG_EPOCH + timedelta(microseconds=self.i64())

    def cstr(self) -> str:
        end = bytes(self._buf[self._pos :]).find(b"\0")
        if end < 0:
            raise DecodeError("unterminated string")
        value = bytes(self._buf[self._pos : self._pos + end]).decode()
        self._pos += end + 1
        return value

    def raw(self, size: int) -> bytes:
        if size < 0 or self._pos + size > len(self._buf):
            raise DecodeError("value runs past the end of the message")
        value = bytes(self._buf[self._pos : self._pos + size])
        self._pos += size
        return value

    def tuple(self) -> tuple[TupleValue, ...]:
        values: list[TupleValue] = []
        for _ in range(self.i16()):
            kind = self.char()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED_TOAST)
            elif kind == "t":
                values.append(self.raw(self.i32()).decode())
            elif kind == "b":
                values.append(self.raw(self.i32()))
            else:
                raise DecodeError(f"unknown tuple value kind {kind!r}")
        return tuple(values)


def decode_message(payload: bytes) -> Message:
    """Decode one pgoutput v1 message; raise ``DecodeError`` on anything malformed."""
    try:
        return _decode(_Reader(payload))
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise DecodeError(f"malformed pgoutput message: {exc}") from None


def _decode(r: _Reader) -> Message:
    kind = r.char()
    if kind == "B":
        return Begin(final_lsn=r.u64(), commit_time=r.timestamp(), xid=r.u32())
    if kind == "C":
        r.u8()  # flags: unused in v1
        return Commit(commit_lsn=r.u64(), end_lsn=r.u64(), commit_time=r.timestamp())
    if kind == "R":
        relid, namespace, name, identity = r.u32(), r.cstr(), r.cstr(), r.char()
        columns = []
        for _ in range(r.i16()):
            flags = r.u8()
            columns.append(Column(name=r.cstr(), type_oid=r.u32(), is_key=bool(flags & 1)))
            r.i32()  # typmod
        return Relation(relid, namespace, name, identity, tuple(columns))
    if kind == "I":
        relid = r.u32()
        _expect(r.char(), "N")
        return Insert(relid, r.tuple())
    if kind == "U":
        relid = r.u32()
        marker = r.char()
        old = None
        if marker in ("K", "O"):
            old = r.tuple()
            marker = r.char()
        _expect(marker, "N")
        return Update(relid, old, r.tuple())
    if kind == "D":
        relid = r.u32()
        if r.char() not in ("K", "O"):
            raise DecodeError("delete without an old tuple")
        return Delete(relid, r.tuple())
    if kind == "T":
        count, options = r.i32(), r.u8()
        return Truncate(tuple(r.u32() for _ in range(count)), options)
    if kind in ("Y", "O", "M"):
        return Ignored({"Y": "type", "O": "origin", "M": "message"}[kind])
    raise DecodeError(f"unknown pgoutput message type {kind!r}")


def _expect(marker: str, wanted: str) -> None:
    if marker != wanted:
        raise DecodeError(f"expected tuple marker {wanted!r}, got {marker!r}")


def decode_row(
    relation: Relation,
    values: Sequence[TupleValue],
    old: Sequence[TupleValue] | None = None,
) -> dict[str, object]:
    """Map a tuple onto the relation's column names, converting each value by its type oid.

    An unchanged TOAST value in ``values`` is taken from ``old`` (present under REPLICA IDENTITY
    FULL); if the old tuple cannot supply it the row is incomplete and ``DecodeError`` is raised.
    """
    if len(values) != len(relation.columns):
        raise DecodeError(
            f"tuple has {len(values)} values, relation {relation.name} has {len(relation.columns)} columns"
        )
    row: dict[str, object] = {}
    for i, column in enumerate(relation.columns):
        value = values[i]
        if value is UNCHANGED_TOAST:
            value = old[i] if old is not None and i < len(old) else UNCHANGED_TOAST
            if value is UNCHANGED_TOAST:
                raise DecodeError(f"unchanged TOAST value for {column.name} and no old value to take")
        try:
            row[column.name] = parse_value(value, column.type_oid)
        except ValueError as exc:
            raise DecodeError(f"column {column.name}: {exc}") from None
    return row


_INT_OIDS = frozenset({20, 21, 23, 26})  # int8, int2, int4, oid
_TEXT_OIDS = frozenset({25, 1043, 19, 1042})  # text, varchar, name, bpchar
_TEXT_ARRAY_OIDS = frozenset({1009, 1015})  # text[], varchar[]
_JSON_OIDS = frozenset({114, 3802})  # json, jsonb
_TIMESTAMP, _TIMESTAMPTZ, _BOOL = 1114, 1184, 16


def parse_value(value: TupleValue, type_oid: int) -> object:
    """Convert one text-format value; types the sessions table does not use stay strings."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"expected a text-format value for type oid {type_oid}")
    if type_oid in _TEXT_OIDS:
        return value
    if type_oid in _INT_OIDS:
        return int(value)
    if type_oid == _BOOL:
        return value == "t"
    if type_oid in (_TIMESTAMP, _TIMESTAMPTZ):
        return _parse_timestamp(value)
    if type_oid in _TEXT_ARRAY_OIDS:
        return parse_text_array(value)
    if type_oid in _JSON_OIDS:
        return json.loads(value)
    return value


def _parse_timestamp(value: str) -> datetime:
    """``timestamp`` stays naive (the schema stores UTC); ``timestamptz`` comes back aware."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        # 'infinity', BC dates and years past 9999 have no Python datetime.
        raise DecodeError(f"timestamp out of range: {value!r}") from None


def parse_text_array(literal: str) -> list[str | None]:
    """Parse a one-dimensional PostgreSQL array literal such as ``{a,"b, c",NULL,"NULL"}``.

    Quoted elements may contain any character, with ``\\`` escaping; an unquoted ``NULL``
    (any case) is SQL NULL while a quoted one is the string. A leading dimension decoration
    (``[0:1]={...}``) is skipped.
    """
    text = literal
    if text.startswith("["):
        text = text[text.find("=") + 1 :]
    if len(text) < 2 or text[0] != "{" or text[-1] != "}":
        raise DecodeError(f"not an array literal: {literal!r}")
    if text == "{}":
        return []
    items: list[str | None] = []
    pos, end = 1, len(text) - 1
    while True:
        if pos >= end:
            raise DecodeError(f"missing array element in {literal!r}")
        if text[pos] == '"':
            item, pos = _quoted_element(text, pos + 1, end, literal)
            items.append(item)
        elif text[pos] == "{":
            raise DecodeError(f"multi-dimensional arrays are not supported: {literal!r}")
        else:
            stop = pos
            while stop < end and text[stop] != ",":
                stop += 1
            token = text[pos:stop]
            if not token or '"' in token or "\\" in token:
                raise DecodeError(f"malformed array element in {literal!r}")
            items.append(None if token.upper() == "NULL" else token)
            pos = stop
        if pos == end:
            return items
        if text[pos] != ",":
            raise DecodeError(f"expected ',' in {literal!r}")
        pos += 1


def _quoted_element(text: str, pos: int, end: int, literal: str) -> tuple[str, int]:
    chars: list[str] = []
    while pos < end:
        ch = text[pos]
        if ch == "\\":
            pos += 1
            if pos >= end:
                break
            chars.append(text[pos])
        elif ch == '"':
            return "".join(chars), pos + 1
        else:
            chars.append(ch)
        pos += 1
    raise DecodeError(f"unterminated quoted element in {literal!r}")
