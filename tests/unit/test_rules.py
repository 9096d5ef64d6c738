"""Pure domain rules: ids, status, scopes, cursors, durations."""

from datetime import datetime, timedelta

import pytest

from session_core.cursors import SessionKey, decode_cursor, encode_cursor
from session_core.errors import BadRequest, Conflict, SessionClosed
from session_core.ids import generate_cuid, is_session_friendly_id, session_friendly_id
from session_core.models import (
    Environment,
    EnvironmentType,
    SessionStatus,
    refuse_if_not_active,
    session_status,
)
from session_core.schemas import parse_duration_ms
from session_core.scopes import Principal, PrincipalKind, can, super_scopes
from session_core.services.sessions import REUSE_REFUSED, existing_session_resources
from tests.unit.factories import make_session

ENV = Environment("env1", "dev", EnvironmentType.DEVELOPMENT, "org", "proj", "tr_dev_x")
NOW = datetime(2026, 11, 25, 12, 0, 0)


def token(*scopes: str) -> Principal:
    return Principal(ENV, PrincipalKind.PUBLIC_JWT, scopes)


def test_cuids_are_25_lowercase_base36_characters_starting_with_c_and_without_underscores():
    cuids = [generate_cuid() for _ in range(1000)]

    assert all(len(c) == 25 and c[0] == "c" and c.isalnum() and c == c.lower() for c in cuids)
    assert len(set(cuids)) == 1000


def test_cuids_sort_by_creation_millisecond():
    assert generate_cuid(now_ms=1_000) < generate_cuid(now_ms=2_000)


def test_friendly_ids_are_recognised_by_prefix_only():
    assert is_session_friendly_id(session_friendly_id(generate_cuid()))
    assert not is_session_friendly_id("chat-123")
    assert not is_session_friendly_id("Session_abc")


def test_status_is_closed_when_closed_even_if_expired():
    session = make_session(closed_at=NOW, expires_at=NOW - timedelta(days=1))

    assert session_status(session, NOW) is SessionStatus.CLOSED


def test_status_is_expired_only_after_expires_at():
    session = make_session(expires_at=NOW)

    assert session_status(session, NOW) is SessionStatus.ACTIVE
    assert session_status(session, NOW + timedelta(milliseconds=1)) is SessionStatus.EXPIRED


def test_secret_keys_pass_every_check():
    principal = Principal(ENV, PrincipalKind.PRIVATE)

    assert can(principal, "admin", {"sessions": ["anything"]}, super_scopes("admin"))


def test_a_token_needs_the_scope_for_one_of_the_resources():
    principal = token("read:sessions:chat-1")

    assert can(principal, "read", {"sessions": ["session_x", "chat-1"]}, super_scopes("read"))
    assert not can(principal, "read", {"sessions": ["session_x", None]}, super_scopes("read"))
    assert not can(principal, "write", {"sessions": ["chat-1"]}, super_scopes("write"))


def test_super_scopes_grant_every_resource_of_the_action():
    for scope in ("read:sessions", "read:all", "admin"):
        assert can(token(scope), "read", {"sessions": ["x"]}, super_scopes("read"))
    assert not can(token("write:all"), "read", {"sessions": ["x"]}, super_scopes("read"))


def test_a_token_without_scopes_or_resources_is_denied():
    assert not can(token(), "read", {"sessions": ["x"]}, super_scopes("read"))
    assert not can(token("read:sessions:x"), "read", {}, super_scopes("read"))


def test_a_general_type_scope_covers_every_value_of_that_type():
    assert can(token("read:tasks"), "read", {"tasks": [None]}, super_scopes("read"))
    assert not can(token("read:tasks:foo"), "read", {"tasks": [None]}, super_scopes("read"))


def test_cursors_round_trip_and_order_like_the_rows_they_name():
    key = SessionKey(datetime(2026, 1, 2, 3, 4, 5, 678000), "cabc")

    assert decode_cursor(encode_cursor(key)) == key
    assert SessionKey(NOW, "a") < SessionKey(NOW, "b") < SessionKey(NOW + timedelta(milliseconds=1), "a")


@pytest.mark.parametrize("junk", ["", "!!!", "bm90IGpzb24", encode_cursor(SessionKey(NOW, "x"))[:-3] + "zzz"])
def test_a_forged_cursor_is_a_bad_request(junk):
    with pytest.raises(BadRequest):
        decode_cursor(junk)


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("1h", 3_600_000),
        ("7d", 604_800_000),
        ("90m", 5_400_000),
        ("1h30m", 5_400_000),
        ("2 days", 172_800_000),
    ],
)
def test_durations_parse_like_parse_duration(text, millis):
    assert parse_duration_ms(text) == millis


@pytest.mark.parametrize("text", ["", "abc", "1x", "h", "1h junk", "9" * 40 + "y"])
def test_unparsable_durations_are_ignored(text):
    assert parse_duration_ms(text) is None


def test_an_existing_session_is_handed_to_writers_of_either_name_or_of_its_own_task():
    session = make_session(external_id="chat-1", task_identifier="other")
    resources = existing_session_resources(session)

    assert can(token("write:sessions:chat-1"), "write", resources, super_scopes("write"))
    assert can(token(f"write:sessions:{session.friendly_id}"), "write", resources, super_scopes("write"))
    assert can(token("write:tasks:other"), "write", resources, super_scopes("write"))
    assert not can(token("write:tasks:agent"), "write", resources, super_scopes("write"))
    assert not can(token("read:sessions:chat-1"), "write", resources, super_scopes("write"))


def test_writes_to_a_closed_or_expired_session_are_refused_with_one_message_each():
    closed = make_session(closed_at=NOW - timedelta(seconds=1))
    expired = make_session(expires_at=NOW - timedelta(seconds=1))

    refuse_if_not_active(make_session(), NOW, "append to")
    with pytest.raises(SessionClosed, match="^Cannot append to a closed session$"):
        refuse_if_not_active(closed, NOW, "append to")
    with pytest.raises(SessionClosed, match="^Cannot trim an expired session$"):
        refuse_if_not_active(expired, NOW, "trim")


def test_create_refuses_an_ended_session_under_its_externalid_with_its_own_message():
    closed = make_session(closed_at=NOW - timedelta(seconds=1))
    expired = make_session(expires_at=NOW - timedelta(seconds=1))

    with pytest.raises(Conflict, match="^Session is closed; use a different externalId") as refused:
        refuse_if_not_active(closed, NOW, "reuse", Conflict, REUSE_REFUSED)
    assert not isinstance(refused.value, SessionClosed)  # 409 on the wire, not SessionClosed's 400
    with pytest.raises(Conflict, match="^Session is expired; use a different externalId"):
        refuse_if_not_active(expired, NOW, "reuse", Conflict, REUSE_REFUSED)
