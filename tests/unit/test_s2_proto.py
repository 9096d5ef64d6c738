"""The protobuf S2's client sends for bytes records, and the store's view of command records."""

import pytest

from session_core.channels.records import AppendAck, NewRecord, StreamPosition
from session_core.errors import InvalidInput, PayloadTooLarge
from session_core.models import ChannelRecord
from session_core.s2 import body_bytes, session_channel_of, stored_record, trim_point
from session_web import s2_proto
from session_web.s2_proto import decode_append_input, encode_append_ack


def varint(value):
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number, payload):
    """A length-delimited field."""
    return bytes([number << 3 | 2]) + varint(len(payload)) + payload


TRIM_TO_2 = field(2, field(1, b"") + field(2, b"trim")) + field(3, (2).to_bytes(8, "big"))


def test_an_append_input_with_a_trim_command_decodes():
    stamped = b"\x08\xac\x02" + field(3, b"hello")  # timestamp 300, then the body
    data = field(1, TRIM_TO_2) + field(1, stamped) + b"\x10\x05" + field(3, b"fence-1")

    parsed = decode_append_input(data)

    assert [(r.headers, r.body, r.timestamp) for r in parsed.records] == [
        ([(b"", b"trim")], (2).to_bytes(8, "big"), None),
        ([], b"hello", 300),
    ]
    assert (parsed.match_seq_num, parsed.fencing_token) == (5, "fence-1")


def test_unknown_fields_are_skipped():
    fixed64 = bytes([9 << 3 | 1]) + b"\x00" * 8

    assert decode_append_input(fixed64 + field(1, field(3, b"x"))).records[0].body == b"x"


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x80", b"\x0b"])
def test_malformed_protobuf_is_invalid_input(data):
    with pytest.raises(InvalidInput):
        decode_append_input(data)


def test_an_append_ack_encodes_three_positions():
    ack = AppendAck(StreamPosition(1, 2), StreamPosition(300, 4), StreamPosition(300, 4))

    assert encode_append_ack(ack) == (
        field(1, b"\x08\x01\x10\x02") + field(2, b"\x08\xac\x02\x10\x04") + field(3, b"\x08\xac\x02\x10\x04")
    )


def test_a_trim_command_is_stored_as_digits_and_read_back_as_8_bytes():
    record = stored_record([(b"", b"trim")], (1234).to_bytes(8, "big"), None)

    assert (record.body, record.headers) == ("1234", [["", "trim"]])
    assert body_bytes(ChannelRecord(0, 0, record.body, record.headers)) == (1234).to_bytes(8, "big")
    assert body_bytes(ChannelRecord(0, 0, "1234")) == b"1234"


@pytest.mark.parametrize(
    ("headers", "body"),
    [([(b"", b"trim")], b"\x00\x01"), ([], b"\xff\xfe"), ([(b"\xff", b"v")], b"ok")],
)
def test_what_the_store_cannot_keep_is_refused(headers, body):
    with pytest.raises(InvalidInput):
        stored_record(headers, body, None)


def counting_records(monkeypatch):
    """Count how many records the decoder builds, so a test sees where it stopped."""
    built = []
    real = s2_proto._record

    def record(data, budget):
        built.append(1)
        return real(data, budget)

    monkeypatch.setattr(s2_proto, "_record", record)
    return built


def test_a_body_of_200000_empty_records_is_refused_at_the_1001st(monkeypatch):
    built = counting_records(monkeypatch)

    with pytest.raises(InvalidInput, match="A batch holds 1 to 1000 records"):
        decode_append_input(field(1, b"") * 200_000)

    assert len(built) == 1000


def test_a_record_of_a_million_empty_headers_is_refused_at_the_header_limit(monkeypatch):
    headers = []
    real = s2_proto._header
    monkeypatch.setattr(s2_proto, "_header", lambda data: headers.append(1) or real(data))

    with pytest.raises(InvalidInput, match="at most 10000 headers"):
        decode_append_input(field(1, field(2, b"") * 1_000_000))

    assert len(headers) == 10_001


def test_a_batch_is_refused_once_its_metered_bytes_pass_1_mib(monkeypatch):
    built = counting_records(monkeypatch)
    big = field(1, field(3, b"x" * 65_536))  # a record with a 64 KiB body

    with pytest.raises(PayloadTooLarge, match="1 MiB"):
        decode_append_input(big * 32)

    assert len(built) == 16  # the 16th record passes 1 MiB; the 16 after it are never decoded


def test_a_batch_trims_to_its_furthest_trim_command_but_never_past_the_command_itself():
    trim = ["", "trim"]
    records = [NewRecord("x"), NewRecord("3", [trim]), NewRecord("99", [trim])]
    assert trim_point(records, first_seq=10) == 12  # the second command sits at 12: it stays readable
    assert trim_point([NewRecord("3", [trim])], first_seq=10) == 3
    assert trim_point([NewRecord("x")], first_seq=0) is None


@pytest.mark.parametrize(
    ("name", "channel"),
    [
        ("sessions/chat-1/in", ("chat-1", "in")),
        ("sessions/a/b/out", ("a/b", "out")),
        ("sessions//in", None),
        ("sessions/chat-1/sideways", None),
        ("other/chat-1/in", None),
    ],
)
def test_a_stream_name_names_a_session_channel_only_in_the_sessions_prefix(name, channel):
    assert session_channel_of(name) == channel
