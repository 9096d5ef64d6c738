"""One contract for the sessions repository and the channel store, on every implementation.

The same tests run on the in-memory fakes the unit tests use, on SQLite and on PostgreSQL: what the
use cases rely on holds alike everywhere, so a unit test on the fakes says something about production.
``make_uow`` (tests/integration/conftest.py) makes units of work on each implementation in turn.
"""

import uuid
from datetime import datetime, timedelta

import pytest

from session_core.channels.records import (
    Append,
    GuardedAppend,
    NewRecord,
    OpenSession,
    SeqNumMismatch,
    StreamPosition,
    channel_key,
)
from session_core.errors import Conflict, InvalidInput, NotFound
from tests.unit.factories import make_session

NOW = 1_800_000_000_000
TTL = 60_000
MOMENT = datetime(2026, 6, 1)


@pytest.fixture
def key():
    return f"env/sessions/{uuid.uuid4().hex}/in"


@pytest.fixture
def environment_id():
    return f"env-{uuid.uuid4().hex[:12]}"


def insert(make_uow, **overrides):
    with make_uow() as uow:
        session = uow.sessions.insert_or_get(make_session(**overrides))
        uow.commit()
    return session


def append(make_uow, key, *bodies, now_ms=NOW, **options):
    with make_uow() as uow:
        ack = uow.channels.append(key, [NewRecord(body) for body in bodies], now_ms=now_ms, **options)
        uow.commit()
    return ack


def bodies(make_uow, key, start_seq=0):
    with make_uow() as uow:
        return [(record.seq_num, record.body) for record in uow.channels.read(key, start_seq, 100)]


# Sessions


def test_a_session_is_found_by_either_id_in_its_own_environment_only(make_uow, environment_id):
    session = insert(make_uow, environment_id=environment_id, external_id="chat-1")

    with make_uow() as uow:
        by_friendly_id = uow.sessions.get_by_ref(environment_id, session.friendly_id)
        by_external_id = uow.sessions.get_by_ref(environment_id, "chat-1")
        elsewhere = uow.sessions.get_by_ref("another-environment", "chat-1")
        unknown = uow.sessions.get_by_ref(environment_id, "chat-2")

    assert by_friendly_id == by_external_id == session
    assert elsewhere is None and unknown is None


def test_inserting_a_taken_external_id_returns_the_session_holding_it(make_uow, environment_id):
    first = insert(make_uow, environment_id=environment_id, external_id="chat")

    second = insert(make_uow, environment_id=environment_id, external_id="chat", trigger_config={"v": 2})

    assert second.id == first.id
    assert second.trigger_config == {"v": 2}  # refreshed while open


def test_a_closed_session_keeps_its_first_close(make_uow, environment_id):
    session = insert(make_uow, environment_id=environment_id)

    with make_uow() as uow:
        first = uow.sessions.close_if_open(session.id, "done", MOMENT)
        again = uow.sessions.close_if_open(session.id, "again", MOMENT + timedelta(hours=1))
        uow.commit()

    assert (first.closed_at, first.closed_reason) == (MOMENT, "done")
    assert again == first


def test_a_run_claim_holds_only_on_the_version_and_run_it_read(make_uow, environment_id):
    session = insert(make_uow, environment_id=environment_id)

    with make_uow() as uow:
        claimed = uow.sessions.claim_run(session.id, "run_a", 0)
        stale = uow.sessions.claim_run(session.id, "run_b", 0)
        wrong_run = uow.sessions.claim_run(session.id, "run_c", 1, "run_other")
        handed_over = uow.sessions.claim_run(session.id, "run_d", 1, "run_a")
        uow.commit()
    with make_uow() as uow:
        stored = uow.sessions.get(session.id)

    assert (claimed, stale, wrong_run, handed_over) == (True, False, False, True)
    assert (stored.current_run_id, stored.current_run_version) == ("run_d", 2)


def test_an_external_id_held_by_another_session_cannot_be_taken(make_uow, environment_id):
    insert(make_uow, environment_id=environment_id, external_id="taken")
    other = insert(make_uow, environment_id=environment_id)

    with pytest.raises(Conflict), make_uow() as uow:
        uow.sessions.update_fields(other.id, {"external_id": "taken"}, MOMENT)


def test_getting_an_unknown_session_id_is_not_found(make_uow):
    with pytest.raises(NotFound), make_uow() as uow:
        uow.sessions.get("no-such-session")


# Channels


def test_seq_nums_start_at_zero_and_follow_on(make_uow, key):
    first = append(make_uow, key, "a", "b")
    second = append(make_uow, key, "c")

    assert (first.start.seq_num, first.end.seq_num, second.start.seq_num) == (0, 2, 2)
    assert second.tail == StreamPosition(3, NOW)
    assert bodies(make_uow, key) == [(0, "a"), (1, "b"), (2, "c")]
    assert bodies(make_uow, key, 2) == [(2, "c")]
    with make_uow() as uow:
        assert uow.channels.tail(key) == StreamPosition(3, NOW)
        records, tail = uow.channels.read_with_tail(key, 1, 1)
    assert ([r.body for r in records], tail) == (["b"], StreamPosition(3, NOW))


def test_a_read_ends_with_the_record_that_reaches_its_byte_bound(make_uow, key):
    append(make_uow, key, "aaaa", "bbbb", "cccc")

    with make_uow() as uow:
        within_five = uow.channels.read(key, 0, 10, max_bytes=5)
        within_four = uow.channels.read(key, 0, 10, max_bytes=4)
        records, tail = uow.channels.read_with_tail(key, 1, 10, max_bytes=4)

    assert [r.body for r in within_five] == ["aaaa", "bbbb"]
    assert [r.body for r in within_four] == ["aaaa"]
    assert ([r.body for r in records], tail.seq_num) == (["bbbb"], 3)


def test_a_new_channel_is_empty_with_its_tail_at_zero(make_uow, key):
    with make_uow() as uow:
        assert uow.channels.tail(key) == StreamPosition(0, 0)
        assert uow.channels.read_with_tail(key, 0, 10) == ([], StreamPosition(0, 0))


def test_a_repeated_part_id_answers_with_the_first_position_until_it_expires(make_uow, key):
    first = append(make_uow, key, "a", part_id="p", part_id_ttl_ms=TTL)
    retried = append(make_uow, key, "a", now_ms=NOW + 1, part_id="p", part_id_ttl_ms=TTL)
    expired = append(make_uow, key, "a", now_ms=NOW + TTL + 1, part_id="p", part_id_ttl_ms=TTL)

    assert retried.is_duplicate and retried.start == first.start
    assert not expired.is_duplicate and expired.start.seq_num == 1
    assert bodies(make_uow, key) == [(0, "a"), (1, "a")]


def test_a_group_answers_each_append_as_if_alone(make_uow, key):
    with make_uow() as uow:
        acks = uow.channels.append_group(
            key,
            [Append([NewRecord("a")], "p"), Append([NewRecord("b")], "p"), Append([NewRecord("c")])],
            now_ms=NOW,
        )
        uow.commit()

    assert [(ack.start.seq_num, ack.is_duplicate) for ack in acks] == [(0, False), (0, True), (1, False)]
    assert bodies(make_uow, key) == [(0, "a"), (1, "c")]


def test_match_seq_num_must_be_the_tail(make_uow, key):
    append(make_uow, key, "a")

    with pytest.raises(SeqNumMismatch) as mismatch:
        append(make_uow, key, "b", match_seq_num=0)
    matched = append(make_uow, key, "b", match_seq_num=1)

    assert mismatch.value.tail == 1
    assert matched.start.seq_num == 1


def test_timestamps_never_go_back_and_a_read_can_start_from_one(make_uow, key):
    append(make_uow, key, "a", now_ms=NOW)
    late = append(make_uow, key, "b", now_ms=NOW - 10)  # arrival clocks may go back; stamps do not
    append(make_uow, key, "c", now_ms=NOW + 5)

    with make_uow() as uow:
        at_now = uow.channels.first_seq_at(key, NOW + 1)
        past_the_end = uow.channels.first_seq_at(key, NOW + 100)

    assert late.start.timestamp == NOW
    assert (at_now, past_the_end) == (2, 3)


def test_a_trim_deletes_below_its_point_and_seq_nums_go_on(make_uow, key):
    append(make_uow, key, "a", "b", "c")

    with make_uow() as uow:
        uow.channels.trim(key, 2)
        uow.commit()
    after = append(make_uow, key, "d")

    assert after.start.seq_num == 3
    assert bodies(make_uow, key) == [(2, "c"), (3, "d")]


def test_a_guarded_append_writes_only_while_the_session_is_open(make_uow, environment_id):
    session = insert(make_uow, environment_id=environment_id, external_id=f"chat-{uuid.uuid4().hex[:6]}")
    guard = OpenSession(environment_id, session.external_id, MOMENT)

    with make_uow() as uow:
        written = uow.channels.append_while_open(guard, "in", [Append([NewRecord("a")])], now_ms=NOW)
        by_other_name = uow.channels.append_while_open(
            OpenSession(environment_id, session.friendly_id, MOMENT),
            "in",
            [Append([NewRecord("x")])],
            now_ms=NOW,
        )
        uow.sessions.close_if_open(session.id, None, MOMENT)
        uow.commit()
    with make_uow() as uow:
        refused = uow.channels.append_while_open(guard, "in", [Append([NewRecord("b")])], now_ms=NOW)

    assert written.session == session and [a.start.seq_num for a in written.acks] == [0]
    assert by_other_name.session == session and [a.start.seq_num for a in by_other_name.acks] == [1]
    assert bodies(make_uow, channel_key(environment_id, session.external_id, "in")) == [(0, "a"), (1, "x")]
    assert refused.acks is None and refused.session.closed_at == MOMENT


def test_a_guarded_append_to_a_missing_session_writes_nothing(make_uow, environment_id):
    with make_uow() as uow:
        missing = uow.channels.append_while_open(
            OpenSession(environment_id, "session_nosuchsession0000", MOMENT),
            "in",
            [Append([NewRecord("a")])],
            now_ms=NOW,
        )
        uow.commit()

    assert missing == GuardedAppend(None, None)
    assert bodies(make_uow, channel_key(environment_id, "session_nosuchsession0000", "in")) == []


def test_an_append_without_records_is_invalid_input(make_uow, key):
    with pytest.raises(InvalidInput), make_uow() as uow:
        uow.channels.append(key, [], now_ms=NOW)
