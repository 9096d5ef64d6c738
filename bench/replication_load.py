"""Load the synthetic sessions into PostgreSQL (COPY) and ClickHouse (the replicator's own mapping).

Two ways into ClickHouse, both timed:

* ``direct``: each generated row goes through ``rows.to_clickhouse_row`` and ``ClickHouseSink`` as
  it is COPYed into PostgreSQL, so ClickHouse holds exactly what the replicator would write, without
  reading the table back. Fast, and the default.
* ``backfill``: PostgreSQL is loaded first, then ``python -m replicator`` starts on a fresh slot and
  its backfill copies the table (what a real first deployment does); the time is until its
  ``backfill done`` log line.
"""

from __future__ import annotations

import io
import json
import time
from contextlib import closing
from datetime import datetime
from itertools import islice
from typing import Any

import psycopg2

from bench.replication_data import Dataset, generate_rows
from session_core.replication.metrics import ReplicationMetrics
from session_core.replication.rows import to_clickhouse_row
from session_core.replication.sink import ClickHouseSink
from session_core.replication.target import parse_clickhouse_url

__all__ = ["load"]

CHUNK_ROWS = 100_000
# Any version works for rows nothing else will ever change; the backfill uses the slot's LSN.
DIRECT_VERSION = 1
_COPY_COLUMNS = (
    "id", "friendly_id", "external_id", "type", "task_identifier", "trigger_config", "tags",
    "metadata", "organization_id", "project_id", "environment_id", "environment_type",
    "current_run_id", "current_run_version", "closed_at", "closed_reason", "expires_at",
    "created_at", "updated_at",
)  # fmt: skip


def load(dataset: Dataset, dsn: str, clickhouse_url: str | None) -> dict[str, float]:
    """COPY the dataset into PostgreSQL and, with ``clickhouse_url``, insert it into ClickHouse too.

    Returns the seconds spent in each part (generation is counted in ``postgres_s``).
    """
    sink = None
    if clickhouse_url is not None:
        sink = ClickHouseSink(
            parse_clickhouse_url(clickhouse_url),
            ReplicationMetrics(),
            max_retries=3,
            base_delay_ms=100,
            max_delay_ms=2000,
        )
    timings = {"postgres_s": 0.0, "clickhouse_s": 0.0, "analyze_s": 0.0}
    rows = generate_rows(dataset)
    try:
        with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            while chunk := list(islice(rows, CHUNK_ROWS)):
                started = time.perf_counter()
                cur.copy_expert(f"COPY sessions ({', '.join(_COPY_COLUMNS)}) FROM STDIN", _copy_text(chunk))
                conn.commit()
                timings["postgres_s"] += time.perf_counter() - started
                if sink is not None:
                    started = time.perf_counter()
                    sink.insert(
                        [to_clickhouse_row(r, version=DIRECT_VERSION, is_deleted=False) for r in chunk]
                    )
                    timings["clickhouse_s"] += time.perf_counter() - started
            started = time.perf_counter()
            conn.autocommit = True
            cur.execute("VACUUM ANALYZE sessions")  # what autovacuum would have done by now
            timings["analyze_s"] = time.perf_counter() - started
    finally:
        if sink is not None:
            sink.close()
    return {key: round(value, 2) for key, value in timings.items()}


def _copy_text(chunk: list[dict[str, Any]]) -> io.StringIO:
    """COPY's text format; the generated values hold no tabs, newlines or backslashes."""
    out = io.StringIO()
    for row in chunk:
        out.write("\t".join(_copy_value(row[column]) for column in _COPY_COLUMNS))
        out.write("\n")
    out.seek(0)
    return out


def _copy_value(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(value, list):
        return "{" + ",".join(f'"{item}"' for item in value) + "}"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
