"""One contract for the runs, environments, launch outbox, spent-token and Durable Streams repositories.

The same tests run on the in-memory fakes the unit tests use, on SQLite and on PostgreSQL (``make_uow``
in tests/integration/conftest.py), as ``test_store_contract.py`` does for sessions and channels: a use
case tested on the fakes then says something about production.
"""

import uuid
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from session_core.channels.records import NewRecord, StreamPosition
from session_core.durable.rules import DsStream, ProducerHeaders, ProducerState, StreamPathTaken
from session_core.errors import Conflict
from session_core.ids import generate_cuid, run_friendly_id
from session_core.models import Environment, EnvironmentType, RunReason, RunStatus, SessionRun
from session_core.repositories.ports import PendingLaunch
from tests.unit.factories import make_session

MOMENT = datetime(2026, 6, 1, 12)


@pytest.fixture
def environment_id():
    return f"env-{uuid.uuid4().hex[:12]}"


def insert_session(make_uow, environment_id):
    with make_uow() as uow:
        session = uow.sessions.insert_or_get(make_session(environment_id=environment_id))
        uow.commit()
    return session


def make_run(session, triggered_at=MOMENT, **overrides):
    cuid = generate_cuid()
    return SessionRun(cuid, session.id, run_friendly_id(cuid), RunReason.INITIAL, triggered_at, **overrides)


def add_runs(make_uow, *runs):
    with make_uow() as uow:
        for run in runs:
            uow.runs.add(run)
        uow.commit()


# Runs


def test_a_run_is_found_by_its_id_and_in_its_sessions_environment_only(make_uow, environment_id):
    session = insert_session(make_uow, environment_id)
    run = make_run(session, lease_expires_at=MOMENT + timedelta(seconds=30))
    add_runs(make_uow, run)

    with make_uow() as uow:
        found = uow.runs.get(run.run_id)
        in_its_environment = uow.runs.get_in_environment(environment_id, run.run_id)
        elsewhere = uow.runs.get_in_environment("another-environment", run.run_id)
        unknown = uow.runs.get("run_unknown")

    assert found == in_its_environment == run
    assert elsewhere is None and unknown is None


def test_a_sessions_runs_are_listed_newest_first_up_to_the_limit(make_uow, environment_id):
    session = insert_session(make_uow, environment_id)
    runs = [make_run(session, MOMENT + timedelta(seconds=n)) for n in range(3)]
    add_runs(make_uow, *runs, make_run(insert_session(make_uow, environment_id)))

    with make_uow() as uow:
        listed = uow.runs.list_for_session(session.id, 2)

    assert [run.run_id for run in listed] == [runs[2].run_id, runs[1].run_id]


def test_only_a_running_run_within_its_lease_is_updated(make_uow, environment_id):
    session = insert_session(make_uow, environment_id)
    lease = MOMENT + timedelta(seconds=30)
    live = make_run(session, lease_expires_at=lease)
    ended = make_run(session, status=RunStatus.COMPLETED, lease_expires_at=lease)
    lapsed = make_run(session, lease_expires_at=MOMENT - timedelta(seconds=1))
    add_runs(make_uow, live, ended, lapsed)

    with make_uow() as uow:
        updated = uow.runs.update_if_running(
            live.run_id, MOMENT, status=RunStatus.EXECUTING, started_at=MOMENT
        )
        refused = [
            uow.runs.update_if_running(run.run_id, MOMENT, status=RunStatus.FAILED) for run in (ended, lapsed)
        ]
        uow.commit()
    with make_uow() as uow:
        stored = uow.runs.get(live.run_id)

    assert updated == stored
    assert (stored.status, stored.started_at, stored.lease_expires_at) == (RunStatus.EXECUTING, MOMENT, lease)
    assert refused == [None, None]


# Environments


def make_environment(slug=None, project_id="proj"):
    cuid = generate_cuid()
    return Environment(
        cuid, slug or f"dev-{cuid[-8:]}", EnvironmentType.DEVELOPMENT, "org", project_id, f"tr_dev_{cuid}"
    )


def test_an_environment_is_found_by_id_key_hash_and_slug(make_uow):
    environment = make_environment()

    with make_uow() as uow:
        uow.environments.add(environment, f"hash-{environment.id}", MOMENT)
        uow.commit()
    with make_uow() as uow:
        found = [
            uow.environments.get(environment.id),
            uow.environments.get_by_api_key_hash(f"hash-{environment.id}"),
            uow.environments.get_by_slug(environment.slug),
        ]
        unknown = [uow.environments.get("nope"), uow.environments.get_by_api_key_hash("nope")]

    assert found == [environment] * 3
    assert unknown == [None, None]


def test_a_slug_is_taken_once_per_project(make_uow):
    environment = make_environment()

    with make_uow() as uow:
        uow.environments.add(environment, f"hash-{environment.id}", MOMENT)
        uow.commit()
    with pytest.raises(Conflict, match="already exists"), make_uow() as uow:
        uow.environments.add(make_environment(environment.slug), "another-hash", MOMENT)


def test_a_replaced_key_is_the_only_key_that_finds_the_environment(make_uow):
    environment = make_environment()

    with make_uow() as uow:
        uow.environments.add(environment, f"old-{environment.id}", MOMENT)
        uow.environments.replace_api_key(environment.id, "tr_dev_new", f"new-{environment.id}")
        uow.commit()
    with make_uow() as uow:
        by_old = uow.environments.get_by_api_key_hash(f"old-{environment.id}")
        by_new = uow.environments.get_by_api_key_hash(f"new-{environment.id}")

    assert by_old is None
    assert by_new is not None and by_new.api_key == "tr_dev_new"


def test_environments_are_summarised_oldest_first_and_the_oldest_comes_first(make_uow):
    older, newer = make_environment(), make_environment()

    with make_uow() as uow:  # long before any other test's environments
        uow.environments.add(newer, f"hash-{newer.id}", datetime(1991, 1, 1))
        uow.environments.add(older, f"hash-{older.id}", datetime(1990, 1, 1))
        uow.commit()
    with make_uow() as uow:
        summaries = uow.environments.list_summaries()
        first = uow.environments.first()

    assert [(s.id, s.slug, s.created_at) for s in summaries[:2]] == [
        (older.id, older.slug, datetime(1990, 1, 1)),
        (newer.id, newer.slug, datetime(1991, 1, 1)),
    ]
    assert first == older


# The launch outbox: one test, since claims and next_due see every launch of the module's store.


def test_launches_are_claimed_when_due_held_retried_and_taken_off_when_done(make_uow, environment_id):
    session = insert_session(make_uow, environment_id)
    first_run, second_run = make_run(session), make_run(session)
    add_runs(make_uow, first_run, second_run)
    at = MOMENT
    with make_uow() as uow:
        uow.launches.add("msg_1", first_run.run_id, at)
        uow.launches.add("msg_2", second_run.run_id, at + timedelta(seconds=10))
        uow.commit()

    def step(action):
        with make_uow() as uow:
            result = action(uow.launches)
            uow.commit()
        return result

    assert step(lambda launches: launches.next_due()) == at
    assert step(
        lambda launches: launches.claim_due(at + timedelta(seconds=5), at + timedelta(seconds=60), 10)
    ) == [PendingLaunch("msg_1", first_run.run_id, 1)]
    assert step(lambda launches: launches.next_due()) == at + timedelta(seconds=10)  # msg_1 is held
    step(lambda launches: launches.retry_at("msg_1", at + timedelta(seconds=20), "boom"))
    assert step(
        lambda launches: launches.claim_due(at + timedelta(seconds=30), at + timedelta(seconds=90), 1)
    ) == [
        PendingLaunch("msg_2", second_run.run_id, 1)  # the earliest due first
    ]
    assert step(
        lambda launches: launches.claim_due(at + timedelta(seconds=30), at + timedelta(seconds=90), 10)
    ) == [PendingLaunch("msg_1", first_run.run_id, 2)]
    step(lambda launches: launches.mark_done("msg_1", at + timedelta(seconds=31)))
    step(lambda launches: launches.mark_done("msg_2", at + timedelta(seconds=31), "nothing to start"))
    step(lambda launches: launches.retry_at("msg_1", at, "late failure"))  # a delivered launch stays done

    assert step(lambda launches: launches.next_due()) is None
    assert step(lambda launches: launches.claim_due(at + timedelta(days=1), at + timedelta(days=2), 10)) == []


# Spent one-time tokens


def test_a_one_time_token_is_spent_once_and_its_record_is_swept_once_it_expired(make_uow):
    token, other = f"hash-{uuid.uuid4().hex}", f"hash-{uuid.uuid4().hex}"
    now = 1_800_000_000

    def spend(token_hash, expires_at, at):
        with make_uow() as uow:
            first = uow.spent_tokens.spend(token_hash, expires_at, at)
            uow.commit()
        return first

    assert spend(token, now + 100, now)
    assert not spend(token, now + 100, now + 50)
    assert spend(other, now + 100, now + 50)
    assert spend(token, now + 400, now + 200)  # the first record expired at now + 100 and was swept


# Durable Streams


def make_stream(environment_id, path="events", **overrides):
    values = {"content_type": "application/json", "created_at_ms": 1_000, "last_access_ms": 1_000}
    return DsStream(f"ds_{uuid.uuid4().hex[:24]}", environment_id, path, **{**values, **overrides})


def test_a_stream_is_found_by_path_in_its_environment_and_by_id(make_uow, environment_id):
    stream = make_stream(environment_id)

    with make_uow() as uow:
        uow.ds.insert(stream, 5)
        uow.commit()
    with make_uow() as uow:
        found = [uow.ds.get(environment_id, "events", lock=True), uow.ds.get_by_id(stream.id)]
        elsewhere = [uow.ds.get("another-environment", "events"), uow.ds.get(environment_id, "other")]
        tail = uow.channels.tail(stream.key)

    assert found == [stream, stream]
    assert elsewhere == [None, None]
    assert tail == StreamPosition(5, 0)  # a fork's own records start past its fork point


def test_a_path_holds_one_stream(make_uow, environment_id):
    with make_uow() as uow:
        uow.ds.insert(make_stream(environment_id), 0)
        uow.commit()

    with pytest.raises(StreamPathTaken), make_uow() as uow:
        uow.ds.insert(make_stream(environment_id), 0)


def test_a_saved_stream_keeps_its_state_and_a_touch_moves_only_a_sliding_ttl(make_uow, environment_id):
    sliding = make_stream(environment_id, "sliding", ttl_seconds=60)
    fixed = make_stream(environment_id, "fixed")
    closed = replace(fixed, closed=True, closed_by=ProducerHeaders("p", 1, 7), stream_seq="0009")

    with make_uow() as uow:
        uow.ds.insert(sliding, 0)
        uow.ds.insert(fixed, 0)
        saved = uow.ds.save(closed)
        touched = [uow.ds.touch(sliding, 2_000), uow.ds.touch(closed, 2_000)]
        uow.commit()
    with make_uow() as uow:
        stored = [uow.ds.get_by_id(sliding.id), uow.ds.get_by_id(fixed.id)]

    assert saved == closed
    assert touched == [replace(sliding, last_access_ms=2_000), closed]
    assert stored == touched


def test_a_producers_state_is_kept_per_stream_and_replaced(make_uow, environment_id):
    stream, other = make_stream(environment_id, "a"), make_stream(environment_id, "b")

    with make_uow() as uow:
        uow.ds.insert(stream, 0)
        uow.ds.insert(other, 0)
        before = uow.ds.producer(stream.id, "p")
        uow.ds.save_producer(stream.id, "p", ProducerState(0, 0), 1_000)
        uow.ds.save_producer(stream.id, "p", ProducerState(1, 3), 2_000)
        uow.commit()
    with make_uow() as uow:
        found = [uow.ds.producer(stream.id, "p"), uow.ds.producer(other.id, "p")]

    assert before is None
    assert found == [ProducerState(1, 3), None]


def test_a_removed_stream_leaves_no_records_channel_or_producers(make_uow, environment_id):
    stream = make_stream(environment_id)
    with make_uow() as uow:
        uow.ds.insert(stream, 0)
        uow.channels.append(stream.key, [NewRecord("[1]"), NewRecord("[2]")], now_ms=1_000)
        uow.ds.save_producer(stream.id, "p", ProducerState(0, 1), 1_000)
        uow.commit()

    with make_uow() as uow:
        uow.ds.remove(stream)
        uow.commit()
    with make_uow() as uow:
        gone = [uow.ds.get_by_id(stream.id), uow.ds.producer(stream.id, "p")]
        records, tail = uow.channels.read_with_tail(stream.key, 0, 10)

    assert gone == [None, None]
    assert (records, tail) == ([], StreamPosition(0, 0))
