"""Request ids, access-log lines, readiness and pool metrics on the app in-process (SQLite and PostgreSQL)."""

import io
import json
import logging
import threading

import pytest
from prometheus_client import REGISTRY

from session_core.config import Settings
from session_core.db.migrate import upgrade_database
from session_core.logs import JsonFormatter
from session_web.app import create_app
from session_web.health import TIMEOUT, run_checks
from tests.integration.sessions_api import bearer, session_body
from tests.servers import free_port

ACCESS_LOGGER = "session_web.access"


def request_ids(responses):
    return [response.headers.get("X-Request-Id") for response in responses]


def access_lines(caplog, request_id):
    return [r for r in caplog.records if r.name == ACCESS_LOGGER and r.fields["request_id"] == request_id]


def test_every_response_carries_a_generated_request_id(client, env):
    responses = [
        client.get("/healthz"),
        client.get("/no/such/route"),
        client.get("/api/v1/sessions"),
        client.post("/api/v1/sessions", json=session_body(), headers=bearer(env.api_key)),
    ]

    ids = request_ids(responses)
    assert [r.status_code for r in responses] == [200, 404, 401, 201]
    assert all(i is not None and len(i) == 32 for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_client_request_id_is_returned_as_sent(client):
    response = client.get("/api/v1/sessions", headers={"X-Request-Id": "trace-7f3a:1"})

    assert response.headers.get_all("X-Request-Id") == ["trace-7f3a:1"]


def test_an_unacceptable_client_request_id_is_replaced(client):
    response = client.get("/healthz", headers={"X-Request-Id": "x" * 129})

    assert response.headers["X-Request-Id"] != "x" * 129


def test_an_access_line_has_the_fields_and_never_the_token_or_query(client, env, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    created = client.post("/api/v1/sessions", json=session_body(), headers=bearer(env.api_key)).get_json()

    response = client.get(
        f"/api/v1/sessions/{created['id']}?token=hunter2-query-secret",
        headers={**bearer(env.api_key), "X-Request-Id": "line-test-1"},
    )
    response.close()

    [line] = access_lines(caplog, "line-test-1")
    assert line.fields == {
        "method": "GET",
        "route": "/api/v1/sessions/<session_ref>",
        "status": 200,
        "duration_ms": line.fields["duration_ms"],
        "bytes": len(response.data),
        "request_id": "line-test-1",
    }
    assert line.getMessage() == (
        f"request method=GET route=/api/v1/sessions/<session_ref> status=200"
        f" duration_ms={line.fields['duration_ms']} bytes={len(response.data)} request_id=line-test-1"
    )
    everything = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert env.api_key not in everything
    assert "hunter2" not in everything
    assert created["id"] not in line.getMessage()


def test_an_unmatched_route_is_logged_as_unmatched(client, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    client.get("/secret-path/abc", headers={"X-Request-Id": "unmatched-1"}).close()

    [line] = access_lines(caplog, "unmatched-1")
    assert (line.fields["route"], line.fields["status"]) == ("unmatched", 404)


def test_an_sse_read_is_logged_once_its_stream_closes(client, env, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    created = client.post("/api/v1/sessions", json=session_body(), headers=bearer(env.api_key)).get_json()
    channel = f"/realtime/v1/sessions/{created['id']}/in"
    client.post(f"{channel}/append", data="hello", headers=bearer(env.api_key)).close()

    response = client.get(
        channel,
        headers={**bearer(env.api_key), "Timeout-Seconds": "1", "X-Request-Id": "sse-1"},
        buffered=False,
    )
    before_close = access_lines(caplog, "sse-1")
    body = b"".join(response.response)
    response.close()

    [line] = access_lines(caplog, "sse-1")
    assert before_close == []
    assert (line.fields["route"], line.fields["status"]) == ("/realtime/v1/sessions/<session_ref>/<io>", 200)
    assert line.fields["bytes"] == len(body) > 0


def test_access_lines_in_json_format_carry_their_fields_as_keys(client):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        client.get("/healthz", headers={"X-Request-Id": "json-1"}).close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)

    [entry] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entry["message"].startswith("request method=GET route=/healthz status=200")
    assert {k: entry[k] for k in ("method", "route", "status", "request_id")} == {
        "method": "GET",
        "route": "/healthz",
        "status": 200,
        "request_id": "json-1",
    }
    assert isinstance(entry["duration_ms"], float) and isinstance(entry["bytes"], int)


def test_readyz_is_ok_when_the_database_answers(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "checks": {"database": "ok"}}


@pytest.fixture
def sqlite_app_with(sqlite_url):
    """Factory: an app on a migrated SQLite file with ``clickhouse_url`` set; closed afterwards."""
    upgrade_database(sqlite_url)
    apps = []

    def make(clickhouse_url):
        apps.append(create_app(Settings(database_url=sqlite_url, clickhouse_url=clickhouse_url)))
        return apps[-1]

    yield make
    for app in apps:
        app.extensions["sessions"].engine.dispose()


def test_readyz_is_503_when_clickhouse_is_configured_but_down(sqlite_app_with):
    app = sqlite_app_with(f"clickhouse://default@127.0.0.1:{free_port()}/default")

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.get_json() == {"ok": False, "checks": {"database": "ok", "clickhouse": "unavailable"}}
    assert app.test_client().get("/healthz").status_code == 200


@pytest.mark.clickhouse
def test_readyz_checks_clickhouse_when_it_is_configured(sqlite_app_with, clickhouse):
    response = sqlite_app_with(clickhouse.url).test_client().get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "checks": {"database": "ok", "clickhouse": "ok"}}


def test_a_check_that_does_not_answer_in_time_is_a_timeout():
    release = threading.Event()

    try:
        answers = run_checks({"stuck": lambda: release.wait(30) and None, "fine": lambda: None}, 0.05)
    finally:
        release.set()

    assert answers == {"stuck": TIMEOUT, "fine": None}


def test_the_pool_gauge_counts_checked_out_connections(engine):
    def checked_out():
        return REGISTRY.get_sample_value("sessions_db_pool_checked_out")

    before = checked_out()
    with engine.connect():
        during = checked_out()
    after = checked_out()

    assert (during - before, after - before) == (1, 0)


def test_an_unhandled_error_is_logged_with_the_request_id_the_client_got(sqlite_app_with, caplog):
    app = sqlite_app_with(None)
    app.add_url_rule("/boom", "boom", lambda: 1 / 0)

    response = app.test_client().get("/boom", headers={"X-Request-Id": "boom-1"})

    [logged] = [r for r in caplog.records if r.getMessage().startswith("unhandled error")]
    assert response.status_code == 500
    assert response.headers["X-Request-Id"] == "boom-1"
    assert logged.getMessage() == "unhandled error request_id=boom-1"
    assert logged.exc_info[0] is ZeroDivisionError
