"""What an operator does to a running service: rotate a key, watch metrics, logs and health.

One gunicorn with two workers on SQLite serves the module; waits are bounded polls, never timed asserts.
"""

import json
import time
import uuid

import pytest
import requests

from tests.integration.sessions_api import session_body
from tests.servers import LiveServer

POLL_SECONDS = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    database_url = f"sqlite:///{tmp_path_factory.mktemp('operations')}/sessions.db"
    with LiveServer(database_url, workers=2) as live:
        yield live


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
