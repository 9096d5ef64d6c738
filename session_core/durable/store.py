"""Durable Streams metadata and producer state in SQL; the records themselves are channel records.

Every method runs on the caller's connection and transaction and never commits. ``lock=True``
reads take the stream's row lock on PostgreSQL (``FOR UPDATE``), which serializes every write to
one stream, producer checks included; SQLite's ``BEGIN IMMEDIATE`` already holds the write lock.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from session_core.db.tables import channel_parts, channel_records, channels, ds_producers, ds_streams
from session_core.durable.rules import DsStream, ProducerHeaders, ProducerState, StreamPathTaken


def _closed_by(text: str | None) -> ProducerHeaders | None:
    if text is None:
        return None
    producer_id, epoch, seq = json.loads(text)
    return ProducerHeaders(producer_id, epoch, seq)


def _stream(row: sa.Row[Any]) -> DsStream:
    values = dict(row._mapping)
    values["closed_by"] = _closed_by(values["closed_by"])
    values["closed"] = bool(values["closed"])
    values["soft_deleted"] = bool(values["soft_deleted"])
    return DsStream(**values)


def _row(stream: DsStream) -> dict[str, Any]:
    values = {column.name: getattr(stream, column.name) for column in ds_streams.columns}
    by = stream.closed_by
    values["closed_by"] = None if by is None else json.dumps([by.producer_id, by.epoch, by.seq])
    return values


# Statements are built once: building them per call cost more CPU than running them.
_BY_PATH = sa.select(ds_streams).where(
    ds_streams.c.environment_id == sa.bindparam("environment_id"), ds_streams.c.path == sa.bindparam("path")
)
_BY_ID = sa.select(ds_streams).where(ds_streams.c.id == sa.bindparam("stream_id"))
_LOCKED = {_BY_PATH: _BY_PATH.with_for_update(), _BY_ID: _BY_ID.with_for_update()}
_STATE_COLUMNS = [column.name for column in ds_streams.columns if column.name != "id"]
_SAVE = (
    ds_streams.update()
    .where(ds_streams.c.id == sa.bindparam("v_id"))
    .values({name: sa.bindparam(f"v_{name}") for name in _STATE_COLUMNS})
)
_TOUCH = (
    ds_streams.update()
    .where(ds_streams.c.id == sa.bindparam("stream_id"))
    .values(last_access_ms=sa.bindparam("now_ms"))
)
_PRODUCER = sa.select(ds_producers.c.epoch, ds_producers.c.last_seq).where(
    ds_producers.c.stream_id == sa.bindparam("stream_id"),
    ds_producers.c.producer_id == sa.bindparam("producer_id"),
)
_SAVE_PRODUCER = (
    ds_producers.update()
    .where(
        ds_producers.c.stream_id == sa.bindparam("v_stream_id"),
        ds_producers.c.producer_id == sa.bindparam("v_producer_id"),
    )
    .values(
        epoch=sa.bindparam("v_epoch"),
        last_seq=sa.bindparam("v_last_seq"),
        updated_at_ms=sa.bindparam("v_updated_at_ms"),
    )
)
_ADD_PRODUCER = ds_producers.insert()


class SqlDurableStreams:
    """Repository of ``ds_streams`` and ``ds_producers`` rows (``ports.DurableStreamRepository``)."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self._is_postgres = conn.dialect.name == "postgresql"

    def _one(self, statement: sa.Select[Any], parameters: dict[str, str], lock: bool) -> DsStream | None:
        if lock and self._is_postgres:
            statement = _LOCKED[statement]
        row = self._conn.execute(statement, parameters).first()
        return None if row is None else _stream(row)

    def get(self, environment_id: str, path: str, *, lock: bool = False) -> DsStream | None:
        return self._one(_BY_PATH, {"environment_id": environment_id, "path": path}, lock)

    def get_by_id(self, stream_id: str, *, lock: bool = False) -> DsStream | None:
        return self._one(_BY_ID, {"stream_id": stream_id}, lock)

    def insert(self, stream: DsStream, next_seq: int) -> None:
        """Add ``stream`` and its channel, whose first record will get seq_num ``next_seq``.

        :raise StreamPathTaken: a stream already holds the path (a concurrent create won).
        """
        try:
            self._conn.execute(ds_streams.insert().values(_row(stream)))
        except sa.exc.IntegrityError:
            raise StreamPathTaken() from None
        self._conn.execute(
            channels.insert().values(key=stream.key, next_seq=next_seq, last_timestamp=0, parts_swept_at=0)
        )

    def save(self, stream: DsStream) -> DsStream:
        """Write ``stream``'s state over its row, and return it."""
        self._conn.execute(_SAVE, {f"v_{name}": value for name, value in _row(stream).items()})
        return stream

    def touch(self, stream: DsStream, now_ms: int) -> DsStream:
        """Restart a sliding TTL; streams without one are not written to."""
        if stream.ttl_seconds is None or stream.last_access_ms >= now_ms:
            return stream
        self._conn.execute(_TOUCH, {"stream_id": stream.id, "now_ms": now_ms})
        return replace(stream, last_access_ms=now_ms)

    def remove(self, stream: DsStream) -> None:
        """Delete the stream's row, records, channel and producer state."""
        key = stream.key
        self._conn.execute(channel_records.delete().where(channel_records.c.channel_key == key))
        self._conn.execute(channel_parts.delete().where(channel_parts.c.channel_key == key))
        self._conn.execute(channels.delete().where(channels.c.key == key))
        self._conn.execute(ds_producers.delete().where(ds_producers.c.stream_id == stream.id))
        self._conn.execute(ds_streams.delete().where(ds_streams.c.id == stream.id))

    def producer(self, stream_id: str, producer_id: str) -> ProducerState | None:
        row = self._conn.execute(_PRODUCER, {"stream_id": stream_id, "producer_id": producer_id}).first()
        return None if row is None else ProducerState(row.epoch, row.last_seq)

    def save_producer(self, stream_id: str, producer_id: str, state: ProducerState, now_ms: int) -> None:
        """Record a producer's accepted (epoch, seq); the stream's row lock is held, so no one races."""
        values = {
            "stream_id": stream_id,
            "producer_id": producer_id,
            "epoch": state.epoch,
            "last_seq": state.last_seq,
            "updated_at_ms": now_ms,
        }
        updated = self._conn.execute(_SAVE_PRODUCER, {f"v_{name}": value for name, value in values.items()})
        if updated.rowcount == 0:
            self._conn.execute(_ADD_PRODUCER, values)
