"""Channel reads on SQLite and PostgreSQL: the tail read with the records, and records pages in batches."""

import pytest
import sqlalchemy as sa

from session_core.channels.records import NewRecord, StreamPosition
from session_core.db.engine import make_engine
from session_core.db.tables import metadata
from session_core.db.uow import UnitOfWork
from session_core.services.channels import read_batch, read_page

NOW = 1_800_000_000_000


def fill(engine, key, bodies):
    with UnitOfWork(engine) as uow:
        uow.channels.append(
            key, [NewRecord(body, [["h", "v"]] if body == "control" else []) for body in bodies], now_ms=NOW
        )
        uow.commit()


def reader(engine):
    return UnitOfWork(engine, read_only=True)


def test_a_batch_carries_the_records_and_the_tail(engine, key):
    fill(engine, key, ["a", "control", "c"])

    batch = read_batch(reader(engine), key, 1, 10)

    assert [(r.seq_num, r.body, r.headers) for r in batch.records] == [
        (1, "control", [["h", "v"]]),
        (2, "c", []),
    ]
    assert batch.tail == StreamPosition(3, NOW)


def test_a_batch_past_the_end_or_of_a_new_channel_is_empty_with_the_tail(engine, key):
    fill(engine, key, ["a"])

    assert read_batch(reader(engine), key, 5, 10).records == []
    assert read_batch(reader(engine), key, 5, 10).tail == StreamPosition(1, NOW)
    assert read_batch(reader(engine), key + "-new", 0, 10).tail == StreamPosition(0, 0)


def test_a_page_reads_up_to_its_record_bound(engine, key):
    fill(engine, key, [str(n) for n in range(25)])

    assert [r.seq_num for r in read_page(reader(engine), key, 3, 100, 10_000)] == list(range(3, 25))
    assert [r.seq_num for r in read_page(reader(engine), key, 0, 10, 10_000)] == list(range(10))


def test_a_page_stops_at_the_record_that_reaches_its_byte_bound(engine, key):
    """The bound counts stored bytes (UTF-8 bodies and header JSON) in the database, so a page
    holds at most the bound plus one record."""
    fill(engine, key, ["x" * 10] * 20)

    assert len(read_page(reader(engine), key, 0, 100, 35)) == 4
    assert len(read_page(reader(engine), key, 0, 100, 40)) == 4
    assert len(read_page(reader(engine), key, 0, 100, 45)) == 5
    assert len(read_page(reader(engine), key, 0, 100, 0)) == 1  # a read always makes progress
    fill(engine, key + "2", ["é" * 10] * 4)  # 20 bytes each
    assert len(read_page(reader(engine), key + "2", 0, 100, 30)) == 2


def plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


@pytest.mark.postgres
def test_a_batch_fetches_no_more_rows_than_it_returns_without_statistics(make_pg_database, key):
    """A never-analyzed table makes PostgreSQL guess a channel is tiny: a read bounded only by LIMIT
    was then planned as a scan of the channel's whole remainder plus a sort, once per batch."""
    engine = make_engine(make_pg_database())
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE channel_records SET (autovacuum_enabled = false)")
    fill(engine, key, [str(n) for n in range(3000)])
    sent = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2:4]))

    records = read_batch(reader(engine), key, 100, 100).records
    statement, parameters = sent[-1]
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters).scalar()

    engine.dispose()
    assert [r.seq_num for r in records] == list(range(100, 200))
    assert max(node["Actual Rows"] for node in plan_nodes(plan[0]["Plan"])) <= 101
