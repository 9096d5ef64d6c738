"""Pending rows, acknowledgement bookkeeping and the flush scheduler (with a fake insert)."""

import threading
import time
from datetime import UTC, datetime

import pytest

from session_core.replication.metrics import ReplicationMetrics
from session_core.replication.pending import AckTracker, PendingRow, PendingRows
from session_core.replication.scheduler import FlushScheduler
from session_core.replication.sink import PermanentInsertError, TransientInsertError

WHEN = datetime(2026, 11, 25, tzinfo=UTC)


def entry(session_id, version, oldest=None, **row):
    return PendingRow(session_id, {"session_id": session_id, **row}, version, oldest or version, WHEN)


def ch_row(session_id, version, **extra):
    return {"session_id": session_id, "_version": version, **extra}


def test_a_newer_version_replaces_an_older_one_and_inherits_its_oldest_lsn():
    pending = PendingRows()

    pending.add(entry("a", 10, state="inserted"))
    pending.add(entry("a", 20, state="closed"))

    [row] = pending.take()
    assert (row.version, row.oldest_lsn, row.row["state"]) == (20, 10, "closed")


def test_an_older_version_never_replaces_a_newer_one():
    pending = PendingRows()

    pending.add(entry("a", 20, state="closed"))
    pending.add(entry("a", 10, state="inserted"))

    [row] = pending.take()
    assert (row.version, row.oldest_lsn, row.row["state"]) == (20, 10, "closed")


def test_within_one_transaction_the_later_change_wins():
    pending = PendingRows()

    pending.add(entry("a", 10, state="first"))
    pending.add(entry("a", 10, state="second"))

    assert [row.row["state"] for row in pending.take()] == ["second"]


def test_take_empties_the_set_and_returns_rows_oldest_first():
    pending = PendingRows()
    pending.add(entry("b", 30))
    pending.add(entry("a", 10))

    assert [row.session_id for row in pending.take()] == ["a", "b"]
    assert len(pending) == 0 and pending.oldest_lsn() is None


def test_ack_tracker_advances_only_past_commits_older_than_every_outstanding_row():
    acks = AckTracker()
    for lsn in (10, 20, 30):
        acks.committed(lsn)

    assert acks.advance(oldest_outstanding=10) is None
    assert acks.advance(oldest_outstanding=30) == 20
    assert acks.advance(oldest_outstanding=30) is None
    assert acks.advance(oldest_outstanding=None) == 30


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class RecordingInsert:
    """Stands in for ClickHouseSink.insert: records batches, fails or blocks on demand."""

    def __init__(self):
        self.batches = []
        self.failures = []
        self.gate = None

    def __call__(self, rows):
        if self.gate is not None:
            self.gate.wait(5)
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(rows)


@pytest.fixture
def make_scheduler():
    made = []

    def make(insert, clock=None, **options):
        settings = dict(batch_size=3, interval_ms=100, max_concurrency=1, base_delay_ms=10, max_delay_ms=50)
        settings.update(options)
        scheduler = FlushScheduler(insert, ReplicationMetrics(), clock=clock or time.monotonic, **settings)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close()


def test_nothing_is_flushed_before_the_batch_fills_or_the_interval_passes(make_scheduler):
    insert, clock = RecordingInsert(), FakeClock()
    scheduler = make_scheduler(insert, clock)
    scheduler.add([ch_row("a", 10)], 10, WHEN)

    scheduler.poll()

    assert scheduler.seconds_until_due() == pytest.approx(0.1)
    assert scheduler.outstanding() == 1 and scheduler.ackable_lsn() is None


def test_rows_are_flushed_once_the_interval_passes_and_their_lsn_becomes_ackable(make_scheduler):
    insert, clock = RecordingInsert(), FakeClock()
    scheduler = make_scheduler(insert, clock)
    scheduler.add([ch_row("a", 10)], 10, WHEN)
    scheduler.add([ch_row("b", 20)], 20, WHEN)

    clock.now += 0.1
    scheduler.poll()

    assert scheduler.drain(5)
    assert [[row["session_id"] for row in batch] for batch in insert.batches] == [["a", "b"]]
    assert scheduler.ackable_lsn() == 20


def test_a_full_batch_is_flushed_at_once(make_scheduler):
    insert = RecordingInsert()
    scheduler = make_scheduler(insert)

    scheduler.add([ch_row("a", 10), ch_row("b", 10), ch_row("c", 10)], 10, WHEN)
    scheduler.poll()

    assert scheduler.drain(5)
    assert len(insert.batches) == 1 and len(insert.batches[0]) == 3


def test_a_newer_version_of_a_row_replaces_the_pending_one_in_the_batch(make_scheduler):
    insert, clock = RecordingInsert(), FakeClock()
    scheduler = make_scheduler(insert, clock)

    scheduler.add([ch_row("a", 10, closed_reason="")], 10, WHEN)
    scheduler.add([ch_row("a", 20, closed_reason="done")], 20, WHEN)
    assert scheduler.drain(5)

    assert insert.batches == [[ch_row("a", 20, closed_reason="done")]]
    assert scheduler.ackable_lsn() == 20


def test_a_transient_failure_keeps_the_rows_and_holds_back_the_ack_until_they_land(make_scheduler):
    insert = RecordingInsert()
    insert.failures = [TransientInsertError("connection refused")]
    scheduler = make_scheduler(insert)
    scheduler.add([ch_row("a", 10)], 10, WHEN)

    scheduler.poll(drain=True)

    assert scheduler.drain(5)
    assert insert.batches == [[ch_row("a", 10)]]
    assert scheduler.ackable_lsn() == 10


def test_an_ack_never_passes_a_batch_still_in_flight_even_when_a_later_one_finished(make_scheduler):
    slow_gate = threading.Event()
    started = threading.Event()
    calls = []

    def insert(rows):
        calls.append(rows)
        if rows[0]["session_id"] == "a":
            started.set()
            slow_gate.wait(5)

    scheduler = make_scheduler(insert, max_concurrency=2)
    scheduler.add([ch_row("a", 10)], 10, WHEN)
    scheduler.poll(drain=True)
    assert started.wait(5)
    scheduler.add([ch_row("b", 20)], 20, WHEN)
    scheduler.poll(drain=True)
    for _ in range(500):
        if scheduler.outstanding() == 1:
            break
        threading.Event().wait(0.01)

    assert scheduler.ackable_lsn() is None
    slow_gate.set()
    assert scheduler.drain(5)
    assert scheduler.ackable_lsn() == 20


def test_a_permanent_failure_stops_the_scheduler_without_acking(make_scheduler):
    insert = RecordingInsert()
    insert.failures = [PermanentInsertError("ClickHouse code 60: table doesn't exist")]
    scheduler = make_scheduler(insert)
    scheduler.add([ch_row("a", 10)], 10, WHEN)

    with pytest.raises(PermanentInsertError, match="code 60"):
        scheduler.drain(5)
    assert scheduler.ackable_lsn() is None


def test_transactions_without_rows_are_ackable_at_once(make_scheduler):
    scheduler = make_scheduler(RecordingInsert())

    scheduler.add([], 10, WHEN)

    assert scheduler.ackable_lsn() == 10


def test_drain_gives_up_after_its_timeout_while_clickhouse_keeps_failing(make_scheduler):
    insert = RecordingInsert()
    insert.failures = [TransientInsertError("down")] * 1000
    scheduler = make_scheduler(insert)
    scheduler.add([ch_row("a", 10)], 10, WHEN)

    assert not scheduler.drain(0.2)
    assert scheduler.outstanding() == 1 and scheduler.ackable_lsn() is None
