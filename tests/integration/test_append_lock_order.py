"""Two appends that both claim the session's run, at once, on PostgreSQL: no deadlock.

An append holds a shared lock on the session row; claiming a run updates that row. Were the claim
made under the shared lock, two appends that both found no live run would each wait for the
other's lock until PostgreSQL aborted one of them. Two ``GroupCommit``s stand in for two worker
processes (one process groups its appends into one transaction); each session starts without a
run, so both appends go to claim one, and claims are slowed down so that they meet.
"""

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from session_core.channels.group_commit import GroupCommit
from session_core.channels.records import channel_key
from session_core.db.engine import make_engine
from session_core.db.tables import metadata, session_runs
from session_core.db.uow import UnitOfWork
from session_core.models import EnvironmentType, utcnow
from session_core.scopes import Principal, PrincipalKind
from session_core.services import channels as service
from session_core.services.environments import create_environment
from session_core.services.runs import RecordingLauncher
from tests.unit.factories import make_session

ROUNDS = 5
#: How long a claim waits before it writes the session row: long enough for the other append to
#: reach its own claim, so claims made under a shared lock would meet (and deadlock).
CLAIM_DELAY_SECONDS = 0.05


class SlowClaims(UnitOfWork):
    """A unit of work whose run claims wait a moment before writing the session row."""

    def __enter__(self):
        uow = super().__enter__()
        claim = uow.sessions.claim_run

        def slow_claim(*args, **kwargs):
            time.sleep(CLAIM_DELAY_SECONDS)
            return claim(*args, **kwargs)

        uow.sessions.claim_run = slow_claim
        return uow

    def autocommitting(self):
        return SlowClaims(self._engine, self._hub, autocommit=True)


@pytest.fixture(scope="module")
def engine(postgres):
    """A database of this module's own, with the tables, on the run's PostgreSQL server."""
    name = postgres.create_database()
    engine = make_engine(postgres.database_url(name))
    metadata.create_all(engine)
    yield engine
    engine.dispose()
    postgres.drop_database(name)


@pytest.fixture(scope="module")
def env(engine):
    return create_environment(
        UnitOfWork(engine), f"env-{uuid.uuid4().hex[:8]}", EnvironmentType.DEVELOPMENT, utcnow()
    )


def append_at_once(engine, env, refs):
    """Append once per ref, all starting together, each from a process of its own (its own
    ``GroupCommit``); return each one's seq_num or the exception it raised."""
    barrier = threading.Barrier(len(refs), timeout=30)
    results = [None] * len(refs)

    def append(index, ref):
        barrier.wait()
        try:
            results[index] = service.append_to_channel(
                SlowClaims(engine),
                RecordingLauncher(),
                GroupCommit(),
                ref,
                "in",
                service.ChannelAppend(Principal(env, PrincipalKind.PRIVATE), str(index), None, utcnow()),
                part_id_ttl_seconds=300,
            )
        except Exception as error:  # a deadlock surfaces as the driver's error: keep it to show
            results[index] = error

    threads = [threading.Thread(target=append, args=item) for item in enumerate(refs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def stored_session(engine, session_id):
    with UnitOfWork(engine, read_only=True) as uow:
        return uow.sessions.get(session_id)


def run_ids(engine, session_id):
    with engine.connect() as conn:
        rows = conn.execute(sa.select(session_runs.c.run_id).where(session_runs.c.session_id == session_id))
        return {row.run_id for row in rows}


@pytest.mark.postgres
@pytest.mark.parametrize(
    "addressed_by",
    [
        pytest.param("external_id", id="appended-at-once"),  # the channel's own name: one statement
        pytest.param("friendly_id", id="appended-after-a-lookup"),  # the other name: session read first
    ],
)
def test_two_appends_to_a_session_without_a_run_start_one_run_without_deadlock(engine, env, addressed_by):
    for _ in range(ROUNDS):
        session = make_session(
            external_id=f"chat-{uuid.uuid4().hex[:8]}", environment_id=env.id, created_at=utcnow()
        )
        with UnitOfWork(engine) as uow:
            uow.sessions.insert_or_get(session)
            uow.commit()

        results = append_at_once(engine, env, [getattr(session, addressed_by)] * 2)

        assert [r for r in results if isinstance(r, Exception)] == []
        assert sorted(results) == [0, 1]
        with UnitOfWork(engine, read_only=True) as uow:
            records = uow.channels.read(channel_key(env.id, session.external_id, "in"), 0, 10)
        assert [record.seq_num for record in records] == [0, 1]
        claimed = stored_session(engine, session.id)
        assert claimed.current_run_version == 1  # the second claimer found the first's run live
        assert run_ids(engine, session.id) == {claimed.current_run_id}
