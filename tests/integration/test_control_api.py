"""The control plane's conformance list (wire reference §3–§5, §10, §13), on SQLite and PostgreSQL."""

import base64
import json
import threading
from datetime import datetime, timedelta
from urllib.parse import quote

import pytest

from session_core.auth import mint_token
from session_core.models import utcnow
from tests.integration.sessions_api import (
    SESSION_ITEM_KEYS,
    bearer,
    forbidden_body,
    session_body,
    unique_external_id,
)

SESSIONS = "/api/v1/sessions"


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def epoch_ms(moment):
    return int((moment - datetime(1970, 1, 1)) / timedelta(milliseconds=1))


def list_sessions(client, env, **params):
    response = client.get(SESSIONS, query_string=params, headers=bearer(env.api_key))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def listed_ids(client, env, **params):
    return [item["id"] for item in list_sessions(client, env, **params)["data"]]


# --- create -------------------------------------------------------------------------------------


def test_create_answers_201_then_200_cached_with_the_same_id_and_run(client, env):
    body = session_body(tags=["chat:c1"], metadata={"user": "u1"})

    first = client.post(SESSIONS, json=body, headers=bearer(env.api_key))
    again = client.post(SESSIONS, json=body, headers=bearer(env.api_key))

    assert first.status_code == 201
    assert again.status_code == 200
    created, cached = first.get_json(), again.get_json()
    assert (created["isCached"], cached["isCached"]) == (False, True)
    assert cached["id"] == created["id"]
    assert cached["runId"] == created["runId"] == created["currentRunId"]
    assert created["id"].startswith("session_") and len(created["id"]) == len("session_") + 25
    assert created["runId"].startswith("run_")
    assert SESSION_ITEM_KEYS <= created.keys()
    assert created["triggerConfig"] == {"basePayload": {"chatId": "c1"}}
    assert (created["tags"], created["metadata"]) == (["chat:c1"], {"user": "u1"})
    assert created["closedAt"] is None and created["closedReason"] is None and created["expiresAt"] is None


def test_create_without_an_external_id_makes_a_new_session_every_time(client, env):
    body = session_body(externalId=None)

    first = client.post(SESSIONS, json=body, headers=bearer(env.api_key))
    second = client.post(SESSIONS, json=body, headers=bearer(env.api_key))

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.get_json()["id"] != second.get_json()["id"]
    assert first.get_json()["externalId"] is None


def test_a_cached_create_refreshes_only_the_trigger_config(client, env):
    body = session_body(type="chat.agent", tags=["a"], metadata={"v": 1})
    client.post(SESSIONS, json=body, headers=bearer(env.api_key))
    changed = {
        **body,
        "type": "other",
        "tags": ["b"],
        "metadata": {"v": 2},
        "triggerConfig": {"basePayload": {"chatId": "c2"}, "maxAttempts": 3},
    }

    cached = client.post(SESSIONS, json=changed, headers=bearer(env.api_key)).get_json()

    assert cached["isCached"] is True
    assert (cached["type"], cached["tags"], cached["metadata"]) == ("chat.agent", ["a"], {"v": 1})
    assert cached["triggerConfig"] == {"basePayload": {"chatId": "c2"}, "maxAttempts": 3}


def test_create_leaves_unset_trigger_config_keys_out_instead_of_null(client, env):
    body = session_body(triggerConfig={"basePayload": {}, "machine": "small-1x", "queue": "q"})

    created = client.post(SESSIONS, json=body, headers=bearer(env.api_key)).get_json()

    assert created["triggerConfig"] == {"basePayload": {}, "machine": "small-1x", "queue": "q"}


def test_create_refuses_an_external_id_with_the_reserved_session_prefix(client, env):
    body = session_body(externalId="session_mine")

    response = client.post(SESSIONS, json=body, headers=bearer(env.api_key))

    assert response.status_code == 422
    error = response.get_json()
    assert "externalId cannot start with 'session_'" in error["error"]
    assert error["details"] == [
        {
            "path": ["externalId"],
            "message": "externalId cannot start with 'session_' (reserved prefix for internal friendlyIds)",
        }
    ]


def test_create_trims_the_external_id(client, env):
    external_id = unique_external_id()

    created = client.post(
        SESSIONS, json=session_body(externalId=f"  {external_id} "), headers=bearer(env.api_key)
    ).get_json()

    assert created["externalId"] == external_id


def test_recreating_a_closed_external_id_is_a_permanent_409(client, env, make_session):
    session = make_session()
    client.post(f"{SESSIONS}/{session['id']}/close", json={}, headers=bearer(env.api_key))

    response = client.post(
        SESSIONS, json=session_body(externalId=session["externalId"]), headers=bearer(env.api_key)
    )

    assert response.status_code == 409
    assert response.get_json() == {
        "error": "Session is closed; use a different externalId to create a new session"
    }
    assert response.headers["x-should-retry"] == "false"


def test_recreating_an_expired_external_id_is_a_409(client, env, insert_session):
    past = utcnow() - timedelta(hours=2)
    session = insert_session(
        external_id=unique_external_id(), created_at=past, expires_at=past + timedelta(hours=1)
    )

    response = client.post(
        SESSIONS, json=session_body(externalId=session.external_id), headers=bearer(env.api_key)
    )

    assert response.status_code == 409
    assert response.get_json()["error"].startswith("Session is expired; use a different externalId")
    assert response.headers["x-should-retry"] == "false"


def test_create_mints_a_one_hour_session_token_for_the_addressing_key(env, make_session):
    with_external = make_session()
    without_external = make_session(externalId=None)

    claims = jwt_claims(with_external["publicAccessToken"])
    friendly_claims = jwt_claims(without_external["publicAccessToken"])

    key = with_external["externalId"]
    assert claims["scopes"] == [f"read:sessions:{key}", f"write:sessions:{key}"]
    assert (claims["sub"], claims["pub"], claims["exp"] - claims["iat"]) == (env.id, True, 3600)
    friendly = without_external["id"]
    assert friendly_claims["scopes"] == [f"read:sessions:{friendly}", f"write:sessions:{friendly}"]


def test_expires_at_is_accepted_as_iso_or_epoch_ms_and_answered_as_iso(make_session):
    moment = datetime(2099, 5, 17, 10, 30, 0, 123000)

    from_iso = make_session(expiresAt="2099-05-17T10:30:00.123Z")
    from_ms = make_session(expiresAt=epoch_ms(moment))

    assert from_iso["expiresAt"] == from_ms["expiresAt"] == "2099-05-17T10:30:00.123Z"


def test_concurrent_creates_of_one_external_id_agree_on_one_session(app, env):
    body = session_body()
    callers = 8
    barrier = threading.Barrier(callers)
    results = []

    def create():
        client = app.test_client()
        barrier.wait()
        response = client.post(SESSIONS, json=body, headers=bearer(env.api_key))
        results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=create) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (callers - 1) + [201]
    assert len({body["id"] for _, body in results}) == 1
    assert len({body["runId"] for _, body in results}) == 1
    assert sorted(body["isCached"] for _, body in results) == [False] + [True] * (callers - 1)


# --- retrieve -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url_form", ["id", "externalId"])
@pytest.mark.parametrize("token_form", ["id", "externalId"])
def test_a_token_minted_for_either_id_form_reads_the_session_by_either_form(
    client, env, make_session, token_form, url_form
):
    session = make_session()
    token = mint_token(env, [f"read:sessions:{session[token_form]}"])

    response = client.get(f"{SESSIONS}/{session[url_form]}", headers=bearer(token))

    assert response.status_code == 200
    assert response.get_json()["id"] == session["id"]


def test_retrieve_answers_the_detail_with_trigger_config_and_current_run(client, env, make_session):
    session = make_session()

    detail = client.get(f"{SESSIONS}/{session['id']}", headers=bearer(env.api_key)).get_json()

    assert SESSION_ITEM_KEYS <= detail.keys()
    assert detail["triggerConfig"] == session["triggerConfig"]
    assert detail["currentRunId"] == session["runId"]
    assert "publicAccessToken" not in detail and "isCached" not in detail


def test_an_external_id_with_slashes_line_breaks_and_unicode_is_reachable_url_encoded(
    client, env, make_session
):
    external_id = f"team/chat #1\né?{unique_external_id()}"
    session = make_session(externalId=external_id)
    path = f"{SESSIONS}/{quote(external_id, safe='')}"

    retrieved = client.get(path, headers=bearer(env.api_key))
    updated = client.patch(path, json={"tags": ["t"]}, headers=bearer(env.api_key))
    closed = client.post(f"{path}/close", json={}, headers=bearer(env.api_key))

    assert retrieved.status_code == 200
    assert retrieved.get_json()["id"] == session["id"]
    assert (updated.status_code, closed.status_code) == (200, 200)


def test_retrieving_an_unknown_session_is_a_404_that_says_not_to_retry(client, env):
    response = client.get(f"{SESSIONS}/{unique_external_id()}", headers=bearer(env.api_key))

    assert response.status_code == 404
    assert response.get_json() == {"error": "Not found"}
    assert response.headers["x-should-retry"] == "false"


# --- update -------------------------------------------------------------------------------------


def test_patch_replaces_tags_and_metadata_and_keeps_everything_else(client, env, make_session):
    session = make_session(tags=["a", "b"], metadata={"v": 1})

    response = client.patch(
        f"{SESSIONS}/{session['id']}", json={"tags": ["c"], "metadata": {"v": 2}}, headers=bearer(env.api_key)
    )

    assert response.status_code == 200
    updated = response.get_json()
    assert (updated["tags"], updated["metadata"]) == (["c"], {"v": 2})
    assert updated["externalId"] == session["externalId"]
    assert updated["type"] == session["type"] and updated["triggerConfig"] == session["triggerConfig"]


def test_patch_with_null_metadata_clears_it(client, env, make_session):
    session = make_session(metadata={"v": 1})

    updated = client.patch(
        f"{SESSIONS}/{session['externalId']}", json={"metadata": None}, headers=bearer(env.api_key)
    ).get_json()

    assert updated["metadata"] is None
    assert updated["tags"] == session["tags"]


def test_patch_with_an_empty_body_object_changes_nothing(client, env, make_session):
    session = make_session(tags=["a"])

    response = client.patch(f"{SESSIONS}/{session['id']}", json={}, headers=bearer(env.api_key))

    assert response.status_code == 200
    assert response.get_json()["tags"] == ["a"]


def test_patch_renames_the_external_id_and_the_old_name_stops_resolving(client, env, make_session):
    session = make_session()
    new_name = unique_external_id()

    renamed = client.patch(
        f"{SESSIONS}/{session['id']}", json={"externalId": new_name}, headers=bearer(env.api_key)
    )

    assert renamed.get_json()["externalId"] == new_name
    assert client.get(f"{SESSIONS}/{new_name}", headers=bearer(env.api_key)).get_json()["id"] == session["id"]
    assert client.get(f"{SESSIONS}/{session['externalId']}", headers=bearer(env.api_key)).status_code == 404


def test_patch_with_a_null_external_id_clears_it(client, env, make_session):
    session = make_session()

    cleared = client.patch(
        f"{SESSIONS}/{session['id']}", json={"externalId": None}, headers=bearer(env.api_key)
    )

    assert cleared.get_json()["externalId"] is None
    assert client.get(f"{SESSIONS}/{session['externalId']}", headers=bearer(env.api_key)).status_code == 404


def test_patch_to_an_external_id_another_session_holds_is_a_409_that_changes_nothing(
    client, env, make_session
):
    holder = make_session()
    other = make_session(tags=["kept"])

    response = client.patch(
        f"{SESSIONS}/{other['id']}",
        json={"externalId": holder["externalId"], "tags": ["lost"]},
        headers=bearer(env.api_key),
    )

    assert response.status_code == 409
    assert response.get_json() == {
        "error": "A session with this externalId already exists in this environment"
    }
    assert response.headers["x-should-retry"] == "false"
    after = client.get(f"{SESSIONS}/{other['id']}", headers=bearer(env.api_key)).get_json()
    assert (after["externalId"], after["tags"]) == (other["externalId"], ["kept"])


def test_patch_to_an_external_id_with_the_reserved_prefix_is_a_422(client, env, make_session):
    session = make_session()

    response = client.patch(
        f"{SESSIONS}/{session['id']}", json={"externalId": "session_x"}, headers=bearer(env.api_key)
    )

    assert response.status_code == 422
    assert response.get_json()["details"][0]["path"] == ["externalId"]


def test_patch_is_allowed_on_a_closed_session(client, env, make_session):
    session = make_session()
    client.post(f"{SESSIONS}/{session['id']}/close", json={}, headers=bearer(env.api_key))

    response = client.patch(
        f"{SESSIONS}/{session['id']}", json={"tags": ["late"]}, headers=bearer(env.api_key)
    )

    assert response.status_code == 200
    assert response.get_json()["tags"] == ["late"]


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [("PATCH", "", {"tags": ["x"]}), ("POST", "/close", {})],
    ids=["patch", "close"],
)
@pytest.mark.parametrize("url_form", ["id", "externalId"])
def test_a_session_token_cannot_patch_or_close_its_own_session(
    client, make_session, method, suffix, body, url_form
):
    session = make_session()
    token = session["publicAccessToken"]

    response = client.open(
        f"{SESSIONS}/{session[url_form]}{suffix}", method=method, json=body, headers=bearer(token)
    )

    assert response.status_code == 403
    key = session["externalId"]
    assert response.get_json() == forbidden_body(f"read:sessions:{key}, write:sessions:{key}")


# --- close --------------------------------------------------------------------------------------


def test_close_is_idempotent_and_keeps_the_first_closed_at_and_reason(client, env, make_session):
    session = make_session()

    first = client.post(
        f"{SESSIONS}/{session['id']}/close", json={"reason": "done"}, headers=bearer(env.api_key)
    )
    again = client.post(
        f"{SESSIONS}/{session['externalId']}/close", json={"reason": "other"}, headers=bearer(env.api_key)
    )

    assert (first.status_code, again.status_code) == (200, 200)
    closed = first.get_json()
    assert closed["closedAt"] is not None and closed["closedReason"] == "done"
    assert (again.get_json()["closedAt"], again.get_json()["closedReason"]) == (closed["closedAt"], "done")


def test_close_without_a_reason_leaves_the_reason_null(client, env, make_session):
    session = make_session()

    closed = client.post(f"{SESSIONS}/{session['id']}/close", json={}, headers=bearer(env.api_key)).get_json()

    assert closed["closedAt"] is not None
    assert closed["closedReason"] is None


def test_closing_an_unknown_session_is_a_404(client, env):
    response = client.post(f"{SESSIONS}/{unique_external_id()}/close", json={}, headers=bearer(env.api_key))

    assert response.status_code == 404
    assert response.get_json() == {"error": "Session not found"}


def test_patching_an_unknown_session_is_a_404(client, env):
    response = client.patch(f"{SESSIONS}/{unique_external_id()}", json={}, headers=bearer(env.api_key))

    assert response.status_code == 404
    assert response.get_json() == {"error": "Session not found"}


# --- end-and-continue ---------------------------------------------------------------------------


def test_end_and_continue_from_the_current_run_swaps_to_a_new_run(client, env, make_session):
    session = make_session()

    response = client.post(
        f"{SESSIONS}/{session['id']}/end-and-continue",
        json={"callingRunId": session["runId"], "reason": "upgrade"},
        headers=bearer(env.api_key),
    )

    assert response.status_code == 200
    result = response.get_json()
    assert result["swapped"] is True and result["runId"] != session["runId"]
    detail = client.get(f"{SESSIONS}/{session['id']}", headers=bearer(env.api_key)).get_json()
    assert detail["currentRunId"] == result["runId"]


def test_end_and_continue_from_a_superseded_run_answers_the_current_run_unswapped(client, env, make_session):
    session = make_session()
    path = f"{SESSIONS}/{session['id']}/end-and-continue"
    current = client.post(
        path, json={"callingRunId": session["runId"], "reason": "upgrade"}, headers=bearer(env.api_key)
    ).get_json()["runId"]

    stale = client.post(
        path, json={"callingRunId": session["runId"], "reason": "upgrade"}, headers=bearer(env.api_key)
    )

    assert stale.status_code == 200
    assert stale.get_json() == {"runId": current, "swapped": False}


def test_end_and_continue_with_an_unknown_calling_run_is_a_404(client, env, make_session):
    session = make_session()

    response = client.post(
        f"{SESSIONS}/{session['id']}/end-and-continue",
        json={"callingRunId": "run_unknown", "reason": "upgrade"},
        headers=bearer(env.api_key),
    )

    assert response.status_code == 404
    assert response.get_json() == {"error": "callingRunId not found in this environment"}


def test_end_and_continue_refuses_a_closed_session(client, env, make_session):
    session = make_session()
    client.post(f"{SESSIONS}/{session['id']}/close", json={}, headers=bearer(env.api_key))

    response = client.post(
        f"{SESSIONS}/{session['id']}/end-and-continue",
        json={"reason": "upgrade"},
        headers=bearer(env.api_key),
    )

    assert response.status_code == 400
    assert response.get_json() == {"error": "Cannot end-and-continue a closed session"}


def test_end_and_continue_refuses_an_expired_session(client, env, insert_session):
    past = utcnow() - timedelta(hours=2)
    session = insert_session(created_at=past, expires_at=past + timedelta(hours=1))

    response = client.post(
        f"{SESSIONS}/{session.friendly_id}/end-and-continue",
        json={"reason": "upgrade"},
        headers=bearer(env.api_key),
    )

    assert response.status_code == 400
    assert response.get_json() == {"error": "Cannot end-and-continue an expired session"}


# --- list ---------------------------------------------------------------------------------------


def test_list_answers_newest_first_with_items_the_client_can_parse(client, env, make_session):
    older = make_session()
    newer = make_session()

    page = list_sessions(client, env)

    assert [item["id"] for item in page["data"]] == [newer["id"], older["id"]]
    assert page["pagination"] == {}
    for item in page["data"]:
        assert SESSION_ITEM_KEYS <= item.keys()
        assert "triggerConfig" not in item


def test_list_shows_only_the_callers_environment(client, env, make_environment, make_session, insert_session):
    mine = make_session()
    insert_session(environment=make_environment())

    assert listed_ids(client, env) == [mine["id"]]


def test_list_filters_by_type(client, env, make_session):
    agent = make_session(type="chat.agent")
    other = make_session(type="other")

    assert listed_ids(client, env, **{"filter[type]": "other"}) == [other["id"]]
    assert set(listed_ids(client, env, **{"filter[type]": "chat.agent,other"})) == {agent["id"], other["id"]}


def test_list_filters_by_any_of_the_tags(client, env, make_session):
    ab = make_session(tags=["a", "b"])
    c = make_session(tags=["c"])
    make_session(tags=[])

    assert listed_ids(client, env, **{"filter[tags]": "a"}) == [ab["id"]]
    assert set(listed_ids(client, env, **{"filter[tags]": "b,c"})) == {ab["id"], c["id"]}
    assert listed_ids(client, env, **{"filter[tags]": "z"}) == []


def test_list_filters_by_task_identifier(client, env, make_session):
    make_session(taskIdentifier="agent")
    other = make_session(taskIdentifier="summarizer")

    assert listed_ids(client, env, **{"filter[taskIdentifier]": "summarizer"}) == [other["id"]]


def test_list_filters_by_external_id(client, env, make_session):
    wanted = make_session()
    make_session()

    assert listed_ids(client, env, **{"filter[externalId]": wanted["externalId"]}) == [wanted["id"]]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("ACTIVE", {"active"}),
        ("CLOSED", {"closed"}),
        ("EXPIRED", {"expired"}),
        ("ACTIVE,CLOSED", {"active", "closed"}),
        ("CLOSED,EXPIRED,ACTIVE", {"active", "closed", "expired"}),
    ],
)
def test_list_filters_by_derived_status(client, env, make_session, insert_session, status, expected):
    past = utcnow() - timedelta(hours=2)
    sessions = {
        "active": make_session()["id"],
        "closed": make_session()["id"],
        "expired": insert_session(created_at=past, expires_at=past + timedelta(hours=1)).friendly_id,
    }
    client.post(f"{SESSIONS}/{sessions['closed']}/close", json={}, headers=bearer(env.api_key))

    ids = listed_ids(client, env, **{"filter[status]": status})

    assert sorted(ids) == sorted(sessions[name] for name in expected)


def test_list_filters_by_created_at_from_and_to_inclusively(client, env, insert_session):
    days = [datetime(2020, 1, 1), datetime(2021, 1, 1), datetime(2022, 1, 1)]
    ids = [insert_session(created_at=day, updated_at=day).friendly_id for day in days]

    since = listed_ids(client, env, **{"filter[createdAt][from]": epoch_ms(days[1])})
    until = listed_ids(client, env, **{"filter[createdAt][to]": epoch_ms(days[1])})
    between = listed_ids(
        client,
        env,
        **{
            "filter[createdAt][from]": epoch_ms(datetime(2020, 6, 1)),
            "filter[createdAt][to]": epoch_ms(days[2]),
        },
    )

    assert since == [ids[2], ids[1]]
    assert until == [ids[1], ids[0]]
    assert between == [ids[2], ids[1]]


def test_list_filters_by_created_at_period_and_ignores_an_unparsable_one(client, env, insert_session):
    now = utcnow()
    old = insert_session(created_at=now - timedelta(days=3)).friendly_id
    recent = insert_session(created_at=now - timedelta(hours=1)).friendly_id

    assert listed_ids(client, env, **{"filter[createdAt][period]": "1d"}) == [recent]
    assert listed_ids(client, env, **{"filter[createdAt][period]": "7d"}) == [recent, old]
    assert listed_ids(client, env, **{"filter[createdAt][period]": "soon"}) == [recent, old]


def test_list_pages_forward_with_next_then_back_with_previous(client, env, make_session):
    ids = [make_session()["id"] for _ in range(5)][::-1]

    first = list_sessions(client, env, **{"page[size]": 2})
    second = list_sessions(client, env, **{"page[size]": 2, "page[after]": first["pagination"]["next"]})
    third = list_sessions(client, env, **{"page[size]": 2, "page[after]": second["pagination"]["next"]})
    back = list_sessions(client, env, **{"page[size]": 2, "page[before]": second["pagination"]["previous"]})

    assert [item["id"] for item in first["data"]] == ids[0:2]
    assert [item["id"] for item in second["data"]] == ids[2:4]
    assert [item["id"] for item in third["data"]] == ids[4:5]
    assert "previous" not in first["pagination"]
    assert "next" not in third["pagination"]
    assert [item["id"] for item in back["data"]] == ids[0:2]
    assert "previous" not in back["pagination"]
    assert back["pagination"]["next"] == first["pagination"]["next"]


def test_list_with_both_cursors_is_a_400(client, env, make_session):
    make_session()
    make_session()
    cursor = list_sessions(client, env, **{"page[size]": 1})["pagination"]["next"]

    response = client.get(
        SESSIONS, query_string={"page[after]": cursor, "page[before]": cursor}, headers=bearer(env.api_key)
    )

    assert response.status_code == 400
    assert response.get_json() == {
        "error": "Cannot pass both page[after] and page[before] on the same request"
    }


def _b64(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        _b64(b"not json"),
        _b64(b'{"a": 1}'),
        _b64(b'["1", "cabc"]'),
        _b64(b"[1, 2]"),
        _b64(b'[1, "cab\\u0000c"]'),
        _b64(b'[1, "c/../x"]'),
        _b64(b'[99999999999999999999999, "cabc"]'),
        _b64(b"\xff\xfe\xfd"),
    ],
    ids=[
        "garbage",
        "not-json",
        "object",
        "string-time",
        "int-id",
        "nul-id",
        "path-id",
        "huge-time",
        "not-utf8",
    ],
)
@pytest.mark.parametrize("direction", ["page[after]", "page[before]"])
def test_list_with_a_cursor_it_did_not_make_is_a_400(client, env, direction, cursor):
    response = client.get(SESSIONS, query_string={direction: cursor}, headers=bearer(env.api_key))

    assert response.status_code == 400
    assert response.get_json() == {
        "error": "Invalid page cursor: pass back a pagination.next or .previous value"
    }


@pytest.mark.parametrize("size", ["0", "101", "-1", "abc", "1.5", "", "99999999999999999999"])
def test_list_page_size_outside_1_to_100_is_a_422(client, env, size):
    response = client.get(SESSIONS, query_string={"page[size]": size}, headers=bearer(env.api_key))

    assert response.status_code == 422
    assert response.get_json()["error"].startswith("Query Error: page[size]")


@pytest.mark.parametrize("size", [1, 100])
def test_list_page_size_bounds_are_inclusive(client, env, make_session, size):
    make_session()
    make_session()

    page = list_sessions(client, env, **{"page[size]": size})

    assert len(page["data"]) == min(size, 2)


def test_list_with_an_unknown_status_is_a_422(client, env):
    response = client.get(
        SESSIONS, query_string={"filter[status]": "ACTIVE,OPEN"}, headers=bearer(env.api_key)
    )

    assert response.status_code == 422
    assert "OPEN" in response.get_json()["error"]


# --- CORS, 405, OpenAPI -------------------------------------------------------------------------

ROUTES = [
    ("POST", SESSIONS),
    ("GET", SESSIONS),
    ("GET", f"{SESSIONS}/session_x"),
    ("PATCH", f"{SESSIONS}/chat-1"),
    ("POST", f"{SESSIONS}/chat-1/close"),
    ("POST", f"{SESSIONS}/chat-1/end-and-continue"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_preflight_is_answered_on_every_route_without_credentials(client, method, path):
    response = client.options(
        path,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type,x-trigger-api-version",
        },
    )

    assert response.status_code == 200
    assert response.get_json() == {}
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in response.headers["Vary"]
    assert response.headers["Access-Control-Allow-Methods"] == "GET,HEAD,PUT,PATCH,POST,DELETE"
    assert (
        response.headers["Access-Control-Allow-Headers"] == "authorization,content-type,x-trigger-api-version"
    )
    assert response.headers["Access-Control-Max-Age"] == "300"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_responses_reflect_the_origin_and_expose_the_jwt_headers_even_on_errors(client, method, path):
    response = client.open(path, method=method, json={}, headers={"Origin": "https://app.example"})

    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert response.headers["Access-Control-Expose-Headers"] == "x-trigger-jwt,x-trigger-jwt-claims"


def test_successful_responses_carry_cors_headers(client, env, make_session):
    make_session()

    response = client.get(SESSIONS, headers={**bearer(env.api_key), "Origin": "https://app.example"})

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", SESSIONS, {"GET", "POST"}),
        ("PUT", SESSIONS, {"GET", "POST"}),
        ("PUT", f"{SESSIONS}/chat-1", {"GET", "PATCH"}),
        ("DELETE", f"{SESSIONS}/chat-1/close", {"POST"}),
        ("PUT", f"{SESSIONS}/chat-1/end-and-continue", {"POST"}),
        ("POST", "/api/v1/openapi.json", {"GET"}),
    ],
)
def test_an_unsupported_method_is_a_405_naming_the_allowed_ones(client, env, method, path, allowed):
    response = client.open(path, method=method, headers=bearer(env.api_key))

    assert response.status_code == 405
    assert response.get_json() == {"error": "Method not allowed"}
    assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_the_openapi_document_describes_every_control_route(client):
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] and document["info"]["version"]
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "patch", "put", "delete"}
    }
    assert operations == {
        ("POST", SESSIONS),
        ("GET", SESSIONS),
        ("GET", f"{SESSIONS}/{{session_ref}}"),
        ("PATCH", f"{SESSIONS}/{{session_ref}}"),
        ("POST", f"{SESSIONS}/{{session_ref}}/close"),
        ("POST", f"{SESSIONS}/{{session_ref}}/end-and-continue"),
        ("GET", f"{SESSIONS}/{{session_ref}}/runs"),
        ("GET", "/api/v1/runs/{runId}"),
        ("POST", "/api/v1/runs/{runId}/heartbeat"),
        ("POST", "/api/v1/runs/{runId}/complete"),
        ("POST", "/api/v1/runs/{runId}/fail"),
        ("POST", "/api/v1/auth/jwt/claims"),
    }
    for item in document["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                assert any(code.startswith("2") for code in operation["responses"])
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in document["components"]["schemas"]


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)
