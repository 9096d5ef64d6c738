"""Concurrent appends through the channel service, grouped into shared transactions, on SQLite and PostgreSQL.

Threads stand in for a worker's greenlets. Each batch written at once is held a while as it commits
(and counted), so appends arriving meanwhile queue and share the next batch.
"""

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from session_core.channels.group_commit import GroupCommit
from session_core.channels.records import channel_key
from session_core.db.engine import make_engine
from session_core.db.migrate import upgrade_database
from session_core.db.tables import channels
from session_core.db.uow import UnitOfWork
from session_core.errors import Forbidden, NotFound, SessionClosed
from session_core.models import EnvironmentType, Session, utcnow
from session_core.scopes import Principal, PrincipalKind
from session_core.services import channels as service
from session_core.services.environments import create_environment
from tests.unit.factories import make_session

WRITERS = 12
BATCH_HOLD_SECONDS = 0.02


class Batches:
    """Counts the batches written at once, holding each a while before its commit."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def hold(self):
        with self._lock:
            self.count += 1
        time.sleep(BATCH_HOLD_SECONDS)


class HeldUnitOfWork(UnitOfWork):
    """A unit of work whose autocommitting children (the batches written at once) are held."""

    def __init__(self, engine, batches, *, autocommit=False):
        super().__init__(engine, autocommit=autocommit)
        self._engine_for_children = engine
        self._batches = batches

    def autocommitting(self):
        return HeldUnitOfWork(self._engine_for_children, self._batches, autocommit=True)

    def commit(self):
        if self._autocommit:
            self._batches.hold()
        super().commit()


@pytest.fixture
def engine(db_url):
    upgrade_database(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def env(engine):
    return create_environment(
        UnitOfWork(engine), f"env-{uuid.uuid4().hex[:8]}", EnvironmentType.DEVELOPMENT, utcnow()
    )


@pytest.fixture
def session(engine, env) -> Session:
    session = make_session(
        external_id=f"chat-{uuid.uuid4().hex[:8]}",
        environment_id=env.id,
        current_run_id="run_live",
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    uow = UnitOfWork(engine)
    with uow:
        uow.sessions.insert_or_get(session)
        uow.commit()
    return session


class CountingLauncher:
    """Records runs as the default launcher does, and counts the batches appends were written in."""

    lease_seconds = 30
    delivers = False

    def __init__(self):
        self.batches = Batches()

    @property
    def checks(self):
        return self.batches.count

    def wake(self):
        pass


@pytest.fixture
def launcher():
    return CountingLauncher()


@pytest.fixture
def groups():
    return GroupCommit()


def secret_key(env):
    return Principal(env, PrincipalKind.PRIVATE)


def append(engine, launcher, groups, principal, ref, body, part=None, io="in"):
    """One append through the service, as the view makes it; returns its seq_num or its error."""
    try:
        return service.append_to_channel(
            HeldUnitOfWork(engine, launcher.batches),
            launcher,
            groups,
            ref,
            io,
            service.ChannelAppend(principal, body, part, utcnow()),
            part_id_ttl_seconds=300,
        )
    except (Forbidden, NotFound, SessionClosed) as error:
        return error


def run_concurrently(calls):
    """Start every call at once (a barrier), one thread each; return their results in order."""
    barrier = threading.Barrier(len(calls), timeout=30)

    def start(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(start, calls))


def stored(engine, key):
    uow = UnitOfWork(engine, read_only=True)
    with uow:
        return uow.channels.read(key, 0, 10_000)


def test_concurrent_appends_share_transactions_and_get_gap_free_seq_nums(
    engine, env, session, launcher, groups
):
    principal = secret_key(env)
    appends_each = 5

    def writer(n):
        return lambda: [
            append(engine, launcher, groups, principal, session.external_id, f"w{n}-{i}")
            for i in range(appends_each)
        ]

    results = run_concurrently([writer(n) for n in range(WRITERS)])

    seq_nums = sorted(seq for per_writer in results for seq in per_writer)
    total = WRITERS * appends_each
    assert seq_nums == list(range(total))
    assert all(per_writer == sorted(per_writer) for per_writer in results)  # each writer's order kept
    records = stored(engine, channel_key(env.id, session.external_id, "in"))
    assert [record.seq_num for record in records] == list(range(total))
    assert launcher.checks < total  # appends did share batches


def test_each_part_id_is_written_once_however_its_retries_are_grouped(engine, env, session, launcher, groups):
    principal = secret_key(env)
    parts = [f"part-{n % 5}" for n in range(WRITERS * 2)]  # every part id sent several times at once

    results = run_concurrently(
        [
            lambda part=part: append(engine, launcher, groups, principal, session.external_id, part, part)
            for part in parts
        ]
    )

    records = stored(engine, channel_key(env.id, session.external_id, "in"))
    assert len(records) == 5
    first_seq = {}
    for part, seq in zip(parts, results, strict=True):
        assert first_seq.setdefault(part, seq) == seq
    assert sorted(first_seq.values()) == list(range(5))
    assert launcher.checks < len(parts)


def test_each_append_in_a_batch_gets_its_own_authorization_answer(engine, env, session, launcher, groups):
    allowed = Principal(env, PrincipalKind.PUBLIC_JWT, (f"write:sessions:{session.external_id}",))
    stranger = Principal(env, PrincipalKind.PUBLIC_JWT, ("write:sessions:someone-else",))
    principals = [secret_key(env), allowed, stranger] * 4

    results = run_concurrently(
        [
            lambda principal=principal, n=n: append(
                engine, launcher, groups, principal, session.external_id, str(n)
            )
            for n, principal in enumerate(principals)
        ]
    )

    refused = [result for result in results if isinstance(result, Exception)]
    accepted = sorted(result for result in results if not isinstance(result, Exception))
    assert all(isinstance(result, Forbidden) for result in refused)
    assert [isinstance(result, Forbidden) for result in results] == [p is stranger for p in principals]
    assert accepted == list(range(8))
    assert launcher.checks < len(principals)


def test_a_token_on_out_is_refused_while_secret_keys_in_its_batch_are_written(
    engine, env, session, launcher, groups
):
    token = Principal(env, PrincipalKind.PUBLIC_JWT, (f"write:sessions:{session.external_id}",))
    principals = [secret_key(env), token] * 4

    results = run_concurrently(
        [
            lambda principal=principal: append(
                engine, launcher, groups, principal, session.external_id, "x", io="out"
            )
            for principal in principals
        ]
    )

    assert [isinstance(result, Forbidden) for result in results] == [p is token for p in principals]
    assert sorted(result for result in results if isinstance(result, int)) == [0, 1, 2, 3]


def test_a_closed_session_refuses_every_append_of_a_batch(engine, env, session, launcher, groups):
    uow = UnitOfWork(engine)
    with uow:
        uow.sessions.close_if_open(session.id, "done", utcnow())
        uow.commit()

    results = run_concurrently(
        [
            lambda n=n: append(engine, launcher, groups, secret_key(env), session.external_id, str(n))
            for n in range(8)
        ]
    )

    assert all(isinstance(result, SessionClosed) for result in results)
    assert stored(engine, channel_key(env.id, session.external_id, "in")) == []


def test_an_unknown_session_is_not_found_after_the_scope_check(engine, env, launcher, groups):
    stranger = Principal(env, PrincipalKind.PUBLIC_JWT, ("write:sessions:other",))

    assert isinstance(append(engine, launcher, groups, secret_key(env), "nobody", "x"), NotFound)
    assert isinstance(append(engine, launcher, groups, stranger, "nobody", "x"), Forbidden)


def test_a_session_with_no_run_gets_one_with_its_first_batch(engine, env, launcher, groups):
    fresh = make_session(environment_id=env.id, created_at=utcnow(), updated_at=utcnow())
    uow = UnitOfWork(engine)
    with uow:
        uow.sessions.insert_or_get(fresh)
        uow.commit()

    results = run_concurrently(
        [
            lambda n=n: append(engine, launcher, groups, secret_key(env), fresh.friendly_id, str(n))
            for n in range(6)
        ]
    )

    assert sorted(results) == list(range(6))
    uow = UnitOfWork(engine, read_only=True)
    with uow:
        assert uow.sessions.get(fresh.id).current_run_id is not None


def channel_keys(engine, environment_id):
    with engine.connect() as conn:
        rows = conn.execute(sa.select(channels.c.key).where(channels.c.key.startswith(environment_id + "/")))
        return {row.key for row in rows}


def test_a_token_scoped_to_the_sessions_other_name_may_append(engine, env, session, launcher, groups):
    token = Principal(env, PrincipalKind.PUBLIC_JWT, (f"write:sessions:{session.friendly_id}",))

    seqs = [append(engine, launcher, groups, token, session.external_id, str(n)) for n in range(3)]

    assert seqs == [0, 1, 2]


def test_a_friendly_id_appends_to_the_channel_its_external_id_names(engine, env, session, launcher, groups):
    principal = secret_key(env)

    by_friendly_id = append(engine, launcher, groups, principal, session.friendly_id, "a")
    by_external_id = append(engine, launcher, groups, principal, session.external_id, "b")

    assert (by_friendly_id, by_external_id) == (0, 1)
    assert channel_keys(engine, env.id) == {channel_key(env.id, session.external_id, "in")}


def test_refused_appends_leave_no_channel_behind(engine, env, session, launcher, groups):
    principal = secret_key(env)
    uow = UnitOfWork(engine)
    with uow:
        uow.sessions.close_if_open(session.id, "done", utcnow())
        uow.commit()

    assert isinstance(append(engine, launcher, groups, principal, "nobody", "x"), NotFound)
    assert isinstance(append(engine, launcher, groups, principal, session.friendly_id, "x"), SessionClosed)
    assert channel_keys(engine, env.id) <= {channel_key(env.id, session.external_id, "in")}


@pytest.mark.postgres
def test_an_append_to_an_open_session_is_one_round_trip_commit_included(make_pg_database, launcher, groups):
    url = make_pg_database()
    upgrade_database(url)
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        env = create_environment(UnitOfWork(engine), "trips", EnvironmentType.DEVELOPMENT, utcnow())
        session = make_session(environment_id=env.id, current_run_id="run_live")
        with UnitOfWork(engine) as uow:
            uow.sessions.insert_or_get(session)
            uow.commit()
        append(
            engine, launcher, groups, secret_key(env), session.friendly_id, "warm-up", part="w"
        )  # prepares, sweeps
        append(engine, launcher, groups, secret_key(env), session.friendly_id, "warm-up", part="w", io="out")
        sent = []
        sa.event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2]))

        seq = append(engine, launcher, groups, secret_key(env), session.friendly_id, "x", part="p")
        to_in = list(sent)
        sent.clear()
        out_seq = append(
            engine, launcher, groups, secret_key(env), session.friendly_id, "y", part="q", io="out"
        )
    finally:
        engine.dispose()

    assert (seq, out_seq) == (1, 1)
    assert len(sent) == 1  # lock and append as one implicit transaction: no BEGIN, no COMMIT
    assert sent[0].startswith("EXECUTE sessions_channel_append_") and sent[0].count("; EXECUTE ") == 1
    # `.in` adds one read: is the session's run (started by the warm-up) still live?
    assert len(to_in) == 2 and to_in[0] == sent[0] and "FROM session_runs" in to_in[1]
