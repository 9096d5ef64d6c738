"""Applying the sessions_v1 schema to the real ClickHouse server."""

import uuid

import pytest
from clickhouse_driver import Client

from session_core.replication.ddl import SchemaMismatch, apply_clickhouse_schema
from session_core.replication.rows import COLUMNS

pytestmark = pytest.mark.clickhouse


@pytest.fixture
def database(clickhouse):
    name = f"ddl_{uuid.uuid4().hex[:10]}"
    client = Client("127.0.0.1", port=clickhouse.port)
    try:
        yield name, client
    finally:
        client.execute(f"DROP DATABASE IF EXISTS {name}")
        client.disconnect()


def test_applying_the_schema_twice_is_harmless(clickhouse, database):
    name, client = database
    url = f"clickhouse://127.0.0.1:{clickhouse.port}/{name}"

    first = apply_clickhouse_schema(url)
    second = apply_clickhouse_schema(url)

    assert first == second
    described = client.execute(f"DESCRIBE TABLE {name}.sessions_v1")
    assert tuple(column[0] for column in described) == COLUMNS
    [(engine,)] = client.execute(
        "SELECT engine FROM system.tables WHERE database = %(d)s AND name = 'sessions_v1'", {"d": name}
    )
    assert engine == "ReplacingMergeTree"


def test_an_older_table_missing_columns_is_reported_with_the_fix(clickhouse, database):
    name, client = database
    client.execute(f"CREATE DATABASE {name}")
    client.execute(
        f"CREATE TABLE {name}.sessions_v1 (session_id String, created_at DateTime, _version UInt64)"
        " ENGINE = ReplacingMergeTree(_version) ORDER BY (created_at, session_id)"
    )

    with pytest.raises(SchemaMismatch, match="lacks columns environment_id, .*sessions migrate"):
        apply_clickhouse_schema(f"clickhouse://127.0.0.1:{clickhouse.port}/{name}")
