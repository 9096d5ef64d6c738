"""Buffering decoded changes to their commit and turning them into ClickHouse rows."""

import logging
from datetime import UTC, datetime

import pytest

from session_core.replication.changes import ChangeAssembler
from session_core.replication.decode import DecodeError
from tests.unit import pgoutput

WHEN = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SESSIONS, OTHER = 16384, 16999


def feed_all(assembler, *payloads):
    return [assembler.feed(payload) for payload in payloads]


@pytest.fixture
def assembler():
    assembler = ChangeAssembler()
    assembler.feed(pgoutput.relation(SESSIONS, pgoutput.SESSIONS_COLUMNS))
    return assembler


def test_changes_are_held_until_commit_then_released_with_the_commit_end_lsn_as_version(assembler):
    results = feed_all(
        assembler,
        pgoutput.begin(0x200, WHEN),
        pgoutput.insert(SESSIONS, pgoutput.session_values(id="c1", tags='{a,"b c"}')),
        pgoutput.insert(SESSIONS, pgoutput.session_values(id="c2", metadata='{"k": "v"}')),
    )
    assert results == [None, None, None] and assembler.in_transaction

    committed = assembler.feed(pgoutput.commit(0x1F0, 0x200, WHEN))

    assert not assembler.in_transaction
    assert (committed.commit_lsn, committed.commit_time, committed.events) == (0x200, WHEN, {"insert": 2})
    assert [row["session_id"] for row in committed.rows] == ["c1", "c2"]
    assert {row["_version"] for row in committed.rows} == {0x200}
    assert committed.rows[0]["tags"] == ["a", "b c"]
    assert committed.rows[1]["metadata"] == '{"data":{"k":"v"}}'


def test_an_update_takes_unchanged_toast_values_from_the_old_row(assembler):
    old = pgoutput.session_values(metadata='{"big": "value"}')
    new = pgoutput.session_values(metadata=..., closed_at="2026-11-25 13:00:00", closed_reason="done")

    committed = feed_all(
        assembler,
        pgoutput.begin(0x300, WHEN),
        pgoutput.update(SESSIONS, new, old=old),
        pgoutput.commit(0x2F0, 0x300, WHEN),
    )[-1]

    [row] = committed.rows
    assert row["metadata"] == '{"data":{"big":"value"}}'
    assert (row["closed_reason"], row["_is_deleted"], committed.events) == ("done", 0, {"update": 1})


def test_a_delete_becomes_a_tombstone_built_from_the_old_row(assembler):
    committed = feed_all(
        assembler,
        pgoutput.begin(0x400, WHEN),
        pgoutput.delete(SESSIONS, pgoutput.session_values(id="gone")),
        pgoutput.commit(0x3F0, 0x400, WHEN),
    )[-1]

    [row] = committed.rows
    assert (row["session_id"], row["_is_deleted"], row["organization_id"]) == ("gone", 1, "org")


def test_other_tables_are_ignored_but_their_commit_is_still_reported_for_acknowledgement(assembler):
    assembler.feed(pgoutput.relation(OTHER, [("id", pgoutput.TEXT)], name="channels"))

    committed = feed_all(
        assembler,
        pgoutput.begin(0x500, WHEN),
        pgoutput.insert(OTHER, ["x"]),
        pgoutput.commit(0x4F0, 0x500, WHEN),
    )[-1]

    assert committed.rows == [] and committed.commit_lsn == 0x500


def test_a_relation_message_resent_after_ddl_replaces_the_cached_one(assembler):
    assembler.feed(pgoutput.relation(SESSIONS, [("id", pgoutput.TEXT)], name="renamed"))

    committed = feed_all(
        assembler,
        pgoutput.begin(0x600, WHEN),
        pgoutput.insert(SESSIONS, ["c1"]),
        pgoutput.commit(0x5F0, 0x600, WHEN),
    )[-1]

    assert committed.rows == []


def test_a_truncate_of_sessions_is_logged_not_replicated(assembler, caplog):
    with caplog.at_level(logging.WARNING):
        feed_all(assembler, pgoutput.begin(0x700, WHEN), pgoutput.truncate([SESSIONS]))

    assert "truncate of public.sessions not replicated" in caplog.text


def test_a_change_for_an_undescribed_relation_is_an_error(assembler):
    assembler.feed(pgoutput.begin(0x800, WHEN))

    with pytest.raises(DecodeError, match="undescribed relation"):
        assembler.feed(pgoutput.insert(4242, ["x"]))


def test_a_row_missing_a_required_column_is_an_error_naming_the_session(assembler):
    columns = [column for column in pgoutput.SESSIONS_COLUMNS if column[0] != "created_at"]
    assembler.feed(pgoutput.relation(SESSIONS, columns))
    values = [
        v
        for (name, _), v in zip(pgoutput.SESSIONS_COLUMNS, pgoutput.session_values(), strict=True)
        if name != "created_at"
    ]

    with pytest.raises(DecodeError, match="id=cabc"):
        feed_all(
            assembler,
            pgoutput.begin(0x900, WHEN),
            pgoutput.insert(SESSIONS, values),
            pgoutput.commit(0x8F0, 0x900, WHEN),
        )
