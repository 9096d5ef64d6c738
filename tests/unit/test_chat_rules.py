"""The chat helper's pure parts: what it reads from ``.in`` records and what it writes for clients."""

import json

from session_client import Record
from session_client.chat import close_chunk, message_chunk, parse_input, user_message


def in_record(seq: int, data) -> Record:
    return Record(seq, data, "p", [], 0, is_control=False)


def test_a_message_as_the_sdk_sends_it_is_read_as_the_users_text():
    data = json.dumps(
        {
            "kind": "message",
            "payload": {
                "message": {
                    "id": "u1",
                    "role": "user",
                    "parts": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
                },
                "chatId": "c",
                "trigger": "submit-message",
                "metadata": {"user": 1},
            },
        }
    )
    record = in_record(4, data)

    message = user_message(record, parse_input(record))

    assert message is not None
    assert (message.seq_num, message.id, message.text, message.payload["metadata"]) == (
        4,
        "u1",
        "hi there",
        {"user": 1},
    )


def test_message_chunk_writes_what_the_sdk_writes_and_reads_back():
    record = in_record(0, message_chunk("hello", "chat-1", "m1"))
    chunk = parse_input(record)

    assert chunk is not None and chunk["payload"]["trigger"] == "submit-message"
    assert user_message(record, chunk).text == "hello"


def test_an_object_appended_as_json_is_an_input_chunk_too():
    record = in_record(
        1, {"kind": "message", "payload": {"trigger": "submit-message", "message": {"parts": []}}}
    )

    assert user_message(record, parse_input(record)).text == ""


def test_close_stop_and_actions_carry_no_user_message():
    for data in (
        close_chunk("c"),
        json.dumps({"kind": "stop"}),
        json.dumps({"kind": "message", "payload": {"trigger": "action", "action": {}}}),
    ):
        record = in_record(2, data)
        chunk = parse_input(record)
        assert chunk is not None and user_message(record, chunk) is None


def test_what_is_no_input_chunk_is_ignored():
    for data in ("plain text", "[1]", json.dumps({"payload": {}}), None, 7):
        assert parse_input(in_record(3, data)) is None
