"""The console's pages and files, and the live read's ``tail_offset``, in-process on both databases."""

import json

import pytest

from session_web.console import CONTENT_SECURITY_POLICY
from tests.integration.sessions_api import bearer

CONSOLE_PATHS = [
    "/",
    "/sign-in",
    "/sessions/session_abc",
    "/sessions/an%20external/id",
    "/console/static/session.js",
    "/console/static/console.css",
    "/console/static/missing.js",
]


@pytest.mark.parametrize("path", CONSOLE_PATHS)
def test_every_console_response_carries_the_security_headers(client, path):
    with client.get(path) as response:
        assert response.status_code == (404 if "missing" in path else 200)
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in response.headers


def test_pages_hold_no_inline_script_or_style_and_escape_the_session_name(client):
    page = client.get("/sessions/<script>alert(1)</script>").get_data(as_text=True)

    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "<style" not in page and " style=" not in page
    assert [line.strip() for line in page.splitlines() if "<script" in line] == [
        '<script type="module" src="/console/static/session.js"></script>'
    ]


def first_batch(client, ref, io, key, query="", headers=None):
    """The records of the first ``batch`` event of a live read (the read is closed after it)."""
    response = client.get(
        f"/realtime/v1/sessions/{ref}/{io}{query}",
        headers={**bearer(key), "Timeout-Seconds": "30", **(headers or {})},
        buffered=False,
    )
    try:
        for chunk in response.response:
            text = chunk.decode() if isinstance(chunk, bytes) else chunk
            if text.startswith("event: batch"):
                return [record["seq_num"] for record in json.loads(text.split("data: ", 1)[1])["records"]]
    finally:
        response.close()
    raise AssertionError("the read ended without a batch")


def test_tail_offset_starts_that_many_records_before_the_tail(client, env, make_session):
    ref = make_session()["id"]
    for n in range(5):
        client.post(f"/realtime/v1/sessions/{ref}/out/append", data=f"r{n}", headers=bearer(env.api_key))

    assert first_batch(client, ref, "out", env.api_key, "?tail_offset=2") == [3, 4]
    assert first_batch(client, ref, "out", env.api_key, "?tail_offset=50") == [0, 1, 2, 3, 4]
    resumed = first_batch(client, ref, "out", env.api_key, "?tail_offset=1", {"Last-Event-ID": "1"})
    assert resumed == [2, 3, 4]


@pytest.mark.parametrize("value", ["-1", "x", "1.5", "99999999999999999999"])
def test_a_bad_tail_offset_is_a_400(client, env, make_session, value):
    ref = make_session()["id"]

    response = client.get(f"/realtime/v1/sessions/{ref}/out?tail_offset={value}", headers=bearer(env.api_key))

    assert response.status_code == 400
    assert response.get_data(as_text=True) == "tail_offset must be a non-negative integer"
