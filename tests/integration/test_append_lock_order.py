"""Two appends that both claim the session's run, at once, on PostgreSQL: no deadlock.

An append holds a shared lock on the session row; claiming a run updates that row. Were the claim
made under the shared lock, two appends that both found no live run would each wait for the
other's lock until PostgreSQL aborted one of them. Two ``GroupCommit``s stand in for two worker
processes (one process groups its appends into one transaction), and a launcher whose runs are
never live makes every append claim.
"""

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from session_core.db.engine import make_engine
from session_core.db.tables import metadata, session_runs
from session_core.db.uow import UnitOfWork
from session_core.models import EnvironmentType, utcnow
from session_core.scopes import Principal, PrincipalKind
from session_core.services import channels as service
from session_core.services.environments import create_environment
from session_core.streams.group_commit import GroupCommit
from session_core.streams.store import channel_key
from tests.unit.factories import make_session

ROUNDS = 5
#: How long starting a run takes: both appends hold their locks across it, so their claims meet.
TRIGGER_SECONDS = 0.05


class NeverLiveLauncher:
    """Starts runs that are never live, taking a moment each time; counts starts and cancels."""

    def __init__(self):
        self.started, self.cancelled = [], []
        self._lock = threading.Lock()

    def trigger(self, session, payload, reason):
        time.sleep(TRIGGER_SECONDS)
        run_id = f"run_{uuid.uuid4().hex}"
        with self._lock:
            self.started.append(run_id)
        return run_id

    def is_live(self, run_id):
        return False

    def cancel(self, run_id, reason):
        with self._lock:
            self.cancelled.append(run_id)


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


def append_at_once(engine, launcher, env, refs):
    """Append once per ref, all starting together, each from a process of its own (its own
    ``GroupCommit``); return each one's seq_num or the exception it raised."""
    barrier = threading.Barrier(len(refs), timeout=30)
    results = [None] * len(refs)

    def append(index, ref):
        barrier.wait()
        try:
            results[index] = service.append_to_channel(
                UnitOfWork(engine),
                launcher,
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
def test_two_appends_that_both_claim_a_run_neither_deadlock_nor_lose_a_claim(engine, env, addressed_by):
    launcher = NeverLiveLauncher()

    for _ in range(ROUNDS):
        session = make_session(
            external_id=f"chat-{uuid.uuid4().hex[:8]}", environment_id=env.id, created_at=utcnow()
        )
        with UnitOfWork(engine) as uow:
            uow.sessions.insert_or_get(session)
            uow.commit()

        results = append_at_once(engine, launcher, env, [getattr(session, addressed_by)] * 2)

        assert [r for r in results if isinstance(r, Exception)] == []
        assert sorted(results) == [0, 1]
        with UnitOfWork(engine, read_only=True) as uow:
            records = uow.channels.read(channel_key(env.id, session.external_id, "in"), 0, 10)
        assert [record.seq_num for record in records] == [0, 1]
        claimed = stored_session(engine, session.id)
        assert claimed.current_run_version == 2  # each append claimed once, one after the other
        assert claimed.current_run_id in run_ids(engine, session.id)
        assert len(run_ids(engine, session.id)) == 2
    assert launcher.cancelled == []  # no claim was lost: the second claimer read the first's run
    assert len(launcher.started) == 2 * ROUNDS
