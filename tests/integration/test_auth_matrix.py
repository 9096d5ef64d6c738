"""The auth matrix of wire reference §6 on every control-plane route, on SQLite and PostgreSQL.

Every credential meets every route on a fresh session; the table below says what the wire gives.
Failures carry the exact bodies of §3, and a caller from another environment learns nothing.
"""

import base64
import json
import re
import secrets
import threading
import time
from dataclasses import replace

import pytest

from session_core.auth import mint_token
from session_core.scopes import session_token_scopes
from tests.integration.sessions_api import bearer, forbidden_body, session_body

SESSIONS = "/api/v1/sessions"

ROUTES = {
    "create": lambda s: ("POST", SESSIONS, session_body()),
    "list": lambda s: ("GET", SESSIONS, None),
    "retrieve_by_id": lambda s: ("GET", f"{SESSIONS}/{s['id']}", None),
    "retrieve_by_external_id": lambda s: ("GET", f"{SESSIONS}/{s['externalId']}", None),
    "update": lambda s: ("PATCH", f"{SESSIONS}/{s['id']}", {"tags": ["x"]}),
    "close": lambda s: ("POST", f"{SESSIONS}/{s['id']}/close", {}),
    "end_and_continue": lambda s: ("POST", f"{SESSIONS}/{s['id']}/end-and-continue", {"reason": "manual"}),
}
SUCCESS = {
    "create": 201,
    "list": 200,
    "retrieve_by_id": 200,
    "retrieve_by_external_id": 200,
    "update": 200,
    "close": 200,
    "end_and_continue": 200,
}


def allowed_on(*routes):
    """Expected statuses for a token allowed on ``routes`` and refused (403) everywhere else."""
    return {route: SUCCESS[route] if route in routes else 403 for route in ROUTES}


def everywhere(status):
    return dict.fromkeys(ROUTES, status)


READ = ("list", "retrieve_by_id", "retrieve_by_external_id")
ADMIN = ("update", "close")
WRITE = ("create", "end_and_continue")
SESSION_TOKEN = ("retrieve_by_id", "retrieve_by_external_id", "end_and_continue")
FOREIGN = {**everywhere(404), "create": 201, "list": 200}

EXPECTED = {
    "secret_key": dict(SUCCESS),
    "session_token_for_id": allowed_on(*SESSION_TOKEN),
    "session_token_for_external_id": allowed_on(*SESSION_TOKEN),
    "under_scoped_token": allowed_on(),
    "scope:read:sessions": allowed_on(*READ),
    "scope:read:all": allowed_on(*READ),
    "scope:admin:sessions": allowed_on(*ADMIN),
    "scope:admin:all": allowed_on(*ADMIN),
    "scope:write:sessions": allowed_on(*WRITE),
    "scope:write:all": allowed_on(*WRITE),
    "scope:admin": dict(SUCCESS),
    "expired_token": everywhere(401),
    "forged_signature": everywhere(401),
    "tampered_scopes": everywhere(401),
    "unsigned_alg_none": everywhere(401),
    "token_without_pub": everywhere(401),
    "token_for_unknown_environment": everywhere(401),
    "public_key": everywhere(401),
    "unknown_secret_key": everywhere(401),
    "no_header": everywhere(401),
    "empty_bearer": everywhere(401),
    "foreign_admin_token": FOREIGN,
    "foreign_secret_key": FOREIGN,
}

_EXPIRED = re.escape("Public Access Token has expired. ") + ".+"
_INVALID = re.escape("Public Access Token is invalid: ") + ".+"
UNAUTHENTICATED = {
    "expired_token": _EXPIRED,
    "forged_signature": _INVALID,
    "tampered_scopes": _INVALID,
    "unsigned_alg_none": _INVALID,
    "token_without_pub": _INVALID,
    "token_for_unknown_environment": re.escape("Invalid Public Access Token, environment not found."),
    "public_key": re.escape("Public API keys are not allowed for this request"),
    "unknown_secret_key": re.escape("Invalid API Key"),
    "no_header": re.escape("Invalid or Missing API key"),
    "empty_bearer": re.escape("Invalid or Missing API key"),
}


def _b64(value):
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _with_claims(token, **claims):
    """``token`` with its payload changed and its signature kept."""
    header, _, signature = token.split(".")
    return ".".join([header, _b64({**_claims(token), **claims}), signature])


def _unsigned(token):
    """``token`` re-headed as ``alg: none``, its signature dropped."""
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{token.split('.')[1]}."


def credential(name, env, make_environment, session):
    """The ``Authorization`` header value for credential ``name`` (None: send no header)."""
    if name.startswith("scope:"):
        return mint_token(env, [name.removeprefix("scope:")])
    values = {
        "secret_key": lambda: env.api_key,
        "session_token_for_id": lambda: mint_token(env, session_token_scopes(session["id"])),
        "session_token_for_external_id": lambda: session["publicAccessToken"],
        "under_scoped_token": lambda: mint_token(env, ["read:runs:run_1", "write:tasks:other"]),
        "expired_token": lambda: mint_token(env, ["admin"], ttl_seconds=60, now=time.time() - 3600),
        "forged_signature": lambda: mint_token(
            replace(env, api_key=f"tr_dev_{secrets.token_urlsafe(24)}"), ["admin"]
        ),
        "tampered_scopes": lambda: _with_claims(mint_token(env, ["read:runs:run_1"]), scopes=["admin"]),
        "unsigned_alg_none": lambda: _unsigned(mint_token(env, ["admin"])),
        "token_without_pub": lambda: mint_token(env, ["admin"], extra_claims={"pub": False}),
        "token_for_unknown_environment": lambda: mint_token(replace(env, id="cnosuchenvironment"), ["admin"]),
        "public_key": lambda: f"pk_dev_{secrets.token_urlsafe(16)}",
        "unknown_secret_key": lambda: f"tr_dev_{secrets.token_urlsafe(24)}",
        "no_header": lambda: None,
        "empty_bearer": lambda: "",
        "foreign_admin_token": lambda: mint_token(make_environment(), ["admin"]),
        "foreign_secret_key": lambda: make_environment().api_key,
    }
    return values[name]()


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_credential_gets_what_the_wire_gives_on_every_route(
    client, env, make_environment, make_session, name, route
):
    session = make_session()
    token = credential(name, env, make_environment, session)
    method, path, body = ROUTES[route](session)
    headers = {} if token is None else bearer(token)

    response = client.open(path, method=method, json=body, headers=headers)

    expected = EXPECTED[name][route]
    assert response.status_code == expected, response.get_json()
    answer = response.get_json()
    if expected == 401:
        assert set(answer) == {"error"}
        assert re.fullmatch(UNAUTHENTICATED[name], answer["error"]), answer
    if expected == 403:
        assert answer == forbidden_body(", ".join(_claims(token)["scopes"]))
    if name.startswith("foreign"):
        text = response.get_data(as_text=True)
        assert session["id"] not in text and session["externalId"] not in text


def test_a_foreign_environment_creating_the_same_external_id_gets_its_own_session(
    client, make_environment, make_session
):
    session = make_session()
    foreign = make_environment()

    response = client.post(
        SESSIONS, json=session_body(externalId=session["externalId"]), headers=bearer(foreign.api_key)
    )

    assert response.status_code == 201
    assert response.get_json()["id"] != session["id"]


def test_a_foreign_environment_lists_none_of_the_sessions(client, make_environment, make_session):
    make_session()

    response = client.get(SESSIONS, headers=bearer(mint_token(make_environment(), ["read:sessions"])))

    assert response.status_code == 200
    assert response.get_json()["data"] == []


def test_admin_routes_match_the_token_against_the_url_form_only(client, env, make_session):
    session = make_session()
    token = mint_token(env, [f"admin:sessions:{session['externalId']}"])

    by_external_id = client.patch(f"{SESSIONS}/{session['externalId']}", json={}, headers=bearer(token))
    by_id = client.patch(f"{SESSIONS}/{session['id']}", json={}, headers=bearer(token))

    assert by_external_id.status_code == 200
    assert by_id.status_code == 403


def test_an_under_scoped_token_sees_403_on_admin_routes_even_for_a_missing_session(client, env):
    token = mint_token(env, ["read:runs:run_1"])

    update = client.patch(f"{SESSIONS}/chat-missing", json={}, headers=bearer(token))
    close = client.post(f"{SESSIONS}/chat-missing/close", json={}, headers=bearer(token))

    assert (update.status_code, close.status_code) == (403, 403)


def test_the_retrieve_loader_answers_404_for_a_missing_session_before_checking_scopes(client, env):
    token = mint_token(env, ["read:runs:run_1"])

    response = client.get(f"{SESSIONS}/chat-missing", headers=bearer(token))

    assert response.status_code == 404
    assert response.get_json() == {"error": "Not found"}


def test_a_read_tasks_scope_lists_only_with_a_matching_task_filter(client, env, make_session):
    foo = make_session(taskIdentifier="foo")
    make_session(taskIdentifier="bar")
    token = bearer(mint_token(env, ["read:tasks:foo"]))

    matching = client.get(SESSIONS, query_string={"filter[taskIdentifier]": "foo"}, headers=token)
    unfiltered = client.get(SESSIONS, headers=token)
    other = client.get(SESSIONS, query_string={"filter[taskIdentifier]": "bar"}, headers=token)
    wider = client.get(SESSIONS, query_string={"filter[taskIdentifier]": "foo,bar"}, headers=token)

    assert matching.status_code == 200
    assert [item["id"] for item in matching.get_json()["data"]] == [foo["id"]]
    assert (unfiltered.status_code, other.status_code, wider.status_code) == (403, 403, 403)
    assert unfiltered.get_json() == forbidden_body("read:tasks:foo")


def test_a_general_read_tasks_scope_lists_without_a_filter(client, env, make_session):
    session = make_session()

    response = client.get(SESSIONS, headers=bearer(mint_token(env, ["read:tasks"])))

    assert response.status_code == 200
    assert [item["id"] for item in response.get_json()["data"]] == [session["id"]]


def test_a_write_tasks_scope_creates_sessions_for_that_task_only(client, env):
    token = bearer(mint_token(env, ["write:tasks:agent"]))

    allowed = client.post(SESSIONS, json=session_body(taskIdentifier="agent"), headers=token)
    refused = client.post(SESSIONS, json=session_body(taskIdentifier="other"), headers=token)

    assert (allowed.status_code, refused.status_code) == (201, 403)


def test_a_task_scope_cannot_take_over_another_tasks_session_through_create(client, env):
    """A token for task ``agent`` naming the externalId of task ``other``'s session gets a 403,
    and the session keeps its triggerConfig: the upsert is rolled back and no token is minted."""
    owner = client.post(
        SESSIONS, json=session_body(taskIdentifier="other"), headers=bearer(env.api_key)
    ).get_json()
    attack = session_body(
        externalId=owner["externalId"], taskIdentifier="agent", triggerConfig={"basePayload": {"evil": 1}}
    )

    response = client.post(SESSIONS, json=attack, headers=bearer(mint_token(env, ["write:tasks:agent"])))
    after = client.get(f"{SESSIONS}/{owner['id']}", headers=bearer(env.api_key)).get_json()

    assert response.status_code == 403
    assert response.get_json() == forbidden_body("write:tasks:agent")
    assert after["triggerConfig"] == owner["triggerConfig"]
    assert after["updatedAt"] == owner["updatedAt"]


@pytest.mark.parametrize(
    ("owner_task", "scopes"),
    [
        ("agent", lambda s: ["write:tasks:agent"]),
        ("other", lambda s: ["write:tasks:agent", f"write:sessions:{s['externalId']}"]),
        ("other", lambda s: ["write:tasks:agent", f"write:sessions:{s['id']}"]),
        ("other", lambda s: ["write:tasks:agent", "write:sessions"]),
        ("other", lambda s: ["write:tasks:agent", "write:tasks:other"]),
    ],
    ids=["own_task", "session_by_external_id", "session_by_id", "all_sessions", "existing_task"],
)
def test_a_token_holding_write_on_the_existing_session_or_its_task_gets_it_back(
    client, env, owner_task, scopes
):
    owner = client.post(
        SESSIONS, json=session_body(taskIdentifier=owner_task), headers=bearer(env.api_key)
    ).get_json()

    response = client.post(
        SESSIONS,
        json=session_body(externalId=owner["externalId"], taskIdentifier="agent"),
        headers=bearer(mint_token(env, scopes(owner))),
    )

    assert response.status_code == 200, response.get_json()
    assert (response.get_json()["id"], response.get_json()["isCached"]) == (owner["id"], True)


def test_a_secret_key_create_stays_idempotent_across_tasks(client, env):
    owner = client.post(
        SESSIONS, json=session_body(taskIdentifier="other"), headers=bearer(env.api_key)
    ).get_json()

    again = client.post(
        SESSIONS,
        json=session_body(externalId=owner["externalId"], taskIdentifier="agent"),
        headers=bearer(env.api_key),
    )

    assert (again.status_code, again.get_json()["id"]) == (200, owner["id"])


def test_a_refused_takeover_of_a_closed_session_answers_403_not_409(client, env):
    """The scope check comes before the closed check, so a token learns nothing about the session."""
    owner = client.post(
        SESSIONS, json=session_body(taskIdentifier="other"), headers=bearer(env.api_key)
    ).get_json()
    client.post(f"{SESSIONS}/{owner['id']}/close", json={}, headers=bearer(env.api_key))

    response = client.post(
        SESSIONS,
        json=session_body(externalId=owner["externalId"], taskIdentifier="agent"),
        headers=bearer(mint_token(env, ["write:tasks:agent"])),
    )

    assert response.status_code == 403


def test_concurrent_takeover_attempts_are_all_refused_and_change_nothing(app, env):
    """Attackers racing each other and the owner's own idempotent creates: every attacker gets a
    403, the owner keeps getting its session, and no attacker's triggerConfig is ever stored."""
    client = app.test_client()
    owner = client.post(
        SESSIONS, json=session_body(taskIdentifier="other"), headers=bearer(env.api_key)
    ).get_json()
    attacker = bearer(mint_token(env, ["write:tasks:agent"]))
    attack = session_body(
        externalId=owner["externalId"], taskIdentifier="agent", triggerConfig={"basePayload": {"evil": 1}}
    )
    again = session_body(
        externalId=owner["externalId"], taskIdentifier="other", triggerConfig=owner["triggerConfig"]
    )
    calls = [(attack, attacker)] * 6 + [(again, bearer(env.api_key))] * 2
    start = threading.Barrier(len(calls))
    statuses = []

    def create(body, headers):
        caller = app.test_client()
        start.wait()
        statuses.append((headers is attacker, caller.post(SESSIONS, json=body, headers=headers).status_code))

    threads = [threading.Thread(target=create, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = client.get(f"{SESSIONS}/{owner['id']}", headers=bearer(env.api_key)).get_json()

    assert sorted(statuses) == [(False, 200)] * 2 + [(True, 403)] * 6
    assert after["triggerConfig"] == owner["triggerConfig"]
