"""The Durable Streams protocol rules: offsets, TTL, cursors, JSON mode, idempotent producers."""

import random

import pytest

from session_core.durable.rules import (
    CURSOR_EPOCH_MS,
    CURSOR_INTERVAL_MS,
    ProducerHeaders,
    ProducerState,
    creation_content_type,
    etag,
    format_offset,
    is_expired,
    is_text_type,
    json_array,
    json_messages,
    json_record_body,
    judge_producer,
    normalize_content_type,
    parse_expires_at,
    parse_offset,
    parse_producer,
    parse_sub_offset,
    parse_ttl,
    response_cursor,
)
from session_core.errors import BadRequest


def test_offsets_are_fixed_width_sortable_and_round_trip():
    offsets = [format_offset(n) for n in (0, 1, 9, 10, 123_456, 10**16 + 5)]
    assert offsets == sorted(offsets)
    assert len({len(o) for o in offsets}) == 1
    assert format_offset(1) == "0000000000000000_0000000000000001"
    assert [parse_offset(o) for o in offsets] == [0, 1, 9, 10, 123_456, 10**16 + 5]
    assert "-1" not in offsets and "now" not in offsets


@pytest.mark.parametrize("text", ["", "-1", "now", "12", "1_2_3", "a_1", "1,2", "1 _2", "1_2 ", "_1"])
def test_offsets_we_never_mint_do_not_parse(text):
    assert parse_offset(text) is None


@pytest.mark.parametrize("text", ["+3600", "03600", "3.6e3", "-1", "1.5", "", " 1", "1e3"])
def test_a_ttl_is_a_plain_decimal_integer(text):
    with pytest.raises(BadRequest):
        parse_ttl(text)
    assert parse_ttl("0") == 0 and parse_ttl("3600") == 3600


def test_expires_at_takes_rfc3339_with_z_or_an_offset():
    assert parse_expires_at("2030-01-01T00:00:00Z") == parse_expires_at("2030-01-01T01:00:00+01:00")
    assert parse_expires_at("2030-01-01T00:00:00.500Z") % 1000 == 500
    with pytest.raises(BadRequest):
        parse_expires_at("not-a-timestamp")


def test_sub_offsets_are_plain_decimal_integers():
    assert parse_sub_offset("0") == 0 and parse_sub_offset("17") == 17
    for bad in ("", "-1", "01", "1.0", "abc"):
        with pytest.raises(BadRequest):
            parse_sub_offset(bad)


def test_expiry_is_absolute_or_sliding_at_millisecond_precision():
    assert not is_expired(None, None, 0, 10**12)
    assert is_expired(None, 1000, 0, 1000) and not is_expired(None, 1000, 0, 999)
    assert is_expired(2, None, 5000, 7000) and not is_expired(2, None, 5000, 6999)


def test_content_types_compare_by_media_type_and_pick_the_sse_encoding():
    assert normalize_content_type("Application/JSON; charset=utf-8") == "application/json"
    assert creation_content_type("") is None and creation_content_type("garbage") is None
    assert creation_content_type("text/plain; charset=utf-8") == "text/plain; charset=utf-8"
    assert is_text_type("text/csv") and is_text_type("application/json; charset=utf-8")
    assert not is_text_type("application/octet-stream") and not is_text_type("image/png")


def test_a_cursor_is_the_interval_or_strictly_past_what_the_client_echoed():
    now = CURSOR_EPOCH_MS + 100 * CURSOR_INTERVAL_MS + 5
    assert response_cursor(None, now) == "100"
    assert response_cursor("7", now) == "100"
    assert response_cursor("junk", now) == "100"
    rng = random.Random(1)
    for echoed in ("100", "150"):
        assert int(response_cursor(echoed, now, rng)) > int(echoed)


def test_the_etag_changes_when_the_read_reaches_a_closed_tail():
    assert etag("a", "-1", "x", False) != etag("a", "-1", "x", True)
    assert etag("a", "-1", "x", False) != etag("b", "-1", "x", False)


def test_json_mode_flattens_one_array_level():
    assert json_messages(b'{"a": 1}', allow_empty=False) == ['{"a":1}']
    assert json_messages(b"[[1, 2], [3, 4]]", allow_empty=False) == ["[1,2]", "[3,4]"]
    assert json_messages(b"[]", allow_empty=True) == []
    for bad, allow in ((b"[]", False), (b"{", True), (b"NaN", True)):
        with pytest.raises(BadRequest):
            json_messages(bad, allow_empty=allow)


def test_json_records_concatenate_into_one_array():
    bodies = [json_record_body(["1", '"x"']), json_record_body([]), json_record_body(["[2]"])]
    assert json_array(bodies) == '[1,"x",[2]]'
    assert json_array([]) == "[]"


def test_producer_headers_come_all_together_as_safe_integers():
    assert parse_producer(None, None, None) is None
    assert parse_producer("p", "1", "2") == ProducerHeaders("p", 1, 2)
    for parts in (
        ("p", "1", None),
        ("", "0", "0"),
        ("p", "-1", "0"),
        ("p", "0", "1.5"),
        ("p", "0", str(2**53)),
    ):
        with pytest.raises(BadRequest):
            parse_producer(*parts)


@pytest.mark.parametrize(
    ("state", "epoch", "seq", "status"),
    [
        (None, 0, 0, "accepted"),
        (None, 0, 1, "sequence_gap"),
        (ProducerState(1, 4), 0, 9, "stale_epoch"),
        (ProducerState(1, 4), 2, 0, "accepted"),
        (ProducerState(1, 4), 2, 1, "invalid_epoch_seq"),
        (ProducerState(1, 4), 1, 3, "duplicate"),
        (ProducerState(1, 4), 1, 4, "duplicate"),
        (ProducerState(1, 4), 1, 5, "accepted"),
        (ProducerState(1, 4), 1, 6, "sequence_gap"),
    ],
)
def test_the_producer_state_machine(state, epoch, seq, status):
    verdict = judge_producer(state, ProducerHeaders("p", epoch, seq))
    assert verdict.status == status
    if status == "accepted":
        assert verdict.state == ProducerState(epoch, seq)
    if status == "duplicate":
        assert verdict.last_seq == 4
    if status == "stale_epoch":
        assert verdict.current_epoch == 1
    if status == "sequence_gap":
        assert verdict.expected_seq == (0 if state is None else state.last_seq + 1)
