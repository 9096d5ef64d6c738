"""Hostile input to the realtime channel routes and the S2-compatible endpoint never gets a 5xx.

The same idea as ``test_fuzz``, on SQLite and PostgreSQL: hypothesis throws arbitrary bytes, header
values, query strings, JSON and protobuf at ``/realtime/v1/sessions/…`` and ``/s2/v1/streams/…``.
Streaming responses are never read: each is checked by its status and closed at once, so no example
waits for a live tail. S2 reads never wait either (``wait`` is 0 or left out).
Each ``@example`` is an input the fuzz once found a 500 with, kept so it is always tried.
"""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.integration.sessions_api import bearer, route_parameters, route_path
from tests.integration.test_fuzz import (
    FUZZ,
    assert_no_server_error,
    encode,
    json_values,
    nasty_text,
    url_encode,
)

REALTIME = "/realtime/v1/sessions"
S2_STREAMS = "/s2/v1/streams"
AUTHS = ["secret_key", "session_token"]

#: Values the wire's parsers find tricky: signs, exponents, non-ASCII digits, numbers past 64 bits
#: and past the 4,300 digits Python's ``int`` reads.
tricky_numbers = st.sampled_from([
    "0", "1", "-1", "+1", " 1", "1e3", "0x10", "1_000", "²", "١٢", "9" * 30, "9" * 5000, str(2**63),
    str(2**64), "",
])  # fmt: skip
numbers_or_text = tricky_numbers | st.integers(min_value=-(2**70), max_value=2**70).map(str) | nasty_text
#: Header values as a server hands them over: any latin-1 text, but never a line break.
header_values = (
    st.binary(max_size=300).map(lambda raw: raw.decode("latin-1")) | nasty_text | tricky_numbers
).map(lambda text: text.replace("\r", "").replace("\n", ""))
long_text = st.builds(
    lambda char, n: char * n, st.characters(exclude_characters="\r\n"), st.integers(200, 3000)
)
ios = st.sampled_from(["in", "out"]) | nasty_text
content_types = st.none() | st.sampled_from(
    ["text/plain", "application/json", "application/octet-stream", "multipart/form-data; boundary=x",
     "application/x-www-form-urlencoded", "text/plain; charset=latin-1"]
) | header_values  # fmt: skip


def channel(ref, io):
    return f"{REALTIME}/{url_encode(ref)}/{url_encode(io)}"


@pytest.fixture(params=AUTHS)
def realtime_auth(request, env, make_session):
    """A session's two names (id, externalId) and the credentials to call with."""
    created = make_session()
    token = env.api_key if request.param == "secret_key" else created["publicAccessToken"]
    return [created["id"], created["externalId"]], bearer(token)


def test_any_append_never_gets_a_5xx(client, realtime_auth):
    names, auth = realtime_auth
    refs = st.sampled_from(names) | nasty_text

    @FUZZ
    @given(
        ref=refs,
        io=ios,
        raw=st.binary(max_size=4096) | nasty_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
        part=st.none() | header_values | long_text,
        content_type=content_types,
    )
    @example(ref=names[0], io="in", raw=b"x", part="\x00", content_type=None)
    def check(ref, io, raw, part, content_type):
        headers = {**auth, **({"X-Part-Id": part} if part is not None else {})}
        if content_type is not None:
            headers["Content-Type"] = content_type
        path = channel(ref, io) + "/append"
        response = client.post(path, data=raw, headers=headers)
        assert_no_server_error(response, (path, raw, headers))

    check()


def test_any_records_query_never_gets_a_5xx(client, realtime_auth):
    names, auth = realtime_auth
    refs = st.sampled_from(names) | nasty_text

    @FUZZ
    @given(ref=refs, io=ios, after=st.none() | numbers_or_text)
    @example(ref=names[0], io="in", after="9" * 30)
    @example(ref=names[0], io="in", after="9" * 5000)
    def check(ref, io, after):
        path = channel(ref, io) + "/records"
        if after is not None:
            path += f"?afterEventId={url_encode(after)}"
        assert_no_server_error(client.get(path, headers=auth), path)

    check()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_any_subscribe_headers_never_get_a_5xx(client, realtime_auth, method):
    names, auth = realtime_auth
    refs = st.sampled_from(names) | nasty_text
    optional_headers = st.fixed_dictionaries(
        {},
        optional={
            "Timeout-Seconds": header_values,
            "Last-Event-ID": header_values,
            "X-Peek-Settled": st.sampled_from(["1", "0", "true"]) | header_values,
        },
    )

    @FUZZ
    @given(ref=refs, io=ios, extra=optional_headers)
    @example(ref=names[0], io="in", extra={"Last-Event-ID": "9" * 5000, "Timeout-Seconds": "9" * 5000})
    def check(ref, io, extra):
        path = channel(ref, io)
        # The live tail is never read: the status is all we look at, so no example waits on it.
        response = client.open(path, method=method, headers={**auth, **extra}, buffered=False)
        try:
            assert response.status_code < 500, (method, path, extra)
        finally:
            response.close()

    check()


def test_any_initialize_target_never_gets_a_5xx(client, realtime_auth):
    names, auth = realtime_auth
    refs = st.sampled_from(names) | nasty_text

    @FUZZ
    @given(ref=refs, io=ios)
    @example(ref="\r", io="in")
    def check(ref, io):
        path = channel(ref, io)
        assert_no_server_error(client.put(path, headers=auth), path)

    check()


# --- the S2-compatible endpoint -------------------------------------------------------------------

STREAM_AUTHS = ["secret_key", "stream_token"]


@pytest.fixture(params=STREAM_AUTHS)
def stream(request, client, env, make_session):
    """A stream granted by ``PUT`` on a channel: ``(name, auth headers)`` for that stream."""
    response = client.put(f"{REALTIME}/{make_session()['externalId']}/in", headers=bearer(env.api_key))
    assert response.status_code == 202
    token = env.api_key if request.param == "secret_key" else response.headers["X-S2-Access-Token"]
    return response.headers["X-S2-Stream-Name"], bearer(token)


def stream_path(name, suffix="/records"):
    return f"{S2_STREAMS}/{url_encode(name, safe='/')}{suffix}"


s2_formats = st.fixed_dictionaries({}, optional={"s2-format": st.sampled_from(["base64", "raw", "BASE64"])})
ints_or_anything = st.integers(min_value=-(2**70), max_value=2**70) | json_values
record_headers = (
    st.lists(st.lists(nasty_text | json_values, max_size=3) | json_values, max_size=3) | json_values
)
json_records = st.fixed_dictionaries(
    {},
    optional={
        "body": nasty_text | json_values | st.binary(max_size=40).map(lambda raw: raw.hex()),
        "headers": st.just([["", "trim"]]) | record_headers,
        "timestamp": ints_or_anything,
    },
)
append_inputs = (
    st.fixed_dictionaries(
        {"records": st.lists(json_records | json_values, max_size=5) | json_values},
        optional={"match_seq_num": st.just(0) | ints_or_anything, "fencing_token": nasty_text | json_values},
    )
    | json_values
)


def test_any_json_append_never_gets_a_5xx(client, stream):
    name, auth = stream

    @FUZZ
    @given(body=append_inputs, extra=s2_formats)
    @example(body={"records": [{"body": "\u0080"}]}, extra={"s2-format": "base64"})
    def check(body, extra):
        raw = encode(body)
        response = client.post(
            stream_path(name), data=raw, headers={**auth, **extra, "Content-Type": "application/json"}
        )
        assert_no_server_error(response, (raw, extra))

    check()


# Protobuf, written by hand (the wire format s2_proto reads): valid framing, hostile contents.
def varint(value):
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number, payload):
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


uint64 = st.integers(min_value=0, max_value=2**64 - 1)
proto_headers = st.lists(st.tuples(st.binary(max_size=10), st.binary(max_size=10)), max_size=3) | st.just(
    [(b"", b"trim")]
)


@st.composite
def proto_records(draw):
    timestamp = draw(st.none() | uint64)
    parts = [field(1, timestamp)] if timestamp is not None else []
    parts += [field(2, field(1, n) + field(2, v)) for n, v in draw(proto_headers)]
    parts.append(field(3, draw(st.binary(max_size=40))))
    return b"".join(parts)


@st.composite
def proto_append_inputs(draw):
    parts = [field(1, record) for record in draw(st.lists(proto_records(), max_size=5))]
    match_seq_num = draw(st.none() | st.just(0) | uint64)
    if match_seq_num is not None:
        parts.append(field(2, match_seq_num))
    fencing_token = draw(st.none() | st.binary(max_size=20))
    if fencing_token is not None:
        parts.append(field(3, fencing_token))
    return b"".join(parts)


def test_any_protobuf_append_never_gets_a_5xx(client, stream):
    name, auth = stream

    @FUZZ
    @given(
        raw=st.binary(max_size=300) | proto_append_inputs(),
        accept=st.sampled_from(["", "application/protobuf"]),
    )
    def check(raw, accept):
        headers = {**auth, "Content-Type": "application/protobuf", "Accept": accept}
        assert_no_server_error(client.post(stream_path(name), data=raw, headers=headers), (raw, accept))

    check()


READ_PARAMS = ["seq_num", "timestamp", "tail_offset", "count", "bytes", "until", "clamp"]


def test_any_read_query_never_gets_a_5xx(client, stream):
    name, auth = stream
    client.post(stream_path(name), json={"records": [{"body": "one"}, {"body": "two"}]}, headers=auth)
    values = numbers_or_text | st.sampled_from(["true", "false", "TRUE"])
    accepts = st.sampled_from(["", "application/json", "text/event-stream"])

    @FUZZ
    @given(
        query=st.dictionaries(st.sampled_from(READ_PARAMS) | nasty_text, values, max_size=4), accept=accepts
    )
    @example(query={"seq_num": "\u00b2"}, accept="")
    @example(query={"timestamp": "9" * 30}, accept="")
    @example(query={"seq_num": "9" * 5000}, accept="")
    def check(query, accept):
        query = {**query, "wait": "0"}  # never wait at the tail
        text = "&".join(f"{url_encode(k)}={url_encode(v)}" for k, v in query.items())
        path = f"{stream_path(name)}?{text}"
        response = client.get(
            path, headers={**auth, **({"Accept": accept} if accept else {})}, buffered=False
        )
        try:
            assert response.status_code < 500, (path, accept)
        finally:
            response.close()

    check()


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", "/records?wait=0"), ("POST", "/records"), ("GET", "/records/tail")],
    ids=["read", "append", "tail"],
)
def test_any_stream_name_never_gets_a_5xx(client, stream, method, suffix):
    _, auth = stream

    @FUZZ
    @given(name=nasty_text)
    @example(name="\x00")
    def check(name):
        path = stream_path(name, suffix)
        response = client.open(
            path, method=method, json={"records": [{"body": "x"}]}, headers=auth, buffered=False
        )
        try:
            assert response.status_code < 500, path
        finally:
            response.close()

    check()


READ_HEADERS = ["X-Part-Id", "Last-Event-ID", "Timeout-Seconds", "X-Peek-Settled", "s2-format", "Accept"]


def test_any_header_value_on_any_route_never_gets_a_5xx(app, client, env, make_session):
    """Hostile values in the headers routes read, on every route of the URL map."""
    created = make_session()
    valid = {"session_ref": created["id"], "io": "in", "name": f"sessions/{created['externalId']}/in"}
    rules = [(rule, method) for rule, method, _ in route_parameters(app)]

    @FUZZ
    @given(
        target=st.sampled_from(rules),
        headers=st.dictionaries(st.sampled_from(READ_HEADERS), header_values, min_size=1, max_size=3),
    )
    @example(target=rules[0], headers={"X-Part-Id": "\x00"})
    def check(target, headers):
        rule, method = target
        path = route_path(rule, {**dict.fromkeys(rule.arguments, "x"), **valid}, url_encode)
        response = client.open(
            path + "?wait=0",
            method=method,
            data=b'{"records": [{"body": "x"}]}',
            headers={
                "Content-Type": "application/json",
                **bearer(env.api_key),
                "Timeout-Seconds": "1",
                **headers,
            },
            buffered=False,
        )
        try:
            assert response.status_code < 500, (method, path, headers)
        finally:
            response.close()

    check()
