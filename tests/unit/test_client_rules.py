"""The Python client's pure parts: record parsing, the SSE decoder, the resume cursor, retry rules,
run-token claims; and its import boundary (httpx only, never the server's stack)."""

import ast
import base64
import json
from pathlib import Path

import httpx
import pytest
from session_client import ControlRecord, DataRecord, Retries, token_claims
from session_client._core import (
    Call,
    Cursor,
    Reconnect,
    RetryableStatus,
    SSEDecoder,
    SSEEvent,
    channel_path,
    response_of,
    should_retry_error,
    should_retry_response,
)
from session_client._errors import RunFinalError, SessionClosedError, status_error
from session_client._models import record_from_page, record_from_s2
from session_client._requests import append_call, write_call

CLIENT = Path(__file__).parents[2] / "clients" / "python" / "session_client"


def test_the_client_imports_nothing_of_the_servers_stack():
    allowed = {"httpx", "session_client", "__future__"}
    stdlib = {"asyncio", "base64", "binascii", "collections", "contextlib", "dataclasses", "datetime"}
    stdlib |= {"json", "random", "threading", "time", "typing", "urllib", "uuid", "logging", "itertools"}
    stdlib |= {"signal", "os", "sys"}
    imported = set()
    for path in CLIENT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert imported - allowed - stdlib == set()


def test_a_data_record_opens_its_envelope():
    record = record_from_s2({"seq_num": 4, "timestamp": 9, "body": '{"data":{"type":"start"},"id":"p1"}'})

    assert record is not None
    assert (record.seq_num, record.data, record.part_id, record.timestamp) == (4, {"type": "start"}, "p1", 9)
    assert not record.is_control and record.control is None


def test_a_string_appended_reads_back_as_the_string():
    record = record_from_s2({"seq_num": 0, "timestamp": 1, "body": '{"data":"{\\"a\\":1}","id":"x"}'})

    assert record is not None and record.data == '{"a":1}'


def test_a_control_record_has_headers_and_no_data():
    headers = [["trigger-control", "session-closed"], ["session-closed-reason", "done"]]
    live = record_from_s2({"seq_num": 7, "timestamp": 1, "headers": headers})
    paged = record_from_page({"data": "", "id": "", "seqNum": 7, "headers": headers, "timestamp": 1})

    assert live == paged
    assert live is not None and live.is_control and live.data is None and live.is_session_closed
    assert live.header("session-closed-reason") == "done"


def test_command_records_are_not_records_to_readers():
    assert record_from_s2({"seq_num": 3, "timestamp": 1, "headers": [["", "trim"]], "body": "x"}) is None


def test_a_body_that_is_no_envelope_is_its_own_data():
    record = record_from_s2({"seq_num": 1, "timestamp": 1, "body": "plain"})

    assert record is not None and (record.data, record.part_id) == ("plain", None)


def test_the_sse_decoder_joins_data_lines_and_skips_comments():
    decoder = SSEDecoder()
    lines = ["event: batch", ": comment", "data: a", "data:b", "", "", "data: x", ""]

    events = [event for event in map(decoder.feed, lines) if event is not None]

    assert events == [SSEEvent("batch", "a\nb"), SSEEvent("message", "x")]


def batch(*seqs: int, headers=None) -> SSEEvent:
    records = [
        {"seq_num": seq, "timestamp": 0, "body": json.dumps({"data": seq, "id": f"p{seq}"})} for seq in seqs
    ]
    if headers:
        records.append({"seq_num": seqs[-1] + 1, "timestamp": 0, "headers": headers})
    return SSEEvent("batch", json.dumps({"records": records}))


def test_the_cursor_never_delivers_a_record_twice_and_resumes_after_the_last():
    cursor = Cursor(None)

    first = cursor.take(batch(0, 1))
    again = cursor.take(batch(1, 2))

    assert [r.seq_num for r in first + again] == [0, 1, 2]
    assert cursor.headers()["Last-Event-ID"] == "2"
    assert "Last-Event-ID" not in Cursor(None).headers()


def test_the_cursor_steps_over_command_records_without_delivering_them():
    cursor = Cursor(None)

    records = cursor.take(batch(0, headers=[["", "trim"]]))

    assert [r.seq_num for r in records] == [0] and cursor.last_seq == 1


def test_the_cursor_ends_at_the_session_closed_marker():
    cursor = Cursor(4)
    closed = [["trigger-control", "session-closed"], ["session-closed-reason", ""]]

    records = cursor.take(batch(5, headers=closed))

    assert [r.seq_num for r in records] == [5, 6] and records[-1].is_session_closed and cursor.closed
    assert cursor.take(batch(7)) == []


def test_an_error_event_asks_for_a_reconnect_and_pings_are_nothing():
    with pytest.raises(Reconnect):
        Cursor(None).take(SSEEvent("error", "shutting down"))
    assert Cursor(None).take(SSEEvent("ping", '{"timestamp": 1}')) == []


def response(status: int, headers=None, body=None) -> httpx.Response:
    request = httpx.Request("POST", "http://x/")
    return httpx.Response(status, headers=headers, json=body, request=request)


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_are_retried(status):
    assert should_retry_response(response(status), Call("POST", "/"))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422, 500])
def test_other_statuses_are_not(status):
    assert not should_retry_response(response(status), Call("POST", "/"))


def test_a_response_marked_not_to_retry_is_never_retried():
    assert not should_retry_response(response(503, {"x-should-retry": "false"}), Call("GET", "/"))


def test_a_request_that_is_not_idempotent_is_retried_only_when_unsent():
    call = Call("POST", "/", idempotent=False)
    request = httpx.Request("POST", "http://x/")

    assert should_retry_error(httpx.ConnectError("refused", request=request), call)
    assert not should_retry_error(httpx.RemoteProtocolError("dropped", request=request), call)
    assert not should_retry_response(response(502), call)
    assert should_retry_error(httpx.RemoteProtocolError("dropped", request=request), Call("POST", "/"))


def test_backoff_grows_with_jitter_and_stays_bounded():
    retries = Retries(max_retries=10, base_delay=1.0, max_delay=8.0)

    delays = [retries.delay(n) for n in range(10)]

    assert 0.5 <= delays[0] <= 1.0 and 4.0 <= delays[3] <= 8.0
    assert max(delays) <= 8.0
    assert retries.delay(0, response(429, {"retry-after": "3"})) == 3.0


def test_a_refused_live_read_waits_as_told_else_at_most_two_seconds():
    retries = Retries(base_delay=1.0, max_delay=8.0)
    busy = RetryableStatus(status_error(response(503, {"retry-after": "5"}, {"error": "busy"})))

    assert retries.reconnect_delay(0, response_of(busy)) == 5.0
    assert all(retries.reconnect_delay(n, response_of(Reconnect("gone"))) <= 2.0 for n in range(10))


def test_appends_keep_strings_raw_and_send_json_through_the_records_route():
    raw, raw_batch = append_call("/c", "hello", "p1", None)
    obj, obj_batch = append_call("/c", {"a": 1}, "p2", {"h": "v"})

    assert (raw.path, raw.content, raw.headers, raw_batch) == (
        "/c/append",
        "hello",
        {"X-Part-Id": "p1"},
        False,
    )
    assert obj.path == "/c/records" and obj_batch and obj.headers == {"X-Part-Id": "p2"}
    assert obj.json == {"records": [{"data": {"a": 1}, "id": "p2", "headers": [["h", "v"]]}]}


def test_a_write_carries_data_and_control_records_and_the_trim():
    call = write_call(
        "/c", [DataRecord({"type": "finish"}), ControlRecord({"trigger-control": "turn-complete"})], 5, "p"
    )

    assert call.json == {
        "records": [{"data": {"type": "finish"}}, {"headers": [["trigger-control", "turn-complete"]]}],
        "trimBefore": 5,
    }


def test_a_part_id_too_long_is_refused_before_sending():
    with pytest.raises(ValueError):
        append_call("/c", "x", "p" * 257, None)


def test_the_channel_path_escapes_any_external_id():
    assert channel_path("a/b c", "in") == "/realtime/v1/sessions/a%2Fb%20c/in"
    with pytest.raises(ValueError):
        channel_path("x", "sideways")  # type: ignore[arg-type]


def jwt(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part(claims)}.sig"


def test_a_run_tokens_claims_name_its_run_and_a_secret_key_has_none():
    assert token_claims(jwt({"runId": "run_1", "sessionId": "session_1"}))["runId"] == "run_1"
    assert token_claims("tr_dev_secret") == {}
    assert token_claims("a.!!!.c") == {}


def test_errors_map_to_the_tree():
    closed = status_error(response(400, body={"ok": False, "error": "Cannot append to a closed session"}))
    final = status_error(
        response(409, {"x-should-retry": "false"}, {"error": "Run is EXPIRED", "code": "run_final"})
    )

    assert isinstance(closed, SessionClosedError) and closed.message == "Cannot append to a closed session"
    assert isinstance(final, RunFinalError) and final.code == "run_final" and final.status_code == 409
