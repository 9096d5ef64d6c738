"""What an operator does to a running service: rotate a key, scrape metrics, read the access log.

One gunicorn with two workers on SQLite serves the module, logging JSON lines, with its metrics on
a port of their own; waits are bounded polls, never timed asserts.
"""

import json
import threading
import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.sse_client import subscribe
from tests.integration.sessions_api import session_body
from tests.servers import LiveServer, free_port

POLL_SECONDS = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    database_url = f"sqlite:///{tmp_path_factory.mktemp('operations')}/sessions.db"
    metrics_port = free_port()
    env = {"SESSIONS_METRICS_PORT": str(metrics_port), "LOG_FORMAT": "json"}
    with LiveServer(database_url, workers=2, env=env) as live:
        live.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        yield live


@pytest.fixture(scope="module")
def key(server):
    return server.create_env(f"ops-{uuid.uuid4().hex[:8]}")["apiKey"]


def scrape(server):
    """Every sample of the metrics endpoint: ``{(name, frozenset(labels)): value}``."""
    text = requests.get(server.metrics_url, timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for_sample(server, name, accept, **labels):
    """Scrape until the sample's value is accepted; return the last value seen."""
    deadline = time.monotonic() + POLL_SECONDS
    while True:
        seen = value(scrape(server), name, **labels)
        if accept(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def access_entries(server):
    """The JSON access-log lines the service wrote so far."""
    lines = server.log_path.read_text(errors="replace").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [entry for entry in entries if entry["logger"] == "session_web.access"]


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def create_session(server, key):
    url = f"{server.base_url}/api/v1/sessions"
    response = requests.post(url, json=session_body(), headers=bearer(key), timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_status(url, headers, status):
    """GET ``url`` until it answers ``status`` (both workers' key caches lapse within the poll)."""
    deadline = time.monotonic() + POLL_SECONDS
    while True:
        answer = requests.get(url, headers=headers, timeout=10).status_code
        if answer == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def test_after_rotate_key_the_old_key_is_refused_the_new_key_works_and_sessions_stay(server):
    slug = f"rot-{uuid.uuid4().hex[:8]}"
    old_key = server.create_env(slug)["apiKey"]
    session = create_session(server, old_key)
    appended = requests.post(
        f"{server.base_url}/realtime/v1/sessions/{session['id']}/in/append",
        data="hello",
        headers=bearer(old_key),
        timeout=10,
    )
    assert appended.status_code == 200
    session_url = f"{server.base_url}/api/v1/sessions/{session['id']}"

    new_key = json.loads(server.cli("env", "rotate-key", slug, "--json").stdout)["apiKey"]

    assert wait_for_status(session_url, bearer(old_key), 401) == 401
    assert requests.get(session_url, headers=bearer(new_key), timeout=10).status_code == 200
    records_url = f"{server.base_url}/realtime/v1/sessions/{session['id']}/in/records"
    records = requests.get(records_url, headers=bearer(new_key), timeout=10)
    assert [r["data"] for r in records.json()["records"]] == ["hello"]


def wait_for_access_entries(server, request_id):
    """The access lines of ``request_id``, once there are some: a line is written as its response ends."""
    deadline = time.monotonic() + POLL_SECONDS
    while True:
        entries = [e for e in access_entries(server) if e["request_id"] == request_id]
        if entries or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)


APPEND_ROUTE = "/realtime/v1/sessions/<session_ref>/<io>/append"


def test_metrics_move_with_requests_appends_and_live_reads(server, key):
    before = scrape(server)
    session = create_session(server, key)
    channel = f"{server.base_url}/realtime/v1/sessions/{session['id']}/in"
    read = {}
    reader = threading.Thread(
        target=lambda: read.update(
            result=subscribe(channel, {**bearer(key), "Timeout-Seconds": "10"}, stop_after_records=2)
        )
    )
    reader.start()
    open_readers = wait_for_sample(
        server, "sessions_sse_subscribers", lambda v: v > value(before, "sessions_sse_subscribers")
    )

    for body in ("aaa", "bbbb"):
        answer = requests.post(f"{channel}/append", data=body, headers=bearer(key), timeout=10)
        assert answer.status_code == 200
    reader.join(POLL_SECONDS)
    closed_readers = wait_for_sample(
        server, "sessions_sse_subscribers", lambda v: v == value(before, "sessions_sse_subscribers")
    )
    after = scrape(server)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert len(read["result"].records) == 2, read["result"]
    assert moved("sessions_http_requests_total", method="POST", route="/api/v1/sessions", status="201") == 1
    assert moved("sessions_http_requests_total", method="POST", route=APPEND_ROUTE, status="200") == 2
    assert moved("sessions_http_request_duration_seconds_count", method="POST", route=APPEND_ROUTE) == 2
    assert moved("sessions_channel_appends_total", io="in") == 2
    assert moved("sessions_channel_appended_bytes_total", io="in") == 7
    assert moved("sessions_delivery_latency_seconds_count") >= 1
    assert open_readers == value(before, "sessions_sse_subscribers") + 1
    assert closed_readers == value(before, "sessions_sse_subscribers")
    assert ("sessions_db_pool_checked_out", frozenset()) in after


def test_metrics_are_not_served_on_the_public_port(server):
    assert requests.get(f"{server.base_url}/metrics", timeout=10).status_code == 404
    assert requests.get(server.metrics_url, timeout=10).status_code == 200


def test_each_request_is_one_json_access_line_without_token_or_query(server, key):
    session = create_session(server, key)
    url = f"{server.base_url}/api/v1/sessions/{session['id']}?secret=hunter2"

    response = requests.get(url, headers={**bearer(key), "X-Request-Id": "e2e-access-1"}, timeout=10)

    entries = wait_for_access_entries(server, "e2e-access-1")
    assert response.headers["X-Request-Id"] == "e2e-access-1"
    assert [(e["method"], e["route"], e["status"], e["bytes"]) for e in entries] == [
        ("GET", "/api/v1/sessions/<session_ref>", 200, len(response.content))
    ]
    assert entries[0]["duration_ms"] >= 0
    log = server.log_path.read_text(errors="replace")
    assert key not in log
    assert "hunter2" not in log


def test_with_log_format_json_gunicorns_own_lines_are_json_too(server):
    lines = [
        line for line in server.log_path.read_text(errors="replace").splitlines() if "Booting worker" in line
    ]

    entries = [json.loads(line) for line in lines]
    assert len(entries) == 2  # one per worker, each written once
    assert {entry["logger"] for entry in entries} == {"gunicorn.error"}
