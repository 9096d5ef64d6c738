"""The pgoutput v1 decoder and the text-format value parsers, on hand-built payloads."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_core.replication.decode import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    DecodeError,
    Delete,
    Ignored,
    Insert,
    Relation,
    Truncate,
    Update,
    decode_message,
    decode_row,
    format_lsn,
    parse_lsn,
    parse_text_array,
    parse_value,
)
from tests.unit import pgoutput

WHEN = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
COLUMNS = [("id", pgoutput.TEXT), ("n", pgoutput.INT4), ("big", pgoutput.TEXT)]


def test_relation_message_lists_columns_with_type_oids_and_key_flags():
    message = decode_message(pgoutput.relation(16384, COLUMNS))

    assert isinstance(message, Relation)
    assert (message.relid, message.namespace, message.name, message.replica_identity) == (
        16384,
        "public",
        "sessions",
        "f",
    )
    assert [(c.name, c.type_oid, c.is_key) for c in message.columns] == [
        ("id", 25, True),
        ("n", 23, False),
        ("big", 25, False),
    ]


def test_begin_and_commit_carry_lsns_and_commit_time_to_the_microsecond():
    begin = decode_message(pgoutput.begin(0x16_0000_0010, WHEN, xid=4242))
    commit = decode_message(pgoutput.commit(0x16_0000_0010, 0x16_0000_0040, WHEN))

    assert begin == Begin(final_lsn=0x16_0000_0010, commit_time=WHEN, xid=4242)
    assert commit == Commit(commit_lsn=0x16_0000_0010, end_lsn=0x16_0000_0040, commit_time=WHEN)


def test_insert_update_and_delete_tuples_keep_nulls_text_and_unchanged_toast_markers():
    insert = decode_message(pgoutput.insert(1, ["a", None, "x"]))
    update = decode_message(pgoutput.update(1, ["a", "2", ...], old=["a", "1", "x"]))
    keyless = decode_message(pgoutput.update(1, ["a", "3", "y"]))
    delete = decode_message(pgoutput.delete(1, ["a", "3", "y"]))

    assert insert == Insert(1, ("a", None, "x"))
    assert update == Update(1, ("a", "1", "x"), ("a", "2", UNCHANGED_TOAST))
    assert keyless == Update(1, None, ("a", "3", "y"))
    assert delete == Delete(1, ("a", "3", "y"))


def test_update_with_a_key_only_old_tuple_is_decoded():
    message = decode_message(pgoutput.update(1, ["b", "1", "x"], old=["a", None, None], old_kind="K"))

    assert message == Update(1, ("a", None, None), ("b", "1", "x"))


def test_truncate_lists_relids_and_type_origin_and_messages_are_ignored():
    assert decode_message(pgoutput.truncate([1, 2], options=1)) == Truncate((1, 2), 1)
    assert decode_message(b"Y" + b"\0\0\0\x19public\0text\0") == Ignored("type")
    assert decode_message(b"O" + b"\0" * 8 + b"origin\0") == Ignored("origin")


@pytest.mark.parametrize(
    "payload",
    [b"", b"Z", b"I\0\0\0\x01N\0\x01t\0\0\0\x09abc", b"I\0\0\0\x01X\0\0", b"R\0\0\0\x01public"],
    ids=["empty", "unknown-type", "value-past-end", "bad-marker", "unterminated-name"],
)
def test_malformed_payloads_raise_decode_error(payload):
    with pytest.raises(DecodeError):
        decode_message(payload)


def test_decode_row_takes_an_unchanged_toast_value_from_the_old_tuple():
    relation = decode_message(pgoutput.relation(1, COLUMNS))

    row = decode_row(relation, ("a", "2", UNCHANGED_TOAST), old=("a", "1", "large value"))

    assert row == {"id": "a", "n": 2, "big": "large value"}


def test_decode_row_refuses_an_unchanged_toast_value_it_cannot_fill():
    relation = decode_message(pgoutput.relation(1, COLUMNS))

    with pytest.raises(DecodeError, match="big"):
        decode_row(relation, ("a", "2", UNCHANGED_TOAST))


def test_decode_row_names_the_column_whose_value_does_not_parse():
    relation = decode_message(pgoutput.relation(1, COLUMNS))

    with pytest.raises(DecodeError, match="column n"):
        decode_row(relation, ("a", "two", "x"))


@pytest.mark.parametrize(
    ("text", "oid", "expected"),
    [
        ("hello", 25, "hello"),
        ("42", 23, 42),
        ("-9007199254740993", 20, -9007199254740993),
        ("t", 16, True),
        ("f", 16, False),
        ("2026-11-25 12:00:00", 1114, datetime(2026, 11, 25, 12, 0, 0)),
        ("2026-11-25 12:00:00.5", 1114, datetime(2026, 11, 25, 12, 0, 0, 500000)),
        ("2026-11-25 12:00:00.123", 1114, datetime(2026, 11, 25, 12, 0, 0, 123000)),
        ("2026-11-25 14:00:00.1+02", 1184, datetime(2026, 11, 25, 12, 0, 0, 100000, tzinfo=UTC)),
        ('{a,"b, c"}', 1009, ["a", "b, c"]),
        ('{"x": [1, {"y": null}], "é": "😀"}', 3802, {"x": [1, {"y": None}], "é": "😀"}),
        ("null", 3802, None),
        ("(1,2)", 600, "(1,2)"),
    ],
)
def test_values_are_converted_by_type_oid(text, oid, expected):
    assert parse_value(text, oid) == expected


def test_infinite_timestamps_are_refused_rather_than_guessed():
    with pytest.raises(DecodeError, match="infinity"):
        parse_value("infinity", 1114)


def test_binary_values_are_refused_because_the_stream_is_text_format():
    with pytest.raises(DecodeError):
        parse_value(b"\x00\x01", 23)


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("{}", []),
        ("{a}", ["a"]),
        ("{a,b,c}", ["a", "b", "c"]),
        ('{"b, c","{d}"," e "}', ["b, c", "{d}", " e "]),
        ('{NULL,"NULL",null,"null"}', [None, "NULL", None, "null"]),
        ('{"a\\"b","c\\\\d"}', ['a"b', "c\\d"]),
        ('{"",x}', ["", "x"]),
        ("{é,😀,日本語}", ["é", "😀", "日本語"]),
        ("[0:1]={a,b}", ["a", "b"]),
    ],
)
def test_text_array_literals_are_parsed(literal, expected):
    assert parse_text_array(literal) == expected


MALFORMED_ARRAYS = ["", "a", "{a", '{"a}', "{{a},{b}}", "{a,,b}", "{a,}", '{"a"b}', "{a\\b}"]


@pytest.mark.parametrize("literal", MALFORMED_ARRAYS)
def test_malformed_array_literals_raise_decode_error(literal):
    with pytest.raises(DecodeError):
        parse_text_array(literal)


def _pg_array_literal(items: list[str | None]) -> str:
    """Quote every element the way array_out does for elements that need it."""
    parts = []
    for item in items:
        if item is None:
            parts.append("NULL")
        else:
            parts.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


PG_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"))


@given(st.lists(st.one_of(st.none(), PG_TEXT)))
def test_any_quoted_array_literal_round_trips(items):
    assert parse_text_array(_pg_array_literal(items)) == items


def test_lsns_format_and_parse_like_postgresql():
    assert format_lsn(0x16_B374D848) == "16/B374D848"
    assert parse_lsn("16/B374D848") == 0x16_B374D848
    assert parse_lsn(format_lsn(2**64 - 1)) == 2**64 - 1
    with pytest.raises(DecodeError):
        parse_lsn("16B374D848")
