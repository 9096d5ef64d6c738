"""Pure rules of the realtime surface: URL and header parsing, envelopes, control records, S2 input."""

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_core.envelopes import envelope, is_command_record, is_turn_complete, open_envelope, part_id
from session_core.errors import BadRequest, Forbidden, InvalidInput, PayloadTooLarge
from session_core.models import ChannelRecord, Environment, EnvironmentType
from session_core.scopes import Principal, PrincipalKind, authorize_stream, stream_token_scopes
from session_core.services.channels import stream_token_ttl
from session_core.services.s2_streams import session_of_key
from session_web.realtime import parse_io, parse_timeout_seconds, records_item, records_json, resume_seq
from session_web.routing import check_request_text
from session_web.s2 import parse_append_input
from session_web.sse import live_wait_seconds

ENV = Environment("env1", "dev", EnvironmentType.DEVELOPMENT, "org", "proj", "tr_dev_secret")


def test_only_in_and_out_are_channels():
    assert parse_io("in") == "in" and parse_io("out") == "out"
    with pytest.raises(BadRequest, match="Params Error"):
        parse_io("sideways")


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, 60), ("1", 1), (" 600 ", 600)],
)
def test_timeout_seconds_within_bounds(header, expected):
    assert parse_timeout_seconds(header, 60) == expected


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("soon", "Invalid timeout seconds"),
        ("1.5", "Invalid timeout seconds"),
        ("0", "Timeout seconds must be greater than 0"),
        ("-3", "Timeout seconds must be greater than 0"),
        ("601", "Timeout seconds must be less than 600"),
    ],
)
def test_timeout_seconds_out_of_bounds(header, message):
    with pytest.raises(BadRequest, match=message):
        parse_timeout_seconds(header, 60)


@pytest.mark.parametrize(
    ("last_event_id", "start"),
    [(None, 0), ("", 0), ("41", 42), ("41-3", 42), (" 41 ", 42), ("abc", 0), ("-1", 0), ("1,2", 0)],
)
def test_resume_starts_after_a_plain_last_event_id(last_event_id, start):
    """A plain seq_num is the last record seen (inclusive): the read resumes after it."""
    assert resume_seq(last_event_id) == start


@pytest.mark.parametrize(
    ("last_event_id", "start"),
    [("1,1,47", 1), ("12,3,400", 12), ("0,0,0", 0), (" 7,2,90 ", 7), ("12,3,400,5", 0), ("12,x,4", 0)],
)
def test_resume_starts_at_the_id_we_emit(last_event_id, start):
    """Our ``id:`` (``next_seq,count,bytes``) names the next seq_num (exclusive): resume at it."""
    assert resume_seq(last_event_id) == start


def test_an_envelope_keeps_the_body_unparsed_and_compact():
    assert envelope('{"a": 1}', "p1") == '{"data":"{\\"a\\": 1}","id":"p1"}'
    assert envelope("é\x00", "p") == '{"data":"é\\u0000","id":"p"}'


def test_an_envelope_opens_to_data_and_id():
    assert open_envelope(ChannelRecord(0, 0, envelope("x", "p1"))) == ("x", "p1")
    assert open_envelope(ChannelRecord(0, 0, '{"data":{"k":1},"id":"abc"}')) == ({"k": 1}, "abc")
    assert open_envelope(ChannelRecord(0, 0, "not json")) == ("not json", "")
    assert open_envelope(ChannelRecord(0, 0, '{"other":1}')) == ('{"other":1}', "")


def test_generated_part_ids_look_like_nanoid_7():
    ids = {part_id() for _ in range(50)}

    assert all(len(p) == 7 for p in ids) and len(ids) == 50


def test_command_records_have_one_header_with_an_empty_name():
    assert is_command_record(ChannelRecord(0, 0, "", [["", "trim"]]))
    assert not is_command_record(ChannelRecord(0, 0, "", [["trigger-control", "turn-complete"]]))
    assert not is_command_record(ChannelRecord(0, 0, "x"))


def test_turn_complete_by_header_or_legacy_chunk():
    assert is_turn_complete(ChannelRecord(0, 0, "", [["trigger-control", "turn-complete"]]))
    assert is_turn_complete(ChannelRecord(0, 0, '{"data":{"type":"trigger:turn-complete"},"id":"a"}'))
    assert is_turn_complete(ChannelRecord(0, 0, envelope('{"type":"trigger:turn-complete"}', "a")))
    assert not is_turn_complete(ChannelRecord(0, 0, envelope('{"type":"text-delta"}', "a")))
    assert not is_turn_complete(ChannelRecord(0, 0, "", [["trigger-control", "upgrade-required"]]))


def test_records_items_skip_commands_and_flatten_envelopes():
    assert records_item(ChannelRecord(4, 0, "", [["", "trim"]])) is None
    assert records_item(ChannelRecord(5, 0, "", [["trigger-control", "turn-complete"]])) == {
        "data": "",
        "id": "",
        "seqNum": 5,
        "timestamp": 0,
        "headers": [["trigger-control", "turn-complete"]],
    }
    assert records_item(ChannelRecord(6, 0, envelope("hi", "p"))) == {
        "data": "hi",
        "id": "p",
        "seqNum": 6,
        "timestamp": 0,
    }


def expected_records(records):
    return {"records": [item for item in map(records_item, records) if item is not None]}


@pytest.mark.parametrize(
    "body",
    [
        envelope('{"n":1}', "p1"),
        envelope('quote " backslash \\ tab \t é ✓ 🚀 nul \x00', "p2"),
        '{"data": {"n": 1}, "id": "y", "extra": 1}',
        '{"data":"x","id":7}',
        '{"data":"x"}',
        '{"data": 123456789012345678901234567890, "id": "big"}',
        '{"data": "\\ud800 lone", "id": "surrogate"}',
        '{"data":"unterminated',
        "plain text",
        "",
        "[1,2]",
    ],
)
def test_the_records_body_is_the_records_items_whatever_the_stored_body(body):
    records = [ChannelRecord(3, 0, body), ChannelRecord(4, 0, body, [["h", "v"]])]

    assert json.loads(records_json(records)) == expected_records(records)


def test_numbers_json_cannot_carry_come_out_as_null():
    records = [ChannelRecord(3, 0, '{"data": [NaN, Infinity], "id": "p"}')]

    assert json.loads(records_json(records)) == {
        "records": [{"data": [None, None], "id": "p", "seqNum": 3, "timestamp": 0}]
    }


@given(st.text(), st.text())
def test_every_stored_envelope_reads_back_as_its_records_item(data, part):
    records = [ChannelRecord(9, 0, envelope(data, part))]

    assert json.loads(records_json(records)) == expected_records(records)


def test_command_records_are_left_out_of_the_records_body():
    records = [ChannelRecord(4, 0, "", [["", "trim"]]), ChannelRecord(5, 0, envelope("x", "p"))]

    assert json.loads(records_json(records)) == {
        "records": [{"data": "x", "id": "p", "seqNum": 5, "timestamp": 0}]
    }


def test_a_stream_token_reaches_its_stream_only():
    token = Principal(ENV, PrincipalKind.PUBLIC_JWT, tuple(stream_token_scopes("sessions/a/out")))
    session_token = Principal(ENV, PrincipalKind.PUBLIC_JWT, ("write:sessions:a", "admin:sessions"))

    authorize_stream(token, "sessions/a/out")
    authorize_stream(Principal(ENV, PrincipalKind.PRIVATE), "sessions/b/in")
    with pytest.raises(Forbidden):
        authorize_stream(token, "sessions/a/in")
    with pytest.raises(Forbidden):
        authorize_stream(session_token, "sessions/a/out")


def test_s2_append_input_parses_records_and_conditions():
    records, match, fence = parse_append_input(
        {"records": [{"body": "a", "headers": [["h", "v"]], "timestamp": 5}, {}], "match_seq_num": 3}, False
    )

    assert [(r.body, r.headers, r.timestamp) for r in records] == [("a", [["h", "v"]], 5), ("", [], None)]
    assert (match, fence) == (3, None)


def test_s2_append_input_decodes_base64():
    b64 = base64.b64encode("héllo".encode()).decode()

    records, _, _ = parse_append_input({"records": [{"body": b64, "headers": [[b64, b64]]}]}, True)

    assert (records[0].body, records[0].headers) == ("héllo", [["héllo", "héllo"]])


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"records": []},
        {"records": [1]},
        {"records": [{"body": 1}]},
        {"records": [{"headers": [["only-a-name"]]}]},
        {"records": [{"timestamp": -1}]},
        {"records": [{}], "match_seq_num": "0"},
        {"records": [{}] * 1001},
    ],
)
def test_s2_append_input_refuses_malformed_batches(data):
    with pytest.raises(InvalidInput):
        parse_append_input(data, False)


def test_s2_append_input_refuses_undecodable_base64():
    with pytest.raises(InvalidInput):
        parse_append_input({"records": [{"body": "%%%"}]}, True)


def test_s2_append_input_refuses_a_batch_over_one_mebibyte():
    with pytest.raises(PayloadTooLarge):
        parse_append_input({"records": [{"body": "x" * 600_000}, {"body": "y" * 600_000}]}, False)


def test_an_s2_token_never_outlives_the_token_that_asked_for_it():
    now = 1_000_000
    jwt = Principal(ENV, PrincipalKind.PUBLIC_JWT, ("write:sessions:x",), expires_at=now + 3600)

    assert stream_token_ttl(jwt, now) == 3600
    assert (
        stream_token_ttl(Principal(ENV, PrincipalKind.PUBLIC_JWT, (), expires_at=now + 10**6), now)
        == 24 * 3600
    )
    assert stream_token_ttl(Principal(ENV, PrincipalKind.PRIVATE), now) == 24 * 3600


@pytest.mark.parametrize(
    ("requested", "expected"), [(None, 60), (0, 0), (30, 30), (600, 600), (601, 600), (10**9, 600)]
)
def test_a_live_read_waits_what_it_asks_for_else_the_default_and_never_past_600_seconds(requested, expected):
    assert live_wait_seconds(requested, 60) == expected


@pytest.mark.parametrize(
    ("key", "owner"),
    [
        ("env1/sessions/chat-1/in", ("env1", "chat-1")),
        ("env1/sessions/a/b/out", ("env1", "a/b")),
        ("env1/sessions/session_x/out", ("env1", "session_x")),
        ("env1/sessions//in", None),
        ("env1/sessions/chat-1/up", None),
        ("env1/scratch/notes", None),
        ("env1", None),
    ],
)
def test_a_stream_key_maps_back_to_the_session_whose_channel_it_is(key, owner):
    assert session_of_key(key) == owner


@pytest.mark.parametrize(
    ("url_args", "headers", "message"),
    [
        ({"session_ref": "\x00"}, [], "Params Error"),
        ({"session_ref": "chat", "name": "a\ud800"}, [], "Params Error"),
        ({"session_ref": "chat"}, ["ok", "a\x00b"], "Header values must not contain the NUL character"),
    ],
)
def test_text_no_database_can_hold_is_refused_in_any_path_parameter_or_header(url_args, headers, message):
    with pytest.raises(BadRequest, match=f"^{message}$"):
        check_request_text(url_args, headers)


def test_storable_path_parameters_and_headers_pass():
    check_request_text({"session_ref": "chat/ü 😀", "io": "in", "number": 3}, ["Bearer x", "1,2,3"])
