"""Copy the sessions that existed before the slot into ClickHouse: once, and safely repeatable.

A new slot streams only changes committed after it was created, so rows written before it would
never reach ClickHouse. The backfill reads the table as it is now and writes every row with
``_version`` = the slot's confirmed LSN. That is below the version of any change the slot has yet to
deliver and at or above every change already acknowledged, so whatever the stream brings later
wins, and running the backfill twice (after a crash in the middle) changes nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from contextlib import closing

import psycopg2.extras

from replicator.postgres import TABLE_NAME, TABLE_SCHEMA, connect
from session_core.replication.decode import format_lsn
from session_core.replication.rows import to_clickhouse_row
from session_core.replication.sink import ClickHouseSink, TransientInsertError, backoff_delay

logger = logging.getLogger(__name__)

BATCH_ROWS = 5000
_PROGRESS_EVERY = 100_000


def backfill(
    dsn: str,
    sink: ClickHouseSink,
    version: int,
    *,
    base_delay_ms: int,
    max_delay_ms: int,
    stopping: Callable[[], bool],
    wait: Callable[[float], None],
    batch_rows: int = BATCH_ROWS,
) -> bool:
    """Write every current row at ``version``; False when asked to stop before the end.

    The table is read through a server-side cursor, so memory stays flat at any size. A batch
    ClickHouse refuses for now is retried with capped backoff until it lands.
    :raise PermanentInsertError: ClickHouse refused a batch for good.
    """
    logger.info("backfill started version=%s", format_lsn(version))
    copied = 0
    with closing(connect(dsn)) as conn:
        conn.autocommit = False  # a named cursor lives in a transaction
        with conn.cursor("sessions_backfill", cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
            cursor.execute(f"SELECT * FROM {TABLE_SCHEMA}.{TABLE_NAME}")
            while batch := cursor.fetchmany(batch_rows):
                rows = [to_clickhouse_row(row, version=version, is_deleted=False) for row in batch]
                if not _insert(sink, rows, base_delay_ms, max_delay_ms, stopping, wait):
                    logger.info("backfill interrupted rows=%d; it starts again with the replicator", copied)
                    return False
                if (copied + len(rows)) // _PROGRESS_EVERY > copied // _PROGRESS_EVERY:
                    logger.info("backfill progress rows=%d", copied + len(rows))
                copied += len(rows)
    logger.info("backfill done rows=%d", copied)
    return True


def _insert(
    sink: ClickHouseSink,
    rows: list[dict[str, object]],
    base_delay_ms: int,
    max_delay_ms: int,
    stopping: Callable[[], bool],
    wait: Callable[[float], None],
) -> bool:
    failures = 0
    while not stopping():
        try:
            sink.insert(rows)
            return True
        except TransientInsertError as exc:
            failures += 1
            delay = backoff_delay(failures, base_delay_ms, max_delay_ms, random.random())
            logger.warning(
                "backfill batch kept for retry rows=%d retry_in_ms=%d error=%s", len(rows), delay * 1000, exc
            )
            wait(delay)
    return False
