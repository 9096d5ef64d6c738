"""Create ClickHouse's ``sessions_v1`` table, idempotently, in SQL the connected server accepts.

The baseline statement is the subset ClickHouse 18.16 understands. ``SELECT version()`` switches
on what newer servers add: ``DateTime64(3)``, ``LowCardinality``, the ``is_deleted`` engine
parameter (merges drop tombstones) and a token bloom-filter index on tags. Both shapes have the
same columns, so the replicator and the list repository need no branches.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from clickhouse_driver import Client

from session_core.replication.rows import COLUMNS
from session_core.replication.target import TABLE, ClickHouseTarget, parse_clickhouse_url

__all__ = [
    "SchemaMismatch",
    "ServerFeatures",
    "apply_clickhouse_schema",
    "create_database_sql",
    "create_table_sql",
    "ensure_schema",
    "features_for_version",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerFeatures:
    version: str
    datetime64: bool
    low_cardinality: bool
    is_deleted_engine: bool
    tags_skip_index: bool


def _version_tuple(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"unrecognised ClickHouse version {version!r}")
    return int(match.group(1)), int(match.group(2))


def features_for_version(version: str) -> ServerFeatures:
    """Decide which optional DDL the server at ``version`` (as ``SELECT version()`` says) accepts."""
    current = _version_tuple(version)
    return ServerFeatures(
        version=version,
        datetime64=current >= (20, 1),
        # Needs a server-profile setting before 20.x; never set it from application SQL.
        low_cardinality=current >= (20, 1),
        is_deleted_engine=current >= (23, 2),
        tags_skip_index=current >= (23, 1),
    )


def create_database_sql(database: str) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {database}"


def create_table_sql(table: str, features: ServerFeatures) -> str:
    """Return the ``CREATE TABLE IF NOT EXISTS`` statement for ``table`` (``database.name``)."""
    moment = "DateTime64(3, 'UTC')" if features.datetime64 else "DateTime('UTC')"
    label = "LowCardinality(String)" if features.low_cardinality else "String"
    index = (
        ",\n    INDEX idx_tags tags TYPE tokenbf_v1(256, 2, 0) GRANULARITY 4"
        if features.tags_skip_index
        else ""
    )
    engine_args = "_version, _is_deleted" if features.is_deleted_engine else "_version"
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    environment_id String,
    organization_id String,
    project_id String,
    session_id String,
    environment_type {label},
    friendly_id String,
    external_id String DEFAULT '',
    type {label},
    task_identifier String DEFAULT '',
    tags Array(String),
    metadata String,
    closed_at Nullable({moment}),
    closed_reason String DEFAULT '',
    expires_at Nullable({moment}),
    created_at {moment},
    updated_at {moment},
    created_at_ms Int64,
    expires_at_ms Nullable(Int64),
    _version UInt64,
    _is_deleted UInt8 DEFAULT 0{index}
)
ENGINE = ReplacingMergeTree({engine_args})
PARTITION BY toYYYYMM(created_at)
ORDER BY (organization_id, project_id, environment_id, created_at, session_id)"""


class SchemaMismatch(RuntimeError):
    """``sessions_v1`` exists but lacks columns this version writes; inserts would fail forever."""


def ensure_schema(client: Client, target: ClickHouseTarget) -> ServerFeatures:
    """Create the database and ``sessions_v1`` if missing; running it again changes nothing.

    :raise SchemaMismatch: when an existing table is missing columns of ``rows.COLUMNS``.
    """
    [(version,)] = client.execute("SELECT version()")
    features = features_for_version(version)
    client.execute(create_database_sql(target.database))
    client.execute(create_table_sql(target.table, features))
    existing = {
        name
        for (name,) in client.execute(
            "SELECT name FROM system.columns WHERE database = %(database)s AND table = %(table)s",
            {"database": target.database, "table": TABLE},
        )
    }
    missing = [column for column in COLUMNS if column not in existing]
    if missing:
        raise SchemaMismatch(
            f"{target.table} lacks columns {', '.join(missing)}: drop it, drop the replication slot"
            " (the replicator then copies every session again) and run `sessions migrate`"
        )
    return features


def apply_clickhouse_schema(clickhouse_url: str) -> ServerFeatures:
    """Apply the ClickHouse schema for ``sessions migrate``; idempotent."""
    target = parse_clickhouse_url(clickhouse_url)
    client = target.connect()
    try:
        features = ensure_schema(client, target)
    finally:
        client.disconnect()
    logger.info("clickhouse schema applied table=%s server_version=%s", target.table, features.version)
    return features
