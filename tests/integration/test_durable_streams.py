"""Durable Streams routes in-process, on SQLite and PostgreSQL: auth, and what the suite cannot see.

The protocol itself is checked by the conformance suite (tests/e2e/test_ds_conformance.py); here,
who may reach which stream, and that streams are rows of the shared database (another app on it,
as after a restart, serves them).
"""

import json
import threading
import time
import uuid

import pytest
from flask.testing import FlaskClient

from session_core.config import Settings
from session_core.db.migrate import upgrade_database
from session_core.db.uow import UnitOfWork
from session_core.models import EnvironmentType, utcnow
from session_core.services.environments import create_environment
from session_web.app import create_app
from tests.integration.sessions_api import bearer


def stream_url() -> str:
    return f"/v1/stream/tests/{uuid.uuid4().hex}"


def test_a_secret_key_creates_appends_and_reads(client: FlaskClient, env):
    url, auth = stream_url(), bearer(env.api_key)
    assert client.put(url, headers={**auth, "Content-Type": "application/json"}).status_code == 201
    appended = client.post(url, data=b'[{"a": 1}, [2]]', headers={**auth, "Content-Type": "application/json"})
    assert appended.status_code == 204
    read = client.get(f"{url}?offset=-1", headers=auth)
    assert read.status_code == 200
    assert read.get_json() == [{"a": 1}, [2]]
    assert read.headers["Stream-Next-Offset"] == appended.headers["Stream-Next-Offset"]
    assert read.headers["X-Content-Type-Options"] == "nosniff"


def test_without_credentials_every_request_is_401(client: FlaskClient, env):
    url = stream_url()
    client.put(url, headers=bearer(env.api_key))
    for method in ("PUT", "POST", "GET", "HEAD", "DELETE"):
        assert client.open(url, method=method, data=b"x").status_code == 401, method
    assert client.get(url, headers={"Authorization": "Bearer tr_dev_not-a-key"}).status_code == 401


def test_a_key_of_another_environment_sees_404(client: FlaskClient, env, make_environment):
    url, other = stream_url(), bearer(make_environment().api_key)
    client.put(url, data=b"mine", headers={**bearer(env.api_key), "Content-Type": "text/plain"})
    assert client.get(url, headers=other).status_code == 404
    assert client.head(url, headers=other).status_code == 404
    assert client.post(url, data=b"x", headers={**other, "Content-Type": "text/plain"}).status_code == 404
    assert client.delete(url, headers=other).status_code == 404
    # The same path in the other environment is another stream.
    assert client.put(url, headers={**other, "Content-Type": "application/json"}).status_code == 201
    assert client.get(f"{url}?offset=-1", headers=bearer(env.api_key)).data == b"mine"


def test_the_public_environment_serves_requests_without_credentials(app_database_url, env, make_environment):
    public = create_app(Settings(database_url=app_database_url, ds_public_environment=env.slug))
    try:
        client, url = public.test_client(), stream_url()
        assert client.put(url, data=b"open", headers={"Content-Type": "text/plain"}).status_code == 201
        assert client.get(f"{url}?offset=-1", headers=bearer(env.api_key)).data == b"open"
        # A key still acts in its own environment, which does not hold the public stream.
        assert client.get(url, headers=bearer(make_environment().api_key)).status_code == 404
    finally:
        public.extensions["sessions"].engine.dispose()


def test_streams_outlive_the_app_that_wrote_them(client: FlaskClient, app_database_url, env):
    url, auth = stream_url(), bearer(env.api_key)
    client.put(url, data=b"\x00\xffbinary", headers={**auth, "Stream-TTL": "3600"})
    client.post(url, data=b"\x01", headers={**auth, "Content-Type": "application/octet-stream"})
    client.post(url, headers={**auth, "Stream-Closed": "true"})
    restarted = create_app(Settings(database_url=app_database_url))
    try:
        read = restarted.test_client().get(f"{url}?offset=-1", headers=auth)
        assert read.data == b"\x00\xffbinary\x01"
        assert read.headers["Stream-Closed"] == "true"
        head = restarted.test_client().head(url, headers=auth)
        assert head.headers["Stream-TTL"] == "3600"
    finally:
        restarted.extensions["sessions"].engine.dispose()


def test_a_session_token_reaches_its_own_two_channels_only(client: FlaskClient, make_session):
    mine, other = make_session(), make_session()
    token = bearer(mine["publicAccessToken"])
    json_type = {"Content-Type": "application/json"}
    for io in ("in", "out"):
        url = f"/v1/stream/sessions/{mine['id']}/{io}"
        assert client.get(f"{url}?offset=-1", headers=token).status_code == 200, io
        assert client.head(url, headers=token).status_code == 200, io
    appended = client.post(
        f"/v1/stream/sessions/{mine['id']}/in", data=b'{"text": "hi"}', headers={**token, **json_type}
    )
    assert appended.status_code == 204
    read = client.get(f"/v1/stream/sessions/{mine['externalId']}/in?offset=-1", headers=token)
    assert [json.loads(item["data"]) for item in read.get_json()] == [{"text": "hi"}]
    # Only a secret key speaks on .out, as on the realtime routes.
    refused = client.post(f"/v1/stream/sessions/{mine['id']}/out", data=b"{}", headers={**token, **json_type})
    assert refused.status_code == 403
    for io in ("in", "out"):
        assert (
            client.get(f"/v1/stream/sessions/{other['id']}/{io}?offset=-1", headers=token).status_code == 403
        )
    assert client.put(stream_url(), headers=token).status_code == 403


def test_a_key_of_another_environment_sees_no_session_channel(
    client: FlaskClient, make_session, make_environment
):
    session, other = make_session(), bearer(make_environment().api_key)
    for io in ("in", "out"):
        assert (
            client.get(f"/v1/stream/sessions/{session['id']}/{io}?offset=-1", headers=other).status_code
            == 404
        )
    assert client.get(f"/v1/stream/sessions/{session['id']}/in?offset=-1").status_code == 401


def test_session_channels_present_records_as_json_messages(client: FlaskClient, env, make_session):
    session, key = make_session(), bearer(env.api_key)
    base = f"/v1/stream/sessions/{session['id']}/out"
    client.post(
        f"/realtime/v1/sessions/{session['id']}/out/append", data=b'{"type":"text-delta"}',
        headers={**key, "X-Part-Id": "p1"},
    )  # fmt: skip
    client.post(f"{base}", data=b'[{"a": 1}, "two"]', headers={**key, "Content-Type": "application/json"})
    read = client.get(f"{base}?offset=-1", headers=key)
    assert read.get_json() == [
        {"data": '{"type":"text-delta"}', "id": "p1"},
        {"data": '{"a":1}', "id": read.get_json()[1]["id"]},
        {"data": '"two"', "id": read.get_json()[2]["id"]},
    ]
    assert read.headers["Content-Type"] == "application/json"
    assert "Stream-Closed" not in read.headers
    client.post(f"/api/v1/sessions/{session['id']}/close", json={}, headers=key)
    closed = client.get(f"{base}?offset={read.headers['Stream-Next-Offset']}", headers=key)
    assert closed.headers["Stream-Closed"] == "true"
    assert client.delete(base, headers=key).status_code == 405


@pytest.mark.postgres
def test_a_close_through_another_server_ends_a_long_poll_at_once(pg_url):
    """Closing writes no record; the poke NOTIFY still reaches the other process's waiting readers.
    The long-poll here would wait ten minutes: it only returns because the close woke it."""
    upgrade_database(pg_url)
    waiting = create_app(Settings(database_url=pg_url, ds_long_poll_ms=600_000))
    closing = create_app(Settings(database_url=pg_url))
    engine = closing.extensions["sessions"].engine
    env = create_environment(
        UnitOfWork(engine), f"env-{uuid.uuid4().hex[:12]}", EnvironmentType.DEVELOPMENT, utcnow()
    )
    url, auth = stream_url(), bearer(env.api_key)

    def long_poll_while(change) -> object:
        """Start a long-poll at the tail on ``waiting``, make ``change`` through ``closing`` once it
        waits, and return its answer."""
        tail = closing.test_client().head(url, headers=auth).headers["Stream-Next-Offset"]
        answers: list = []
        poll = threading.Thread(
            target=lambda: answers.append(
                waiting.test_client().get(f"{url}?offset={tail}&live=long-poll", headers=auth)
            )
        )
        poll.start()
        for _ in range(6000):  # until the long-poll waits (bounded, should the read fail instead)
            if waiting.extensions["sessions"].hub.subscribed_keys() or not poll.is_alive():
                break
            time.sleep(0.01)
        change(closing.test_client())
        poll.join(timeout=60)
        assert answers, "the long-poll was not woken"
        return answers[0]

    try:
        closing.test_client().put(url, headers={**auth, "Content-Type": "text/plain"})
        # An append wakes it (and shows the other process's feed is listening by now) ...
        appended = long_poll_while(
            lambda c: c.post(url, data=b"a", headers={**auth, "Content-Type": "text/plain"})
        )
        assert appended.status_code == 200 and appended.data == b"a"
        # ... and so does a close, which appends nothing.
        closed = long_poll_while(lambda c: c.post(url, headers={**auth, "Stream-Closed": "true"}))
        assert closed.status_code == 204
        assert closed.headers["Stream-Closed"] == "true"
    finally:
        for app in (waiting, closing):
            app.extensions["sessions"].hub.close()
            app.extensions["sessions"].engine.dispose()


def test_a_catch_up_read_returns_thousands_of_messages_at_once(client: FlaskClient, env, make_session):
    session, key = make_session(), bearer(env.api_key)
    base = f"/v1/stream/sessions/{session['id']}/out"
    messages = [{"n": n} for n in range(1_500)]
    client.post(base, data=json.dumps(messages), headers={**key, "Content-Type": "application/json"})

    read = client.get(f"{base}?offset=-1", headers=key)

    assert [json.loads(item["data"]) for item in read.get_json()] == messages
    assert read.headers["Stream-Up-To-Date"] == "true"


def test_a_catch_up_read_stops_near_four_mebibytes_and_the_rest_follows(client: FlaskClient, env):
    url, auth = stream_url(), bearer(env.api_key)
    plain = {**auth, "Content-Type": "text/plain"}
    client.put(url, headers=plain)
    chunks = [bytes([65 + n]) * 900_000 for n in range(6)]  # stored as base64: 1.2 MB each
    for chunk in chunks:
        assert client.post(url, data=chunk, headers=plain).status_code == 204

    first = client.get(f"{url}?offset=-1", headers=auth)
    rest = client.get(f"{url}?offset={first.headers['Stream-Next-Offset']}", headers=auth)

    assert len(first.data) < 5 * 1024 * 1024 and "Stream-Up-To-Date" not in first.headers
    assert first.data + rest.data == b"".join(chunks)
    assert rest.headers["Stream-Up-To-Date"] == "true"


def test_a_fork_read_page_by_page_gives_its_source_then_its_own_records(client: FlaskClient, env):
    """Pages are bounded in stored bytes, which outnumber characters in text beyond ASCII."""
    source, fork, auth = stream_url(), stream_url(), bearer(env.api_key)
    as_json = {**auth, "Content-Type": "application/json"}
    messages = [chr(0xE0 + n) * 300_000 for n in range(10)]  # 600 kB of UTF-8 each
    client.put(source, headers=as_json)
    for message in messages[:8]:
        client.post(source, data=json.dumps([message], ensure_ascii=False).encode(), headers=as_json)
    assert client.put(fork, headers={**as_json, "Stream-Forked-From": source}).status_code == 201
    for message in messages[8:]:
        client.post(fork, data=json.dumps([message], ensure_ascii=False).encode(), headers=as_json)

    pages, offset = [], "-1"
    for _ in range(len(messages)):
        page = client.get(f"{fork}?offset={offset}", headers=auth)
        pages.append(page.get_json())
        offset = page.headers["Stream-Next-Offset"]
        if page.headers.get("Stream-Up-To-Date") == "true":
            break

    assert len(pages) > 1  # the source's part alone is over one page
    assert [message for page in pages for message in page] == messages
