"""Live-tail feeds on real servers: NOTIFY and SQLite commits from other connections wake hub waiters.

Nothing here is timed: each test asserts that a waiter woke before a generous timeout.
"""

import threading
import uuid

import pytest
import sqlalchemy as sa

from session_core.channels.notices import NOTIFY_CHANNEL, tail_notice
from session_core.channels.records import NewRecord
from session_core.channels.store import SqlChannelStore
from session_core.channels.wakeups import PgTailListener, SqliteTailWatcher, WakeupHub, start_tail_feed
from session_core.db.engine import make_engine
from session_core.db.tables import metadata
from session_core.db.uow import UnitOfWork

GENEROUS = 10.0


@pytest.fixture
def key():
    return f"env/sessions/{uuid.uuid4()} with spaces/out"


@pytest.fixture
def hub():
    hub = WakeupHub()
    yield hub
    hub.close()


def make_ready_engine(url):
    engine = make_engine(url)
    metadata.create_all(engine)
    return engine


@pytest.fixture
def pg_engine(make_pg_database):
    engine = make_ready_engine(make_pg_database())
    yield engine
    engine.dispose()


@pytest.fixture
def listener(pg_engine, hub):
    listener = PgTailListener(pg_engine, hub, interval_seconds=0.1)
    listener.start()
    assert listener.wait_ready(GENEROUS)
    yield listener
    listener.stop()


def wait_in_thread(subscription, tail, timeout=GENEROUS):
    """Start a waiter; the returned list receives wait()'s result once it returns."""
    result = []
    thread = threading.Thread(target=lambda: result.append(subscription.wait(tail, timeout)))
    thread.start()
    return thread, result


def append(engine, key, body="x"):
    with engine.begin() as conn:
        return SqlChannelStore(conn).append(key, [NewRecord(body)], now_ms=1)


@pytest.mark.postgres
def test_a_notify_from_another_connection_wakes_a_waiter(pg_engine, listener, hub, key):
    with hub.subscribe(key) as subscription:
        thread, woke = wait_in_thread(subscription, tail=0)

        with pg_engine.begin() as conn:
            conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, tail_notice(key, 1))))
        thread.join(GENEROUS + 5)

    assert woke == [True]


@pytest.mark.postgres
def test_a_committed_append_wakes_a_waiter_through_listen(pg_engine, listener, hub, key):
    with hub.subscribe(key) as subscription:
        thread, woke = wait_in_thread(subscription, tail=0)

        ack = append(pg_engine, key)
        thread.join(GENEROUS + 5)

    assert woke == [True]
    assert ack.tail.seq_num == 1


@pytest.mark.postgres
def test_a_rolled_back_append_wakes_nobody(pg_engine, listener, hub, key):
    with hub.subscribe(key) as subscription:
        with pg_engine.connect() as conn, conn.begin() as tx:
            SqlChannelStore(conn).append(key, [NewRecord("x")], now_ms=1)
            tx.rollback()

        assert subscription.wait(0, timeout=0.3) is False


@pytest.mark.postgres
def test_the_listener_reconnects_and_pokes_readers_after_losing_its_connection(pg_engine, listener, hub, key):
    with hub.subscribe(key) as subscription:
        with pg_engine.begin() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                )
            ).all()
        assert killed == [(True,)]

        assert subscription.wait(0, GENEROUS) is True  # the poke after reconnecting
        assert listener.wait_ready(GENEROUS)
        thread, woke = wait_in_thread(subscription, tail=0)
        append(pg_engine, key)
        thread.join(GENEROUS + 5)

    assert woke == [True]


def test_a_sqlite_commit_by_another_engine_wakes_a_waiter(sqlite_url, hub, key):
    writer, reader = make_ready_engine(sqlite_url), make_engine(sqlite_url)
    watcher = SqliteTailWatcher(reader, hub)
    watcher.start()
    try:
        assert watcher.wait_ready(GENEROUS)
        with hub.subscribe(key) as subscription:
            thread, woke = wait_in_thread(subscription, tail=0)

            append(writer, key)
            thread.join(GENEROUS + 5)
    finally:
        watcher.stop()
        writer.dispose()
        reader.dispose()

    assert woke == [True]


def test_start_tail_feed_follows_either_database(db_url, hub, key):
    engine = make_ready_engine(db_url)
    feed = start_tail_feed(engine, hub)
    try:
        assert feed.wait_ready(GENEROUS)
        with hub.subscribe(key) as subscription:
            append(engine, key)

            assert subscription.wait(0, GENEROUS) is True
    finally:
        feed.stop()
        engine.dispose()


def test_a_unit_of_work_wakes_readers_only_after_it_commits(db_url, hub, key):
    engine = make_ready_engine(db_url)
    try:
        with hub.subscribe(key) as subscription:
            with UnitOfWork(engine, hub) as uow:
                uow.channels.append(key, [NewRecord("rolled back")], now_ms=1)
            woken_by_rollback = subscription.wait(0, timeout=0)
            with UnitOfWork(engine, hub) as uow:
                uow.channels.append(key, [NewRecord("kept")], now_ms=1)
                woken_before_commit = subscription.wait(0, timeout=0)
                uow.commit()

            assert subscription.wait(0, timeout=0) is True
    finally:
        engine.dispose()

    assert woken_by_rollback is False
    assert woken_before_commit is False
