"""Mapping a PostgreSQL sessions row to a ClickHouse sessions_v1 row (wire reference §8)."""

import json
from datetime import UTC, datetime, timedelta, timezone

from session_core.replication.rows import COLUMNS, to_clickhouse_row


def pg_row(**overrides):
    row = {
        "id": "cabc",
        "friendly_id": "session_cabc",
        "external_id": None,
        "type": "chat.agent",
        "task_identifier": "agent",
        "trigger_config": {"basePayload": {}},
        "tags": ["a", "b"],
        "metadata": None,
        "organization_id": "org",
        "project_id": "proj",
        "environment_id": "env",
        "environment_type": "PRODUCTION",
        "current_run_id": "crun",
        "current_run_version": 3,
        "closed_at": None,
        "closed_reason": None,
        "expires_at": None,
        "created_at": datetime(2026, 11, 25, 12, 0, 0, 123456),
        "updated_at": datetime(2026, 11, 25, 12, 0, 1, 999999),
    }
    row.update(overrides)
    return row


def test_every_column_is_mapped_as_section_8_says():
    row = to_clickhouse_row(pg_row(), version=0x16_B374D848, is_deleted=False)

    assert tuple(row) == COLUMNS
    assert row == {
        "environment_id": "env",
        "organization_id": "org",
        "project_id": "proj",
        "session_id": "cabc",
        "environment_type": "PRODUCTION",
        "friendly_id": "session_cabc",
        "external_id": "",
        "type": "chat.agent",
        "task_identifier": "agent",
        "tags": ["a", "b"],
        "metadata": '{"data":null}',
        "closed_at": None,
        "closed_reason": "",
        "expires_at": None,
        "created_at": datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC),
        "updated_at": datetime(2026, 11, 25, 12, 0, 1, 999000, tzinfo=UTC),
        "created_at_ms": 1795608000123,
        "expires_at_ms": None,
        "_version": 0x16_B374D848,
        "_is_deleted": 0,
    }


def test_trigger_config_and_the_current_run_are_not_replicated():
    row = to_clickhouse_row(pg_row(), version=1, is_deleted=False)

    assert "trigger_config" not in row and "current_run_id" not in row and "current_run_version" not in row


def test_a_closed_session_carries_its_reason_and_close_time():
    closed = datetime(2026, 11, 25, 13, 0, 0, 5000)

    row = to_clickhouse_row(pg_row(closed_at=closed, closed_reason="done"), version=2, is_deleted=False)

    assert row["closed_at"] == closed.replace(tzinfo=UTC)
    assert row["closed_reason"] == "done"


def test_metadata_is_wrapped_in_a_data_object_and_keeps_unicode_as_is():
    metadata = {"greeting": "héllo 😀 \u202e", "n": [1, 2.5, None, True]}

    row = to_clickhouse_row(pg_row(metadata=metadata, external_id="ext-1"), version=1, is_deleted=False)

    assert json.loads(row["metadata"]) == {"data": metadata}
    assert "😀" in row["metadata"]
    assert row["external_id"] == "ext-1"


def test_a_delete_becomes_a_tombstone_with_the_old_row_values():
    row = to_clickhouse_row(pg_row(), version=9, is_deleted=True)

    assert row["_is_deleted"] == 1
    assert row["session_id"] == "cabc" and row["created_at_ms"] == 1795608000123


def test_expiry_keeps_exact_milliseconds_while_the_datetime_is_clamped_to_what_clickhouse_stores():
    far = datetime(2300, 1, 1)

    row = to_clickhouse_row(pg_row(expires_at=far), version=1, is_deleted=False)

    assert row["expires_at"] == datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)
    assert row["expires_at_ms"] == (far.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )


def test_aware_timestamps_are_converted_to_utc():
    local = datetime(2026, 11, 25, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))

    row = to_clickhouse_row(pg_row(created_at=local), version=1, is_deleted=False)

    assert row["created_at"] == datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def test_null_tag_elements_are_dropped_because_clickhouse_arrays_cannot_hold_them():
    row = to_clickhouse_row(pg_row(tags=["a", None, "NULL"]), version=1, is_deleted=False)

    assert row["tags"] == ["a", "NULL"]
