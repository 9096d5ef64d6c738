"""UnitOfWork on real SQLite and PostgreSQL: commit, roll back, and the pooled connection left clean.

On PostgreSQL, read-only and autocommit units of work switch the driver's connection to autocommit,
so these tests also pin that every connection goes back to the pool outside a transaction and
outside autocommit.
"""

import pytest
import sqlalchemy as sa

from session_core.channels.records import NewRecord
from session_core.db.engine import make_engine
from session_core.db.tables import channels, metadata
from session_core.db.uow import UnitOfWork


def tail(engine, key):
    with UnitOfWork(engine, read_only=True) as uow:
        return uow.channels.tail(key).seq_num


def test_committed_writes_are_kept_and_uncommitted_ones_are_not(engine, key):
    with UnitOfWork(engine) as uow:
        uow.channels.append(key, [NewRecord("kept")], now_ms=1)
        uow.commit()
    with UnitOfWork(engine) as uow:
        uow.channels.append(key, [NewRecord("dropped")], now_ms=1)

    assert tail(engine, key) == 1


def test_a_failed_statement_rolls_back_what_came_before_it(engine, key):
    with pytest.raises(sa.exc.DBAPIError), UnitOfWork(engine) as uow:
        uow.channels.append(key, [NewRecord("dropped")], now_ms=1)
        uow._conn.execute(sa.insert(channels).values(key=key, next_seq=0))  # duplicate key

    assert tail(engine, key) == 0
    with UnitOfWork(engine) as uow:
        assert uow.channels.append(key, [NewRecord("kept")], now_ms=1).start.seq_num == 0
        uow.commit()
    assert tail(engine, key) == 1


@pytest.mark.postgres
def test_no_connection_goes_back_to_the_pool_inside_a_transaction(make_pg_database, key):
    url = make_pg_database()
    engine, observer = make_engine(url, pool_size=1, max_overflow=0), sa.create_engine(url)
    metadata.create_all(engine)
    try:
        with pytest.raises(RuntimeError), UnitOfWork(engine) as uow:
            uow.channels.append(key, [NewRecord("dropped")], now_ms=1)
            raise RuntimeError("a use case failed half way")
        with UnitOfWork(engine, read_only=True) as uow:  # the same pooled connection
            pid = uow._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with engine.connect() as conn:  # lent to plain SQLAlchemy users as it was: transactional
            is_autocommit = conn.connection.dbapi_connection.autocommit
        with observer.connect() as conn:
            state = conn.exec_driver_sql("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).scalar()
    finally:
        engine.dispose()
        observer.dispose()

    assert state == "idle"  # not "idle in transaction"
    assert is_autocommit is False
