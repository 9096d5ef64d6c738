"""The session, channel, run, launch and Durable Streams use cases on the in-memory fakes: no
database, no sockets, no clock.

``MemoryUnitOfWork`` stands where the SQL unit of work stands in production (cosmicpython's
``FakeUnitOfWork``); ``tests/integration/test_store_contract.py`` and ``test_repository_contract.py``
hold both to the same contract.
"""

import functools
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pytest

from session_core.channels.flight import SingleFlight
from session_core.channels.group_commit import GroupCommit
from session_core.durable import service as durable
from session_core.durable.rules import ProducerHeaders
from session_core.envelopes import open_envelope
from session_core.errors import Conflict, Forbidden, NotFound, SessionClosed
from session_core.models import Environment, EnvironmentType, RunStatus
from session_core.repositories.memory import MemoryUnitOfWork
from session_core.scopes import Principal, PrincipalKind
from session_core.services import channels, sessions
from session_core.services.launches import Dispatcher, DispatchPolicy, Launch
from session_core.services.runs import RecordingLauncher, RunFinal, end_run, heartbeat_run
from session_core.services.tokens import spend_one_time_token

NOW = datetime(2026, 6, 1, 12)
ENV = Environment("env1", "dev", EnvironmentType.DEVELOPMENT, "org", "proj", "tr_dev_" + "k" * 32)
SECRET_KEY = Principal(ENV, PrincipalKind.PRIVATE)


@pytest.fixture
def uow():
    return MemoryUnitOfWork()


@pytest.fixture
def launcher():
    return RecordingLauncher()


def create(uow, launcher, external_id="chat-1", **fields):
    data = {
        "type": "chat.agent",
        "task_identifier": "agent",
        "trigger_config": {},
        "external_id": external_id,
    }
    return sessions.create_session(uow, launcher, SECRET_KEY, {**data, **fields}, NOW)


def append(uow, launcher, session_ref, body, principal=SECRET_KEY, io="in", part=None, now=NOW):
    return channels.append_to_channel(
        uow,
        launcher,
        GroupCommit(),
        session_ref,
        io,
        channels.ChannelAppend(principal, body, part, now),
        part_id_ttl_seconds=300,
    )


def read(uow, session_ref, io="in"):
    key = channels.resolve_channel_for_read(uow, SECRET_KEY, session_ref, io)
    return [open_envelope(record)[0] for record in channels.read_page(uow, key, 0, 100, 10_000)]


def test_creating_a_session_starts_its_first_run(uow, launcher):
    created = create(uow, launcher)

    assert not created.is_cached
    assert created.run_id == created.session.current_run_id
    assert [run.run_id for run in uow.db.runs] == [created.run_id]


def test_creating_again_with_the_same_external_id_returns_the_open_session(uow, launcher):
    first = create(uow, launcher)

    again = create(uow, launcher)

    assert again.is_cached and again.session.id == first.session.id
    assert again.run_id == first.run_id and len(uow.db.runs) == 1  # its run is live: reused


def test_creating_with_the_external_id_of_a_closed_session_is_a_conflict(uow, launcher):
    first = create(uow, launcher)
    sessions.close_session(uow, SECRET_KEY, first.session.friendly_id, "done", NOW)

    with pytest.raises(Conflict):
        create(uow, launcher)


def test_closing_twice_keeps_the_first_close(uow, launcher):
    created = create(uow, launcher)

    first = sessions.close_session(uow, SECRET_KEY, "chat-1", "done", NOW)
    again = sessions.close_session(uow, SECRET_KEY, "chat-1", "again", NOW + timedelta(minutes=1))

    assert (first.closed_at, first.closed_reason) == (NOW, "done")
    assert again == first
    assert uow.sessions.get(created.session.id).closed_at == NOW


def test_appends_land_in_order_and_read_back_as_sent(uow, launcher):
    created = create(uow, launcher)

    seq_nums = [
        append(uow, launcher, "chat-1", "hello"),
        append(uow, launcher, created.session.friendly_id, "again"),
    ]

    assert seq_nums == [0, 1]
    assert read(uow, "chat-1") == ["hello", "again"]


def test_a_retried_part_id_is_written_once(uow, launcher):
    create(uow, launcher)

    first = append(uow, launcher, "chat-1", "x", part="p1")
    retried = append(uow, launcher, "chat-1", "x", part="p1")

    assert first == retried == 0
    assert read(uow, "chat-1") == ["x"]


def test_an_append_to_a_session_whose_run_ended_starts_a_new_run(uow, launcher):
    created = create(uow, launcher)
    uow.db.runs[0] = replace(uow.db.runs[0], status=RunStatus.COMPLETED)

    append(uow, launcher, "chat-1", "wake up")

    current = uow.sessions.get_by_ref(ENV.id, "chat-1").current_run_id
    assert current not in (None, created.run_id)
    assert [run.run_id for run in uow.db.runs] == [created.run_id, current]


def test_appends_to_a_closed_session_an_unknown_one_or_out_with_a_token_are_refused(uow, launcher):
    created = create(uow, launcher)
    token = Principal(ENV, PrincipalKind.PUBLIC_JWT, ("write:sessions:chat-1",))
    stranger = Principal(ENV, PrincipalKind.PUBLIC_JWT, ("write:sessions:chat-2",))

    with pytest.raises(Forbidden):
        append(uow, launcher, "chat-1", "x", principal=token, io="out")
    with pytest.raises(Forbidden):
        append(uow, launcher, "chat-1", "x", principal=stranger)
    with pytest.raises(NotFound):
        append(uow, launcher, "chat-2", "x")
    assert read(uow, "chat-1") == []
    sessions.close_session(uow, SECRET_KEY, created.session.friendly_id, None, NOW)
    with pytest.raises(SessionClosed):
        append(uow, launcher, "chat-1", "x")


def test_end_and_continue_hands_the_session_to_a_new_run_once(uow, launcher):
    first = create(uow, launcher).run_id

    swapped = sessions.end_and_continue(uow, launcher, SECRET_KEY, "chat-1", first, "continuation", NOW)
    stale = sessions.end_and_continue(uow, launcher, SECRET_KEY, "chat-1", first, "continuation", NOW)

    second = uow.sessions.get_by_ref(ENV.id, "chat-1").current_run_id
    assert swapped == (second, True) and second != first
    assert stale == (second, False)  # the first run is no longer current: nothing is handed over


def run_token(run_id, session):
    return Principal(ENV, PrincipalKind.PUBLIC_JWT, run_id=run_id, session_id=session.friendly_id)


def test_a_run_is_heartbeaten_to_executing_then_ended_and_then_refused(uow, launcher):
    created = create(uow, launcher)
    token = run_token(created.run_id, created.session)

    beat = heartbeat_run(uow, token, created.run_id, 60, NOW)
    ended = end_run(uow, token, created.run_id, RunStatus.COMPLETED, NOW, output={"ok": True})

    assert beat.view.status is RunStatus.EXECUTING and beat.token
    assert (ended.status, ended.run.output) == (RunStatus.COMPLETED, {"ok": True})
    with pytest.raises(RunFinal, match="^Run is COMPLETED$"):
        heartbeat_run(uow, token, created.run_id, 60, NOW)
    with pytest.raises(Forbidden):  # another run's token
        end_run(uow, run_token("run_other", created.session), created.run_id, RunStatus.FAILED, NOW)


@dataclass
class DeliveringLauncher:
    """A launcher whose runs get an outbox row, as ``OutboxLauncher``'s do, without its thread."""

    lease_seconds: int = 30
    delivers: bool = True
    wakes: int = 0

    def wake(self):
        self.wakes += 1


class Receiver:
    """A ``LaunchSender`` that refuses the first ``failures`` launches, then keeps what it is sent."""

    def __init__(self, failures=0):
        self.failures, self.received = failures, []

    def send(self, launch: Launch):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("receiver down")
        self.received.append(launch)


def test_a_launch_commits_with_its_run_and_is_delivered_after_a_failed_attempt(uow):
    uow.environments.add(ENV, "hash", NOW)
    delivering = DeliveringLauncher()
    created = create(uow, delivering)
    clock = [NOW]
    receiver = Receiver(failures=1)
    policy = DispatchPolicy(base_delay_seconds=1, jitter=lambda: 1.0)
    dispatcher = Dispatcher(lambda: MemoryUnitOfWork(uow.db), receiver, 30, policy, clock=lambda: clock[0])

    assert delivering.wakes == 1 and list(uow.db.launches) == ["msg_" + created.run_id.removeprefix("run_")]
    assert dispatcher.run_due() == 1  # refused: due again a second later
    assert dispatcher.run_due() == 0 and receiver.received == []
    clock[0] = NOW + timedelta(seconds=1)
    assert dispatcher.run_due() == 1

    [launch] = receiver.received
    assert (launch.run_id, launch.reason, launch.session["id"]) == (
        created.run_id,
        "initial",
        created.session.friendly_id,
    )
    assert uow.db.launches[launch.id].delivered_at == clock[0]


def test_a_one_time_token_is_accepted_once(uow):
    assert spend_one_time_token(uow, "hash", 2_000_000_000, 1_800_000_000.5)
    assert not spend_one_time_token(uow, "hash", 2_000_000_000, 1_800_000_001)


def test_a_durable_stream_is_created_appended_by_a_producer_once_closed_and_read(uow):
    spec = durable.CreateSpec(content_type="application/json", body=b'[{"n": 1}]')
    producer = ProducerHeaders("writer", 0, 0)
    closing = durable.AppendRequest(b'{"n": 2}', "application/json", close=True, producer=producer)

    created = durable.create_stream(uow, ENV.id, "events", spec, 1_000)
    again = durable.create_stream(uow, ENV.id, "events", spec, 1_001)
    appended = durable.append(uow, ENV.id, "events", closing, 2_000, GroupCommit())
    retried = durable.append(uow, ENV.id, "events", closing, 2_001, GroupCommit())  # a duplicate
    result = durable.read(uow, uow, ENV.id, "events", 0, 10, 3_000)

    assert (created.is_new, created.tail, again.is_new) == (True, 1, False)
    assert (appended.tail, appended.closed, retried.tail) == (2, True, 2)
    assert [body.replace(" ", "") for body in result.bodies] == ['[{"n":1}]', '[{"n":2}]']
    assert result.closed_at_tail and uow.woken == [created.stream.key]
    with pytest.raises(durable.StreamClosed):
        durable.append(
            uow, ENV.id, "events", durable.AppendRequest(b"[3]", "application/json"), 4_000, GroupCommit()
        )


def test_a_batch_of_durable_appends_is_judged_in_order_and_written_once(uow):
    """Each append of a batch gets what it would have got alone, one after the other."""
    durable.create_stream(uow, ENV.id, "log", durable.CreateSpec(content_type="application/json"), 1_000)
    json_append = functools.partial(durable.AppendRequest, content_type="application/json")
    producer = ProducerHeaders("writer", 0, 0)
    batch = [
        json_append(b"[1, 2]"),
        json_append(b'{"n": 3}', producer=producer),
        json_append(b'{"n": 4}', producer=producer),  # the same producer seq again: a duplicate
        json_append(b"[5]", content_type="text/plain"),
        json_append(b"[6]", stream_seq="b"),
        json_append(b"[7]", stream_seq="a"),  # not after "b"
        json_append(b"", close=True),
        json_append(b"[8]"),
    ]

    outcomes = durable.append_batch(uow, ENV.id, "log", [(request, 2_000) for request in batch])
    result = durable.read(uow, uow, ENV.id, "log", 0, 10, 3_000)

    tails_or_errors = [type(o).__name__ if isinstance(o, Exception) else o.tail for o in outcomes]
    assert tails_or_errors == [1, 2, 2, "Conflict", 3, "Conflict", 3, "StreamClosed"]
    assert outcomes[2].verdict.status == "duplicate" and outcomes[6].closed
    assert [body.replace(" ", "") for body in result.bodies] == ["[1,2]", '[{"n":3}]', "[6]"]
    assert result.closed_at_tail


def test_each_append_of_a_batch_is_judged_at_its_own_arrival(uow):
    spec = durable.CreateSpec(
        content_type="text/plain", expires_at="1970-01-01T00:00:01.500Z", expires_at_ms=1_500
    )
    durable.create_stream(uow, ENV.id, "brief", spec, 1_000)
    before, after = durable.AppendRequest(b"a", "text/plain"), durable.AppendRequest(b"b", "text/plain")

    outcomes = durable.append_batch(uow, ENV.id, "brief", [(before, 1_400), (after, 1_600)])

    assert outcomes[0].tail == 1 and isinstance(outcomes[1], NotFound)


def test_closing_a_stream_then_closing_it_again_renews_its_ttl_to_the_last(uow):
    durable.create_stream(
        uow, ENV.id, "done", durable.CreateSpec(content_type="text/plain", ttl_seconds=60), 1_000
    )
    last = durable.AppendRequest(b"x", "text/plain", close=True)
    again = durable.AppendRequest(b"", "text/plain", close=True)

    outcomes = durable.append_batch(uow, ENV.id, "done", [(last, 2_000), (again, 3_000)])

    assert [(o.tail, o.closed) for o in outcomes] == [(1, True), (1, True)]
    with uow:
        assert uow.ds.get(ENV.id, "done").last_access_ms == 3_000


def test_readers_can_share_one_session_lookup(uow, launcher):
    session = create(uow, launcher).session
    asked = []

    class Recording(SingleFlight):
        def do(self, key, compute):
            asked.append(key)
            return super().do(key, compute)

    shared = channels.resolve_channel_for_read(uow, SECRET_KEY, session.friendly_id, "out", Recording())

    assert shared == channels.resolve_channel_for_read(uow, SECRET_KEY, session.friendly_id, "out")
    assert asked == [(SECRET_KEY.environment.id, session.friendly_id)]
