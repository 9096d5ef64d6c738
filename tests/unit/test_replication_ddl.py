"""sessions_v1 DDL per server version, and CLICKHOUSE_URL parsing."""

import re

import pytest

from session_core.replication.ddl import create_table_sql, features_for_version
from session_core.replication.rows import COLUMNS
from session_core.replication.target import parse_clickhouse_url


def declared_columns(sql: str) -> tuple[str, ...]:
    body = sql[sql.index("(") + 1 : sql.index("\n)")]
    return tuple(
        line.split()[0] for line in body.strip().splitlines() if not line.strip().startswith("INDEX")
    )


def test_clickhouse_18_16_gets_the_baseline_subset():
    sql = create_table_sql("sessions.sessions_v1", features_for_version("18.16.1"))

    assert "ENGINE = ReplacingMergeTree(_version)\n" in sql
    assert "DateTime64" not in sql and "LowCardinality" not in sql and "INDEX" not in sql
    assert "created_at DateTime('UTC')" in sql
    assert "PARTITION BY toYYYYMM(created_at)" in sql
    assert "ORDER BY (organization_id, project_id, environment_id, created_at, session_id)" in sql


def test_a_current_server_gets_datetime64_the_is_deleted_engine_and_a_tags_index():
    sql = create_table_sql("sessions.sessions_v1", features_for_version("24.8.4.13"))

    assert "ENGINE = ReplacingMergeTree(_version, _is_deleted)" in sql
    assert "created_at DateTime64(3, 'UTC')" in sql
    assert "closed_at Nullable(DateTime64(3, 'UTC'))" in sql
    assert "type LowCardinality(String)" in sql
    assert re.search(r"INDEX idx_tags tags TYPE tokenbf_v1\(.*\) GRANULARITY \d", sql)


@pytest.mark.parametrize("version", ["18.16.1", "20.3.1", "23.1.2", "26.9.2.1"])
def test_every_shape_declares_exactly_the_columns_the_replicator_writes(version):
    sql = create_table_sql("db.sessions_v1", features_for_version(version))

    assert declared_columns(sql) == COLUMNS
    assert sql.startswith("CREATE TABLE IF NOT EXISTS db.sessions_v1 (")


@pytest.mark.parametrize(
    ("version", "datetime64", "is_deleted", "index"),
    [("18.16.1", False, False, False), ("20.1.2", True, False, False), ("23.1.1", True, False, True)]
    + [("23.2.1", True, True, True)],
)
def test_features_switch_on_at_the_versions_that_introduced_them(version, datetime64, is_deleted, index):
    features = features_for_version(version)

    assert (features.datetime64, features.is_deleted_engine, features.tags_skip_index) == (
        datetime64,
        is_deleted,
        index,
    )


def test_an_unrecognised_version_string_is_an_error():
    with pytest.raises(ValueError):
        features_for_version("unknown")


def test_the_url_path_names_the_database_and_defaults_to_sessions():
    named = parse_clickhouse_url("clickhouse://user:secret@ch.internal:9440/analytics?secure=1")
    default = parse_clickhouse_url("clickhouse://127.0.0.1:19000")

    assert (named.host, named.database, named.table) == ("ch.internal", "analytics", "analytics.sessions_v1")
    assert named.options["user"] == "user" and named.options["password"] == "secret"
    assert named.options["secure"] is True
    assert "secret" not in named.address
    assert (default.database, default.address) == ("sessions", "127.0.0.1:19000")
    assert "database" not in default.options


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8123", "clickhouse:///db", "clickhouse://h:9000/bad-name", "clickhouse://h/x;DROP"],
)
def test_unusable_urls_are_rejected_with_a_clear_message(url):
    with pytest.raises(ValueError, match="CLICKHOUSE_URL"):
        parse_clickhouse_url(url)
