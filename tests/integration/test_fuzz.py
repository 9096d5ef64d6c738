"""Generated input never gets a 5xx, on SQLite and PostgreSQL.

Hypothesis throws arbitrary JSON, bytes, query strings and ids at every control-plane route, hostile
text at every path parameter of every route the app serves (read from its URL map), and
schemathesis derives requests (valid and deliberately invalid) from the OpenAPI document we serve.
Example counts stay small so the suite stays fast; a failure prints the request that caused it.
"""

import base64
import json
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.integration.sessions_api import bearer, route_parameters, route_path, session_body

SESSIONS = "/api/v1/sessions"
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))

#: Text with the characters databases and parsers trip on: NUL, lone surrogates, line breaks.
nasty_text = st.text(
    alphabet=st.characters() | st.sampled_from(["\x00", "\ud800", "\udfff", "\n", "/", "%", ","]),
    max_size=40,
) | st.text(max_size=20).map("session_".__add__)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | nasty_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4),
    max_leaves=20,
)


def encode(value):
    """JSON as a lenient client might send it: NaN and Infinity included, surrogates escaped."""
    return json.dumps(value, allow_nan=True).encode()


def body_routes(session_id):
    return {
        "create": ("POST", SESSIONS),
        "update": ("PATCH", f"{SESSIONS}/{session_id}"),
        "close": ("POST", f"{SESSIONS}/{session_id}/close"),
        "end_and_continue": ("POST", f"{SESSIONS}/{session_id}/end-and-continue"),
    }


def url_encode(text, safe=""):
    """Percent-encode ``text``; lone surrogates go out as the bytes a careless client would send."""
    return quote(text, safe=safe, errors="surrogatepass")


def post_raw(client, env, method, path, raw):
    headers = {"Content-Type": "application/json", **bearer(env.api_key)}
    return client.open(path, method=method, data=raw, headers=headers)


def assert_no_server_error(response, request):
    assert response.status_code < 500, (request, response.get_data(as_text=True))


ROUTE_NAMES = ["create", "update", "close", "end_and_continue"]
#: Bodies that keep a route's known keys but put anything at all in them.
FIELDS = {
    "create": ["type", "externalId", "taskIdentifier", "triggerConfig", "tags", "metadata", "expiresAt"],
    "update": ["tags", "metadata", "externalId"],
    "close": ["reason"],
    "end_and_continue": ["callingRunId", "reason"],
}

TRIGGER_CONFIG = [
    "basePayload", "machine", "queue", "tags", "maxAttempts", "idleTimeoutInSeconds", "maxDuration",
    "lockToVersion", "region", "concurrencyKey", "externalDeploymentId", "ttl",
]  # fmt: skip


@pytest.mark.parametrize("route", ROUTE_NAMES)
def test_any_json_body_gets_a_4xx_or_success_never_a_5xx(client, env, make_session, route):
    method, path = body_routes(make_session()["id"])[route]

    @FUZZ
    @given(body=json_values)
    def check(body):
        raw = encode(body)
        assert_no_server_error(post_raw(client, env, method, path, raw), raw)

    check()


@pytest.mark.parametrize("route", ROUTE_NAMES)
def test_known_fields_holding_any_json_never_get_a_5xx(client, env, make_session, route):
    method, path = body_routes(make_session()["id"])[route]
    base = {"create": session_body(), "update": {}, "close": {}, "end_and_continue": {"reason": "manual"}}[
        route
    ]
    replacements = st.dictionaries(st.sampled_from(FIELDS[route]), json_values, max_size=3)

    @FUZZ
    @given(fields=replacements, trigger_config=st.dictionaries(st.sampled_from(TRIGGER_CONFIG), json_values))
    def check(fields, trigger_config):
        body = {**base, **fields}
        if route == "create" and "triggerConfig" not in fields:
            body["triggerConfig"] = {"basePayload": {}, **trigger_config}
        raw = encode(body)
        assert_no_server_error(post_raw(client, env, method, path, raw), raw)

    check()


@pytest.mark.parametrize("route", ROUTE_NAMES)
def test_any_bytes_as_a_body_never_get_a_5xx(client, env, make_session, route):
    method, path = body_routes(make_session()["id"])[route]

    @FUZZ
    @given(raw=st.binary(max_size=200))
    def check(raw):
        assert_no_server_error(post_raw(client, env, method, path, raw), raw)

    check()


LIST_PARAMS = [
    "page[size]", "page[after]", "page[before]", "filter[type]", "filter[tags]",
    "filter[taskIdentifier]", "filter[externalId]", "filter[status]",
    "filter[createdAt][period]", "filter[createdAt][from]", "filter[createdAt][to]",
]  # fmt: skip


def test_any_list_query_never_gets_a_5xx(client, env, make_session):
    make_session()
    values = st.one_of(nasty_text, st.integers().map(str), st.sampled_from(["ACTIVE,CLOSED", "1h", "-1", ""]))

    @FUZZ
    @given(query=st.dictionaries(st.sampled_from(LIST_PARAMS) | nasty_text, values, max_size=5))
    def check(query):
        text = "&".join(f"{url_encode(k, safe='[]')}={url_encode(v, safe=',')}" for k, v in query.items())
        response = client.get(f"{SESSIONS}?{text}", headers=bearer(env.api_key))
        assert_no_server_error(response, text)

    check()


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {}),
        ("POST", "/close", {}),
        ("POST", "/end-and-continue", {"reason": "x"}),
    ],
    ids=["retrieve", "update", "close", "end_and_continue"],
)
def test_any_session_id_in_the_path_never_gets_a_5xx(client, env, method, suffix, body):
    @FUZZ
    @given(ref=nasty_text)
    def check(ref):
        path = f"{SESSIONS}/{url_encode(ref)}{suffix}"
        response = client.open(path, method=method, json=body, headers=bearer(env.api_key))
        assert_no_server_error(response, path)

    check()


def test_any_bearer_token_never_gets_a_5xx(client):
    segment = st.binary(max_size=60).map(lambda raw: base64.urlsafe_b64encode(raw).decode())
    tokens = st.one_of(
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=80),
        st.tuples(segment, segment, segment).map(lambda parts: "ey" + ".".join(parts)),
    )

    @FUZZ
    @given(token=tokens)
    def check(token):
        assert_no_server_error(client.get(SESSIONS, headers={"Authorization": f"Bearer {token}"}), token)

    check()


# --- schemathesis over the served OpenAPI document -----------------------------------------------

OPERATIONS = [
    "POST /api/v1/sessions",
    "GET /api/v1/sessions",
    "GET /api/v1/sessions/{session_ref}",
    "PATCH /api/v1/sessions/{session_ref}",
    "POST /api/v1/sessions/{session_ref}/close",
    "POST /api/v1/sessions/{session_ref}/end-and-continue",
    "GET /api/v1/sessions/{session_ref}/runs",
    "GET /api/v1/runs/{runId}",
    "POST /api/v1/runs/{runId}/heartbeat",
    "POST /api/v1/runs/{runId}/complete",
    "POST /api/v1/runs/{runId}/fail",
    "POST /api/v1/auth/jwt/claims",
]


@pytest.mark.parametrize("label", OPERATIONS)
def test_requests_generated_from_the_openapi_document_never_get_a_5xx(app, env, make_session, label):
    operation = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app).find_operation_by_label(label)
    created = make_session()
    existing = {"session_ref": created["id"]} if "{session_ref}" in label else None
    if "{runId}" in label:
        existing = {"runId": created["runId"]}
    cases = st.one_of(
        operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
        for mode in GenerationMode
        for path_parameters in (None, existing)
    )

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def check(case):
        response = case.call(headers=bearer(env.api_key))
        assert response.status_code < 500, (case.as_curl_command(), response.text)

    check()


# --- every path parameter of every route, read from the URL map ----------------------------------


def test_any_path_parameter_of_any_route_never_gets_a_5xx(app, client, env, make_session):
    """Hostile text in one path parameter of any route (the others valid); routes added later are
    covered without touching this test. Live reads are never read, only their status."""
    created = make_session()
    valid = {"session_ref": created["id"], "io": "in", "name": f"sessions/{created['externalId']}/in"}
    parameters = route_parameters(app)

    @FUZZ
    @given(target=st.sampled_from(parameters), value=nasty_text, encoded=st.booleans())
    @example(target=parameters[0], value="\x00", encoded=True)
    def check(target, value, encoded):
        rule, method, argument = target
        values = {**dict.fromkeys(rule.arguments, "x"), **valid, argument: value}
        path = route_path(rule, values, lambda text: url_encode(text, safe="" if encoded else "/"))
        response = client.open(
            path + "?wait=0",
            method=method,
            data=b'{"records": [{"body": "x"}]}',
            headers={"Content-Type": "application/json", **bearer(env.api_key), "Timeout-Seconds": "1"},
            buffered=False,
        )
        try:
            assert response.status_code < 500, (method, path)
        finally:
            response.close()

    check()
