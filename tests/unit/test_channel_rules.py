"""Pure rules of the channel store: keys, timestamps and what an append may hold."""

import pytest

from session_core.channels.append_rules import assign_timestamps, validate_append
from session_core.channels.records import MAX_KEY_BYTES, Append, NewRecord, channel_key, stream_name
from session_core.errors import InvalidInput


def test_a_channel_key_is_the_environment_then_the_stream_name():
    assert stream_name("chat-1", "out") == "sessions/chat-1/out"
    assert channel_key("env1", "chat-1", "out") == "env1/sessions/chat-1/out"


def test_the_same_external_id_in_two_environments_names_two_channels():
    assert channel_key("env1", "chat", "in") != channel_key("env2", "chat", "in")


def test_records_without_timestamps_get_arrival_time():
    assert assign_timestamps([NewRecord("a"), NewRecord("b")], previous=0, now_ms=100) == [100, 100]


def test_client_timestamps_are_kept_but_capped_at_arrival_time():
    records = [NewRecord("a", timestamp=40), NewRecord("b", timestamp=70), NewRecord("c", timestamp=500)]

    assert assign_timestamps(records, previous=0, now_ms=100) == [40, 70, 100]


def test_timestamps_never_decrease():
    records = [NewRecord("a", timestamp=80), NewRecord("b", timestamp=20), NewRecord("c")]

    assert assign_timestamps(records, previous=50, now_ms=100) == [80, 80, 100]
    assert assign_timestamps([NewRecord("d")], previous=150, now_ms=100) == [150]


def test_an_append_needs_a_record():
    with pytest.raises(InvalidInput):
        validate_append("k", Append([]))


@pytest.mark.parametrize(
    "record",
    [
        NewRecord("a\x00b"),
        NewRecord("\udc80"),
        NewRecord("ok", headers=[["name", "nul\x00"]]),
        NewRecord("ok", headers=[["\ud800", "v"]]),
    ],
)
def test_text_postgres_cannot_store_is_refused(record):
    with pytest.raises(InvalidInput, match="Record 0"):
        validate_append("k", Append([record]))


def test_unicode_and_empty_bodies_are_accepted():
    validate_append("k", Append([NewRecord("héllo ✓ 🚀"), NewRecord("", headers=[["", "trim"]])], "pärt ✓"))


def test_a_huge_channel_key_is_refused():
    with pytest.raises(InvalidInput):
        validate_append("k" * (MAX_KEY_BYTES + 1), Append([NewRecord("a")]))


@pytest.mark.parametrize("part_id", ["a\x00b", "\ud800"])
def test_a_part_id_postgres_cannot_store_is_refused(part_id):
    with pytest.raises(InvalidInput, match="part id"):
        validate_append("k", Append([NewRecord("a")], part_id))
