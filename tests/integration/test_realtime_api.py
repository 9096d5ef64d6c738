"""The realtime routes in-process on SQLite and PostgreSQL (fixtures from this folder's conftest)."""

import json
import threading
from datetime import timedelta

from session_core.models import utcnow
from tests.integration.sessions_api import bearer


def channel(ref, io):
    return f"/realtime/v1/sessions/{ref}/{io}"


def sse_records(response):
    records = []
    for block in response.get_data(as_text=True).split("\n\n"):
        if block.startswith("event: batch"):
            records += json.loads(block.split("data: ", 1)[1])["records"]
    return records


def test_appended_records_drain_over_sse_and_json(client, env, make_session):
    ref = make_session()["id"]
    for text in ("one", "two"):
        client.post(channel(ref, "in") + "/append", data=text, headers=bearer(env.api_key))

    live = client.get(channel(ref, "in"), headers={**bearer(env.api_key), "Timeout-Seconds": "1"})
    drained = client.get(channel(ref, "in") + "/records", headers=bearer(env.api_key))

    assert [json.loads(r["body"])["data"] for r in sse_records(live)] == ["one", "two"]
    assert [(r["seqNum"], r["data"]) for r in drained.get_json()["records"]] == [(0, "one"), (1, "two")]


def test_a_live_reader_gets_an_append_made_while_it_waits(client, env, make_session):
    ref = make_session()["id"]
    response = client.get(
        channel(ref, "out"), headers={**bearer(env.api_key), "Timeout-Seconds": "30"}, buffered=False
    )
    chunks = iter(response.response)
    assert next(chunks).startswith(b"event: ping")

    writer = threading.Thread(
        target=lambda: client.post(channel(ref, "out") + "/append", data="live", headers=bearer(env.api_key))
    )
    writer.start()
    batch = next(chunks)
    writer.join(10)
    response.close()

    assert batch.startswith(b"event: batch")
    assert json.loads(json.loads(batch.split(b"data: ", 1)[1])["records"][0]["body"])["data"] == "live"


def test_an_expired_session_refuses_appends(client, env, insert_session):
    session = insert_session(expires_at=utcnow() - timedelta(minutes=1))

    response = client.post(
        channel(session.friendly_id, "in") + "/append", data="x", headers=bearer(env.api_key)
    )

    assert response.status_code == 400
    assert response.get_json() == {"ok": False, "error": "Cannot append to an expired session"}


def test_initialize_refuses_a_closed_session_in_plain_text(client, env, make_session):
    ref = make_session()["id"]
    client.post(f"/api/v1/sessions/{ref}/close", json={}, headers=bearer(env.api_key))

    response = client.put(channel(ref, "out"), headers=bearer(env.api_key))

    assert (response.status_code, response.get_data(as_text=True)) == (
        400,
        "Cannot initialize a channel on a closed session",
    )


def test_initialize_needs_a_row_for_a_friendly_id_only(client, env):
    missing = client.put(channel("session_c000000000000000000000000", "in"), headers=bearer(env.api_key))
    external = client.put(channel("chat-without-row", "in"), headers=bearer(env.api_key))

    assert (missing.status_code, missing.get_data(as_text=True)) == (404, "Session not found")
    assert external.status_code == 202
    assert external.headers["X-S2-Stream-Name"] == "sessions/chat-without-row/in"


def test_a_session_token_may_initialize_in_but_not_out(client, make_session):
    created = make_session()
    token = bearer(created["publicAccessToken"])

    into = client.put(channel(created["externalId"], "in"), headers=token)
    out = client.put(channel(created["externalId"], "out"), headers=token)

    assert into.status_code == 202
    assert (out.status_code, out.get_data(as_text=True)) == (
        403,
        "Initializing the out channel requires secret key authentication",
    )


def test_both_id_forms_address_one_channel(client, env, make_session):
    created = make_session()
    client.post(channel(created["id"], "in") + "/append", data="by id", headers=bearer(env.api_key))
    client.post(
        channel(created["externalId"], "in") + "/append", data="by external id", headers=bearer(env.api_key)
    )

    drained = client.get(channel(created["externalId"], "in") + "/records", headers=bearer(env.api_key))

    assert [r["data"] for r in drained.get_json()["records"]] == ["by id", "by external id"]


def test_put_names_the_configured_base_url_never_the_requests_host(app, client, env, make_session):
    ref = make_session()["id"]

    response = client.put(channel(ref, "in"), headers={**bearer(env.api_key), "Host": "attacker.example:666"})

    assert response.status_code == 202
    assert response.headers["X-S2-Endpoint"] == app.extensions["sessions"].settings.base_url + "/s2/v1"
    assert "attacker" not in response.headers["X-S2-Endpoint"]
