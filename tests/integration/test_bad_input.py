"""Bad input gets a clear 4xx, never a 500 (DESIGN decision 1, "Rules for every route").

Hand-picked cases, each run on SQLite and PostgreSQL; ``test_fuzz.py`` searches the rest.
"""

import base64
import io
import json
import secrets
from urllib.parse import quote

import pytest

from tests.integration.sessions_api import bearer, route_parameters, route_path, session_body

SESSIONS = "/api/v1/sessions"
JSON = {"Content-Type": "application/json"}

#: (name, method, path template, body limit): every route that reads a body.
BODY_ROUTES = [
    ("create", "POST", SESSIONS, 32 * 1024),
    ("update", "PATCH", SESSIONS + "/{ref}", 32 * 1024),
    ("close", "POST", SESSIONS + "/{ref}/close", 1024),
    ("end_and_continue", "POST", SESSIONS + "/{ref}/end-and-continue", 1024),
]
ROUTE_IDS = [name for name, *_ in BODY_ROUTES]


@pytest.fixture
def session(make_session):
    return make_session()


def send(client, env, route, session, data):
    _, method, template, _ = route
    return client.open(
        template.format(ref=session["id"]),
        method=method,
        data=data,
        headers={**JSON, **bearer(env.api_key)},
        # The test client leaves out a zero Content-Length; a real client sends it.
        environ_overrides={"CONTENT_LENGTH": str(len(data))},
    )


def valid_body(route):
    return {
        "create": session_body(),
        "update": {"tags": ["a"]},
        "close": {"reason": "done"},
        "end_and_continue": {"reason": "manual"},
    }[route[0]]


# --- malformed and unusual JSON ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"type": }', b"{'type': 'x'}", b"\xff\xfe{}", b'{"a": 1} trailing', b"[1,]", b"nul", b'"\\x"'],
    ids=[
        "unclosed",
        "missing-value",
        "single-quotes",
        "not-utf8",
        "trailing-data",
        "trailing-comma",
        "bare-word",
        "bad-escape",
    ],
)
@pytest.mark.parametrize("route", BODY_ROUTES, ids=ROUTE_IDS)
def test_malformed_json_is_a_400_invalid_json(client, env, session, route, raw):
    response = send(client, env, route, session, raw)

    assert response.status_code == 400
    assert response.get_json() == {"error": "Invalid JSON"}
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("raw", [b"", b"   \n\t"], ids=["empty", "whitespace"])
@pytest.mark.parametrize("route", BODY_ROUTES, ids=ROUTE_IDS)
def test_an_empty_body_is_a_400(client, env, session, route, raw):
    response = send(client, env, route, session, raw)

    assert response.status_code == 400
    assert response.get_json() == {"error": "Request body is empty"}


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"42", b"null", b"true"])
@pytest.mark.parametrize("route", BODY_ROUTES, ids=ROUTE_IDS)
def test_a_body_that_is_not_an_object_is_a_422(client, env, session, route, raw):
    response = send(client, env, route, session, raw)

    assert response.status_code == 422
    assert response.get_json()["error"] == "Request body must be a JSON object"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"reason": "a\\u0000b"}', "Invalid JSON: strings must not contain the NUL character (\\u0000)"),
        (
            b'{"a\\u0000": 1, "reason": "x"}',
            "Invalid JSON: strings must not contain the NUL character (\\u0000)",
        ),
        (b'{"reason": "\\ud800"}', "Invalid JSON: strings must not contain unpaired surrogates"),
        (b'{"reason": "\\udfff\\ud800"}', "Invalid JSON: strings must not contain unpaired surrogates"),
        (b'{"reason": "x", "n": NaN}', "Invalid JSON"),
        (b'{"reason": "x", "n": Infinity}', "Invalid JSON"),
        (b'{"reason": "x", "n": -Infinity}', "Invalid JSON"),
        (b'{"reason": "x", "n": 1e400}', "Invalid JSON: numbers must be finite"),
    ],
    ids=[
        "nul",
        "nul-key",
        "lone-surrogate",
        "reversed-pair",
        "nan",
        "infinity",
        "minus-infinity",
        "overflow",
    ],
)
@pytest.mark.parametrize("route", BODY_ROUTES, ids=ROUTE_IDS)
def test_json_a_database_cannot_store_is_a_400(client, env, session, route, raw, message):
    response = send(client, env, route, session, raw)

    assert response.status_code == 400
    assert response.get_json() == {"error": message}


@pytest.mark.parametrize("route", BODY_ROUTES[:2], ids=ROUTE_IDS[:2])
def test_an_integer_too_long_to_parse_is_a_400(client, env, session, route):
    response = send(client, env, route, session, b'{"tags": [], "n": ' + b"9" * 5000 + b"}")

    assert response.status_code == 400
    assert response.get_json() == {"error": "Invalid JSON"}


def test_a_valid_surrogate_pair_and_big_numbers_are_stored_and_answered_intact(client, env):
    metadata = {"emoji": "😀", "big": 10**40, "tiny": 1e-300, "negative": -(2**63)}
    raw = json.dumps(session_body(metadata=metadata)).encode()

    response = client.post(SESSIONS, data=raw, headers={**JSON, **bearer(env.api_key)})

    assert response.status_code == 201
    assert response.get_json()["metadata"] == metadata


# --- nesting and sizes ---------------------------------------------------------------------------


def nested_metadata(levels):
    """A create body whose metadata nests ``levels`` objects deep (the body itself is one more)."""
    return (
        '{"type":"t","taskIdentifier":"t","triggerConfig":{"basePayload":{}},"metadata":'
        + '{"a":' * levels
        + "1"
        + "}" * levels
        + "}"
    ).encode()


def test_metadata_nested_up_to_the_limit_is_stored(client, env):
    response = client.post(SESSIONS, data=nested_metadata(99), headers={**JSON, **bearer(env.api_key)})

    assert response.status_code == 201


@pytest.mark.parametrize("levels", [100, 500, 900, 990, 5000])
def test_metadata_nested_past_the_limit_is_a_400(client, env, levels):
    response = client.post(SESSIONS, data=nested_metadata(levels), headers={**JSON, **bearer(env.api_key)})

    assert response.status_code == 400
    assert response.get_json()["error"].startswith("Invalid JSON")


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ROUTE_IDS)
def test_deeply_nested_arrays_within_the_size_limit_are_a_400(client, env, session, route):
    depth = min(route[3] // 2 - 1, 10_000)
    raw = b"[" * depth + b"]" * depth

    response = send(client, env, route, session, raw)

    assert response.status_code == 400


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ROUTE_IDS)
def test_a_hundred_thousand_nested_arrays_are_refused_as_too_large(client, env, session, route):
    response = send(client, env, route, session, b"[" * 100_000 + b"]" * 100_000)

    assert response.status_code == 413
    assert response.get_json() == {"error": "Request body too large"}


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ROUTE_IDS)
def test_a_body_one_byte_over_the_route_limit_is_a_413(client, env, session, route):
    body = valid_body(route)
    padding = route[3] - len(json.dumps({**body, "pad": ""}).encode()) + 1
    raw = json.dumps({**body, "pad": "x" * padding}).encode()

    response = send(client, env, route, session, raw)

    assert len(raw) == route[3] + 1
    assert response.status_code == 413
    assert response.get_json() == {"error": "Request body too large"}


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ROUTE_IDS)
def test_a_body_exactly_at_the_route_limit_is_read(client, env, session, route):
    body = valid_body(route)
    padding = route[3] - len(json.dumps({**body, "pad": ""}).encode())
    raw = json.dumps({**body, "pad": "x" * padding}).encode()

    response = send(client, env, route, session, raw)

    assert len(raw) == route[3]
    assert response.status_code in (200, 201)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ROUTE_IDS)
def test_a_body_without_content_length_is_a_413(client, env, session, route):
    _, method, template, _ = route
    stream = io.BytesIO(json.dumps(valid_body(route)).encode())

    response = client.open(
        template.format(ref=session["id"]),
        method=method,
        input_stream=stream,
        headers={**JSON, **bearer(env.api_key), "Transfer-Encoding": "chunked"},
    )

    assert response.status_code == 413
    assert response.get_json() == {"error": "Request body too large"}


def test_credentials_are_checked_before_the_body_size(client):
    response = client.post(SESSIONS, data=b"x" * 100_000, headers=JSON)

    assert response.status_code == 401


def test_an_oversized_authorization_header_is_a_401(client):
    response = client.get(SESSIONS, headers=bearer("tr_dev_" + "x" * 1_000_000))

    assert response.status_code == 401
    assert response.get_json() == {"error": "Invalid API Key"}


def test_an_oversized_unrelated_header_does_not_disturb_the_request(client, env):
    response = client.get(SESSIONS, headers={**bearer(env.api_key), "X-Padding": "x" * 1_000_000})

    assert response.status_code == 200


# --- schema violations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"type": 7}, ["type"]),
        ({"type": ""}, ["type"]),
        ({"type": "t" * 65}, ["type"]),
        ({"taskIdentifier": None}, ["taskIdentifier"]),
        ({"triggerConfig": "x"}, ["triggerConfig"]),
        ({"triggerConfig": {}}, ["triggerConfig", "basePayload"]),
        ({"triggerConfig": {"basePayload": []}}, ["triggerConfig", "basePayload"]),
        ({"triggerConfig": {"basePayload": {}, "machine": "huge"}}, ["triggerConfig", "machine"]),
        ({"triggerConfig": {"basePayload": {}, "maxAttempts": 11}}, ["triggerConfig", "maxAttempts"]),
        ({"triggerConfig": {"basePayload": {}, "maxAttempts": 10**30}}, ["triggerConfig", "maxAttempts"]),
        ({"triggerConfig": {"basePayload": {}, "maxAttempts": "3"}}, ["triggerConfig", "maxAttempts"]),
        ({"tags": "a"}, ["tags"]),
        ({"tags": [1]}, ["tags", "0"]),
        ({"tags": ["t"] * 11}, ["tags"]),
        ({"tags": ["t" * 129]}, ["tags", "0"]),
        ({"metadata": [1]}, ["metadata"]),
        ({"externalId": ""}, ["externalId"]),
        ({"externalId": "   "}, ["externalId"]),
        ({"externalId": "e" * 257}, ["externalId"]),
        ({"externalId": 5}, ["externalId"]),
        ({"externalId": "session_abc"}, ["externalId"]),
        ({"expiresAt": "next tuesday"}, ["expiresAt"]),
        ({"expiresAt": True}, ["expiresAt"]),
        ({"expiresAt": 1e20}, ["expiresAt"]),
        ({"expiresAt": "0001-01-01T00:00:00Z"}, ["expiresAt"]),
    ],
)
def test_a_create_body_breaking_the_schema_is_a_422_naming_the_field(client, env, overrides, path):
    response = client.post(SESSIONS, json=session_body(**overrides), headers=bearer(env.api_key))

    assert response.status_code == 422
    error = response.get_json()
    assert error["error"].startswith("Validation error: ")
    assert path in [detail["path"] for detail in error["details"]]


@pytest.mark.parametrize(
    ("route_name", "body", "path"),
    [
        ("update", {"tags": [None]}, ["tags", "0"]),
        ("update", {"metadata": "text"}, ["metadata"]),
        ("update", {"externalId": "session_x"}, ["externalId"]),
        ("close", {"reason": "r" * 257}, ["reason"]),
        ("close", {"reason": 1}, ["reason"]),
        ("end_and_continue", {}, ["reason"]),
        ("end_and_continue", {"reason": "r" * 65}, ["reason"]),
        ("end_and_continue", {"reason": "x", "callingRunId": ""}, ["callingRunId"]),
    ],
)
def test_other_bodies_breaking_the_schema_are_a_422_naming_the_field(
    client, env, session, route_name, body, path
):
    route = next(r for r in BODY_ROUTES if r[0] == route_name)

    response = send(client, env, route, session, json.dumps(body))

    assert response.status_code == 422
    assert path in [detail["path"] for detail in response.get_json()["details"]]


def test_unknown_body_keys_are_dropped(client, env):
    response = client.post(SESSIONS, json=session_body(surprise={"x": 1}), headers=bearer(env.api_key))

    assert response.status_code == 201
    assert "surprise" not in response.get_json()


# --- ids, queries and tokens no row can hold -----------------------------------------------------

ODD_REFS = {
    "encoded-surrogate": "%ED%A0%80",
    "not-utf8": "%FF%FE",
    "10k-chars": "x" * 10_000,
    "friendly-10k-chars": "session_" + "x" * 10_000,
    "slashes": "a/b/c",
    "dot-dot": "..%2F..%2Fetc",
    "emoji-and-line-breaks": quote("😀 \t\r\n", safe=""),
    "bare-prefix": "session_",
    "space": "%20",
}


@pytest.mark.parametrize("ref", ODD_REFS.values(), ids=ODD_REFS.keys())
@pytest.mark.parametrize(
    ("method", "suffix", "body", "message"),
    [
        ("GET", "", None, "Not found"),
        ("PATCH", "", {}, "Session not found"),
        ("POST", "/close", {}, "Session not found"),
        ("POST", "/end-and-continue", {"reason": "x"}, "Session not found"),
    ],
    ids=["retrieve", "update", "close", "end_and_continue"],
)
def test_an_unknown_or_unstorable_session_id_is_a_404(client, env, ref, method, suffix, body, message):
    response = client.open(f"{SESSIONS}/{ref}{suffix}", method=method, json=body, headers=bearer(env.api_key))

    assert response.status_code == 404
    assert response.get_json() == {"error": message}


#: Path parameters no database can hold: each is a 400 ``Params Error`` on every route.
UNSTORABLE_PARAMS = {"nul": "\x00", "inner-nul": "a\x00b", "friendly-nul": "session_a\x00b"}


def test_a_nul_in_the_session_of_a_records_read_is_a_400(client, env):
    response = client.get("/realtime/v1/sessions/%00/in/records", headers=bearer(env.api_key))

    assert (response.status_code, response.get_json()) == (400, {"error": "Params Error"})


def test_a_path_parameter_no_database_can_hold_is_a_400_on_every_route(app, client, env, make_session):
    """Every path parameter of every route in the URL map, the others valid, meets each value."""
    created = make_session()
    valid = {"session_ref": created["id"], "io": "in", "name": f"sessions/{created['externalId']}/in"}
    answers = {}
    for rule, method, argument in route_parameters(app):
        for label, value in UNSTORABLE_PARAMS.items():
            values = {**dict.fromkeys(rule.arguments, "x"), **valid, argument: value}
            path = route_path(rule, values, lambda text: quote(text, safe=""))
            response = client.open(
                path, method=method, data=b"{}", headers={**JSON, **bearer(env.api_key)}, buffered=False
            )
            answers[(method, rule.rule, argument, label)] = response.status_code
            response.close()

    assert answers, "the URL map has no path parameters"
    assert {key: status for key, status in answers.items() if status != 400} == {}


#: Every request header a route reads.
READ_HEADERS = ["X-Part-Id", "Last-Event-ID", "Timeout-Seconds", "X-Peek-Settled", "s2-format", "Accept"]


@pytest.mark.parametrize("header", READ_HEADERS)
def test_a_nul_in_a_header_value_is_a_400_on_every_route(app, client, env, make_session, header):
    created = make_session()
    valid = {"session_ref": created["id"], "io": "in", "name": f"sessions/{created['externalId']}/in"}
    answers = {}
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path = route_path(rule, {**dict.fromkeys(rule.arguments, "x"), **valid}, quote)
            response = client.open(
                path,
                method=method,
                data=b"{}",
                headers={**JSON, **bearer(env.api_key), header: "1\x00"},
                buffered=False,
            )
            answers[(method, rule.rule)] = response.status_code
            response.close()

    assert {key: status for key, status in answers.items() if status != 400} == {}


@pytest.mark.parametrize("value", ["a%00b", "%ED%A0%80", "x" * 5000, "a%00," * 500])
@pytest.mark.parametrize("name", ["type", "tags", "taskIdentifier", "externalId"])
def test_odd_filter_values_match_nothing_instead_of_failing(client, env, make_session, name, value):
    make_session()

    response = client.get(f"{SESSIONS}?filter[{name}]={value}", headers=bearer(env.api_key))

    assert response.status_code == 200
    assert response.get_json()["data"] == []


@pytest.mark.parametrize("name", ["type", "tags", "taskIdentifier", "externalId", "status"])
def test_a_filter_of_only_commas_filters_nothing(client, env, make_session, name):
    session = make_session()

    response = client.get(f"{SESSIONS}?filter[{name}]=,,,", headers=bearer(env.api_key))

    assert response.status_code == 200
    assert [item["id"] for item in response.get_json()["data"]] == [session["id"]]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("filter[createdAt][period]=1e308y", 200),
        ("filter[createdAt][from]=-1", 422),
        ("filter[createdAt][from]=1e3", 422),
        ("filter[createdAt][to]=253402300800000", 422),
        ("filter[createdAt][to]=253402300799999", 200),
        ("filter[status]=", 200),
        ("filter[status]=active", 422),
        ("page[after]=", 422),
        ("page[before]=" + "c" * 600, 422),
        ("page[size]=%00", 422),
    ],
)
def test_odd_list_queries_get_a_clear_answer(client, env, query, status):
    response = client.get(f"{SESSIONS}?{query}", headers=bearer(env.api_key))

    assert response.status_code == status


@pytest.mark.parametrize("period", ["9999y", "99999999999999y", "30000000000000h"])
def test_a_period_reaching_back_past_1970_lists_everything(client, env, make_session, period):
    session = make_session()

    response = client.get(
        SESSIONS, query_string={"filter[createdAt][period]": period}, headers=bearer(env.api_key)
    )

    assert response.status_code == 200
    assert [item["id"] for item in response.get_json()["data"]] == [session["id"]]


def test_both_page_cursors_are_refused_even_when_neither_is_valid(client, env):
    response = client.get(f"{SESSIONS}?page[after]=x&page[before]=y", headers=bearer(env.api_key))

    assert response.status_code == 400
    assert response.get_json() == {
        "error": "Cannot pass both page[after] and page[before] on the same request"
    }


def _b64(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "subject",
    ["a\u0000b", "a\ud800", "", 42, ["x"], None, "x" * 10_000],
    ids=["nul", "surrogate", "empty", "number", "list", "null", "long"],
)
def test_a_token_naming_an_environment_no_row_can_hold_is_a_401(client, subject):
    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    payload = json.dumps({"sub": subject, "pub": True, "scopes": ["admin"]}).encode()
    token = ".".join(_b64(part) for part in (header, payload, secrets.token_bytes(32)))

    response = client.get(SESSIONS, headers=bearer(token))

    assert response.status_code == 401
    assert response.get_json() == {"error": "Invalid Public Access Token, environment not found."}
