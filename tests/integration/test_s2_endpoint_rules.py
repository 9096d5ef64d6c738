"""The S2-compatible endpoint obeys the session's state and the caller's token (issue 10, items 2 and 5).

On SQLite and PostgreSQL (fixtures from this folder's conftest): appends of any kind to the stream
of a closed or expired session are refused in S2's error shape and change nothing; the S2 token a
``PUT`` hands out never outlives the token ``PUT`` was called with; a live read without ``wait`` ends.
"""

import base64
import json
import threading
import time
from datetime import timedelta
from urllib.parse import quote

import pytest

from session_core.auth import mint_token
from session_core.config import Settings
from session_core.db.tables import sessions
from session_core.models import utcnow
from session_core.scopes import session_token_scopes
from session_web.app import create_app
from tests.integration.sessions_api import bearer

REALTIME = "/realtime/v1/sessions"


def stream_url(name):
    return f"/s2/v1/streams/{quote(name, safe='')}/records"


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def varint(value):
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number, payload):
    """A protobuf length-delimited field."""
    return bytes([number << 3 | 2]) + varint(len(payload)) + payload


def b64(raw):
    return base64.b64encode(raw).decode()


#: Every kind of append a direct writer sends: a record, a control record, a trim and a fence
#: command (JSON, base64 so the trim's 8-byte body fits), and a trim command as protobuf.
APPENDS = {
    "record": ({"records": [{"body": "late"}]}, {}),
    "control_record": ({"records": [{"headers": [["trigger-control", "turn-complete"]]}]}, {}),
    "trim": (
        {"records": [{"headers": [[b64(b""), b64(b"trim")]], "body": b64((5).to_bytes(8, "big"))}]},
        {"s2-format": "base64"},
    ),
    "fence": ({"records": [{"headers": [["", "fence"]], "body": "f1"}]}, {}),
    "protobuf_trim": (
        field(1, field(2, field(1, b"") + field(2, b"trim")) + field(3, (5).to_bytes(8, "big"))),
        {"Content-Type": "application/protobuf"},
    ),
}


def append(client, name, auth, kind):
    body, headers = APPENDS[kind]
    if isinstance(body, bytes):
        return client.post(stream_url(name), data=body, headers={**auth, **headers})
    return client.post(stream_url(name), json=body, headers={**auth, **headers})


def granted(client, env, ref):
    response = client.put(f"{REALTIME}/{ref}/in", headers=bearer(env.api_key))
    assert response.status_code == 202
    return response.headers["X-S2-Stream-Name"], bearer(response.headers["X-S2-Access-Token"])


@pytest.mark.parametrize("kind", list(APPENDS))
def test_a_closed_sessions_stream_refuses_every_append_and_keeps_its_history(client, env, make_session, kind):
    ref = make_session()["id"]
    name, auth = granted(client, env, ref)
    for text in ("one", "two"):
        assert (
            client.post(stream_url(name), json={"records": [{"body": text}]}, headers=auth).status_code == 200
        )
    client.post(f"/api/v1/sessions/{ref}/close", json={}, headers=bearer(env.api_key))
    tail_at_close = client.get(stream_url(name) + "/tail", headers=auth).get_json()["tail"]

    refused = append(client, name, auth, kind)
    read = client.get(stream_url(name) + "?seq_num=0", headers=auth).get_json()

    assert refused.status_code == 400
    assert refused.get_json() == {"code": "bad_request", "message": "Cannot append to a closed session"}
    assert [r.get("body") for r in read["records"]][:2] == ["one", "two"]  # nothing trimmed
    assert read["tail"] == tail_at_close  # nothing stored


@pytest.mark.parametrize("auth_kind", ["secret_key", "stream_token"])
def test_an_expired_sessions_stream_refuses_appends(client, env, insert_session, auth_kind):
    session = insert_session(external_id=f"chat-{time.time_ns()}")
    name, token = granted(client, env, session.external_id)
    with client.application.extensions["sessions"].engine.begin() as conn:  # it expires after PUT
        conn.execute(
            sessions.update()
            .where(sessions.c.id == session.id)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    auth = bearer(env.api_key) if auth_kind == "secret_key" else token

    response = append(client, name, auth, "record")
    tail = client.get(stream_url(name) + "/tail", headers=auth).get_json()

    assert response.status_code == 400
    assert response.get_json() == {"code": "bad_request", "message": "Cannot append to an expired session"}
    assert tail["tail"]["seq_num"] == 0


def test_an_open_sessions_stream_and_a_stream_of_no_session_take_appends(client, env, make_session):
    name, auth = granted(client, env, make_session()["externalId"])

    to_session = client.post(stream_url(name), json={"records": [{"body": "x"}]}, headers=auth)
    elsewhere = client.post(
        stream_url("scratch/notes"), json={"records": [{"body": "x"}]}, headers=bearer(env.api_key)
    )

    assert (to_session.status_code, elsewhere.status_code) == (200, 200)


def test_the_s2_token_lives_no_longer_than_the_token_put_was_called_with(client, env, make_session):
    created = make_session()
    ten_minutes = mint_token(env, session_token_scopes(created["externalId"]), ttl_seconds=600)

    by_session_token = client.put(f"{REALTIME}/{created['externalId']}/in", headers=bearer(ten_minutes))
    by_secret_key = client.put(f"{REALTIME}/{created['externalId']}/in", headers=bearer(env.api_key))

    short = claims(by_session_token.headers["X-S2-Access-Token"])
    long = claims(by_secret_key.headers["X-S2-Access-Token"])
    assert short["exp"] <= claims(ten_minutes)["exp"]
    assert long["exp"] - long["iat"] == 24 * 3600


@pytest.fixture(scope="module")
def short_wait_app(app_database_url):
    """An app whose live reads wait 1 s at the tail by default."""
    app = create_app(Settings(database_url=app_database_url, sse_default_wait_seconds=1))
    yield app
    app.extensions["sessions"].hub.close()
    app.extensions["sessions"].engine.dispose()


def test_an_s2_live_read_without_wait_ends_after_the_default_wait(short_wait_app, env, make_session):
    client = short_wait_app.test_client()
    name, auth = granted(client, env, make_session()["externalId"])
    body = []

    reader = threading.Thread(
        target=lambda: body.append(
            client.get(stream_url(name), headers={**auth, "Accept": "text/event-stream"}).get_data(
                as_text=True
            )
        ),
        daemon=True,
    )
    reader.start()
    reader.join(60)  # a bound on a hang, not a speed check: the read ends after its 1 s wait

    assert not reader.is_alive(), "the S2 live read without wait never ended"
    assert body[0].startswith("event: ping")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (field(1, b"") * 200_000, 422, "A batch holds 1 to 1000 records"),
        (field(1, field(2, b"") * 100_000), 422, "A batch holds at most 10000 headers"),
    ],
    ids=["200k_empty_records", "100k_empty_headers"],
)
def test_a_hostile_protobuf_append_is_refused_naming_the_limit(
    client, env, make_session, body, status, message
):
    name, auth = granted(client, env, make_session()["externalId"])

    response = client.post(
        stream_url(name), data=body, headers={**auth, "Content-Type": "application/protobuf"}
    )

    assert response.status_code == status
    assert response.get_json() == {"code": "invalid", "message": message}
    assert client.get(stream_url(name) + "/tail", headers=auth).get_json()["tail"]["seq_num"] == 0
