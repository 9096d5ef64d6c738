"""Hostile HTTP over raw sockets: never a 5xx, malformed input gets a 4xx or a closed connection.

After every case the server must still be up and serve other clients: ``GET /healthz`` answers 200
and an authenticated append is stored and read back. Every socket has a timeout, so a server that
holds a connection open forever fails the case instead of hanging the suite.
"""

import json
import re
import socket
import uuid

import pytest
import requests

from tests.servers import LiveServer

TIMEOUT = 10
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[ \r]")
MAX_APPEND_BYTES = 1024 * 1024
KEEPALIVE_SECONDS = 2
STALL_LIMIT = 3 * KEEPALIVE_SECONDS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    database_url = f"sqlite:///{tmp_path_factory.mktemp('hostile')}/sessions.db"
    env = {"SESSIONS_KEEPALIVE": str(KEEPALIVE_SECONDS), "SESSIONS_CLIENT_TIMEOUT": str(KEEPALIVE_SECONDS)}
    with LiveServer(database_url, env=env) as live:
        yield live


@pytest.fixture(scope="module")
def api_key(server):
    return server.create_env(f"hostile-{uuid.uuid4().hex[:8]}")["apiKey"]


@pytest.fixture(scope="module")
def http(server, api_key):
    session = requests.Session()
    session.trust_env = False  # loopback only: never through a proxy from the environment
    session.headers["Authorization"] = f"Bearer {api_key}"
    yield session
    session.close()


@pytest.fixture(scope="module")
def session_id(server, http):
    body = {"type": "chat.agent", "taskIdentifier": "agent", "triggerConfig": {"basePayload": {}}}
    response = http.post(f"{server.base_url}/api/v1/sessions", json=body, timeout=TIMEOUT)
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


@pytest.fixture
def still_serving(server, http, session_id):
    """After the test: the process is up, /healthz is 200 and an append round-trips."""
    yield
    assert server.proc.poll() is None, f"the server exited\n{server.log()}"
    with connect(server) as connection:
        connection.sendall(HEALTHZ)
        assert status_of(read_head(connection)) == 200, server.log()
    text = f"still here {uuid.uuid4()}"
    channel = f"{server.base_url}/realtime/v1/sessions/{session_id}/in"
    appended = http.post(f"{channel}/append", data=text.encode(), timeout=TIMEOUT)
    assert appended.status_code == 200, appended.text
    seq = appended.json()["seq"]
    query = f"?afterEventId={seq - 1}" if seq else ""
    records = http.get(f"{channel}/records{query}", timeout=TIMEOUT).json()["records"]
    assert records[0]["seqNum"] == seq and text in json.dumps(records[0]), records


# --- raw socket helpers ---------------------------------------------------------------------------


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)


def send(connection: socket.socket, data: bytes) -> None:
    """Send everything, tolerating a server that already answered and closed (it may, on junk)."""
    try:
        connection.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def read_head(connection: socket.socket) -> bytes:
    """The response head, or what arrived before the server closed (b"" for a bare close).

    A socket timeout propagates: a connection the server neither answers nor closes is a failure.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = connection.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


def read_all(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes (a timeout propagates, as in ``read_head``)."""
    data = b""
    try:
        while chunk := connection.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def status_of(head: bytes) -> int | None:
    """The status code of an ``HTTP/1.x NNN`` head, or None when nothing (or no status line) came back."""
    match = STATUS_LINE.match(head)
    return int(match.group(1)) if match else None


def exchange(server: LiveServer, data: bytes) -> tuple[int | None, bytes]:
    """Send raw bytes on a fresh connection; return the status (None if closed) and the head."""
    with connect(server) as connection:
        send(connection, data)
        head = read_head(connection)
    return status_of(head), head


def assert_refused(status: int | None, head: bytes, server: LiveServer) -> None:
    """A 4xx, or the connection closed with nothing (or nothing parseable) sent back."""
    detail = f"{head[:300]!r}\n{server.log()}"
    assert head == b"" or status is not None, f"not an HTTP response: {detail}"
    assert status is None or 400 <= status < 500, f"status {status}: {detail}"


def assert_no_server_error(status: int | None, head: bytes, server: LiveServer) -> None:
    assert status is None or status < 500, f"status {status}: {head[:300]!r}\n{server.log()}"


class Reader:
    """Reads consecutive responses (Content-Length bodies) from one keep-alive connection."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.connection.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed mid-response; got {self.buffer[:300]!r}")
        self.buffer += chunk

    def response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lengths = [
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ]
        assert lengths, f"no Content-Length in {head!r}"
        while len(self.buffer) < lengths[0]:
            self._fill()
        body, self.buffer = self.buffer[: lengths[0]], self.buffer[lengths[0] :]
        status = status_of(head + b"\r\n")
        assert status is not None, head
        return status, body


def request(target: bytes, *headers: bytes, method: bytes = b"GET", body: bytes = b"") -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def bearer(api_key: str) -> bytes:
    return b"Authorization: Bearer " + api_key.encode()


# --- malformed request lines ----------------------------------------------------------------------

REQUEST_LINES = {
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n",
    "words": b"hello there general kenobi\r\n\r\n",
    "missing-version": b"POST /healthz\r\nHost: 127.0.0.1\r\n\r\n",
    "http-9.9": b"GET /healthz HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
    "http-garbage-version": b"GET /healthz HTTP/1.x\r\nHost: 127.0.0.1\r\n\r\n",
    "absurd-method": b"\x01\x02\x7fM\xc3\xa9THOD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "long-method": b"X" * 4000 + b" /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "20k-request-line": b"GET /" + b"a" * 20 * 1024 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "bare-crlf-lines": b"\r\n" * 50,
}


@pytest.mark.parametrize("raw", REQUEST_LINES.values(), ids=REQUEST_LINES.keys())
def test_a_malformed_request_line_is_refused(server, still_serving, raw):
    status, head = exchange(server, raw)
    assert_refused(status, head, server)


def test_a_get_without_a_version_is_never_a_server_error(server, still_serving):
    # "GET /path" with no version is an HTTP/0.9 request: a body without a status line is a valid answer.
    with connect(server) as connection:
        send(connection, b"GET /healthz\r\n\r\n")
        data = read_all(connection)
    assert_no_server_error(status_of(data), data, server)


# --- hostile headers ------------------------------------------------------------------------------


def header_cases(api_key: str, session_id: str) -> dict[str, tuple[bytes, bool]]:
    """name -> (raw request, must be refused); the rest only must not be a server error."""
    append = f"/realtime/v1/sessions/{session_id}/in/append".encode()
    auth = bearer(api_key)
    return {
        "no-colon": (request(b"/healthz", b"NoColonInThisHeaderLine"), True),
        "100k-header-value": (request(b"/healthz", b"X-Big: " + b"v" * 100 * 1024), True),
        "500-headers": (request(b"/healthz", *(b"X-H%d: %d" % (n, n) for n in range(500))), True),
        "obs-fold": (request(b"/healthz", b"X-A: one", b" folded"), False),
        "space-before-colon": (request(b"/healthz", b"Host : 127.0.0.1"), False),
        "latin1-header-value": (request(b"/healthz", b"X-Name: caf\xe9 \xff\xfe"), False),
        "utf8-header-value": (request(b"/healthz", "X-Name: caf\u00e9 \u2603".encode()), False),
        "nul-in-header-value": (request(b"/healthz", b"X-Nul: a\x00b"), False),
        "nul-in-part-id": (
            request(
                append, auth, b"X-Part-Id: part\x00one", b"Content-Length: 2", method=b"POST", body=b"hi"
            ),
            True,
        ),
        "invalid-utf8-part-id": (
            request(
                append, auth, b"X-Part-Id: \xff\xfe\xc3(", b"Content-Length: 2", method=b"POST", body=b"hi"
            ),
            False,
        ),
        "binary-authorization": (
            request(
                append,
                b"Authorization: \x80\xff\x01\x7f\xc3(junk",
                b"Content-Length: 2",
                method=b"POST",
                body=b"hi",
            ),
            True,
        ),
        "binary-bearer-token": (
            request(
                append,
                b"Authorization: Bearer \xff\xfe\x00\x80",
                b"Content-Length: 2",
                method=b"POST",
                body=b"hi",
            ),
            True,
        ),
        "percent-ff-fe-session": (
            request(
                b"/realtime/v1/sessions/%FF%FE/in/append",
                auth,
                b"Content-Length: 2",
                method=b"POST",
                body=b"hi",
            ),
            True,
        ),
        "raw-ff-fe-session": (
            request(
                b"/realtime/v1/sessions/\xff\xfe/in/append",
                auth,
                b"Content-Length: 2",
                method=b"POST",
                body=b"hi",
            ),
            True,
        ),
        # a ref that is not a session_ id names a channel by externalId, which needs no row: 200, empty
        "raw-ff-records-read": (request(b"/realtime/v1/sessions/\xff\xfe\x80/in/records", auth), False),
        "percent-ff-session-get": (request(b"/api/v1/sessions/%FF%FE%00", auth), True),
        "raw-ff-path": (request(b"/\xff\xfe\x80"), True),
        "nul-in-path": (request(b"/healthz\x00x"), True),
    }


HEADER_CASES = list(header_cases("k", "s"))


@pytest.mark.parametrize("name", HEADER_CASES)
def test_hostile_headers_and_paths_are_refused_or_at_least_never_a_server_error(
    server, still_serving, api_key, session_id, name
):
    raw, must_refuse = header_cases(api_key, session_id)[name]
    status, head = exchange(server, raw)
    if must_refuse:
        assert_refused(status, head, server)
    else:
        assert_no_server_error(status, head, server)


# --- hostile bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("then", ["close", "half-close"])
def test_a_body_shorter_than_its_content_length_is_never_a_server_error(
    server, still_serving, api_key, session_id, then
):
    """The client stops after 5 of 1,000 bytes, then closes (the server must stay up) or half-closes
    (the server must answer with a 4xx or close)."""
    append = f"/realtime/v1/sessions/{session_id}/in/append".encode()
    with connect(server) as connection:
        send(
            connection,
            request(append, bearer(api_key), b"Content-Length: 1000", method=b"POST", body=b"short"),
        )
        if then == "close":
            return
        connection.shutdown(socket.SHUT_WR)
        head = read_head(connection)
    assert_refused(status_of(head), head, server)


def body_cases(api_key: str, session_id: str) -> dict[str, bytes]:
    append = f"/realtime/v1/sessions/{session_id}/in/append".encode()
    auth = bearer(api_key)

    def post(*headers: bytes, body: bytes) -> bytes:
        return request(append, auth, *headers, method=b"POST", body=body)

    chunked = b"Transfer-Encoding: chunked"
    return {
        "negative-content-length": post(b"Content-Length: -1", body=b"hi"),
        "non-numeric-content-length": post(b"Content-Length: abc", body=b"hi"),
        "plus-sign-content-length": post(b"Content-Length: +2", body=b"hi"),
        "two-different-content-lengths": post(b"Content-Length: 2", b"Content-Length: 5", body=b"hi"),
        "huge-content-length": post(b"Content-Length: 99999999999999999999999999", body=b"hi"),
        "content-length-and-chunked": post(b"Content-Length: 2", chunked, body=b"2\r\nhi\r\n0\r\n\r\n"),
        "bad-chunk-size": post(chunked, body=b"zz\r\nhi\r\n0\r\n\r\n"),
        "missing-chunk-terminator": post(chunked, body=b"2\r\nhi"),
        "unknown-transfer-encoding": post(b"Transfer-Encoding: gzip, rot13", body=b"hi"),
    }


BODY_CASES = list(body_cases("k", "s"))


@pytest.mark.parametrize("name", BODY_CASES)
def test_a_malformed_body_framing_is_refused(server, still_serving, api_key, session_id, name):
    status, head = exchange(server, body_cases(api_key, session_id)[name])
    assert_refused(status, head, server)


def test_a_request_with_both_content_length_and_chunked_does_not_keep_the_connection(
    server, still_serving, api_key, session_id
):
    # RFC 9112 section 6.1: the server may read the chunked body but MUST close the connection after
    # answering; serving what follows on it would let a proxy that framed by Content-Length desync.
    append = f"/realtime/v1/sessions/{session_id}/in/append".encode()
    framed = request(
        append,
        bearer(api_key),
        b"Content-Length: 4",
        b"Transfer-Encoding: chunked",
        method=b"POST",
        body=b"0\r\n\r\n",
    )
    follower = b"GET /no-such-page HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with connect(server) as connection:
        send(connection, framed + follower)
        answered = read_all(connection)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answered)]
    assert statuses and 400 <= statuses[0] < 500, f"{answered!r}\n{server.log()}"
    assert len(statuses) == 1, f"a request after the ambiguous one was served: {answered!r}"


def test_a_chunked_append_is_refused_cleanly(server, still_serving, api_key, session_id):
    # The wire requires Content-Length on appends: a chunked one is refused (413, no length given).
    append = f"/realtime/v1/sessions/{session_id}/in/append".encode()
    raw = request(
        append, bearer(api_key), b"Transfer-Encoding: chunked", method=b"POST", body=b"2\r\nhi\r\n0\r\n\r\n"
    )
    status, head = exchange(server, raw)
    assert status in (411, 413), f"{head!r}\n{server.log()}"


def test_an_append_over_one_mib_is_refused_with_413_before_its_body_is_sent(
    server, still_serving, api_key, session_id
):
    append = f"/realtime/v1/sessions/{session_id}/in/append".encode()
    raw = request(append, bearer(api_key), b"Content-Length: %d" % (MAX_APPEND_BYTES + 1), method=b"POST")
    status, head = exchange(server, raw)
    assert status == 413, f"{head!r}\n{server.log()}"


def test_an_append_over_one_mib_sent_in_full_is_refused_with_413(server, still_serving, api_key, session_id):
    append = f"/realtime/v1/sessions/{session_id}/in/append".encode()
    body = b"x" * (MAX_APPEND_BYTES + 1)
    raw = request(append, bearer(api_key), b"Content-Length: %d" % len(body), method=b"POST", body=body)
    status, head = exchange(server, raw)
    assert status == 413, f"{head!r}\n{server.log()}"


# --- connection behaviour -------------------------------------------------------------------------


def test_two_pipelined_requests_are_answered_in_order(server, still_serving):
    missing = b"GET /no-such-page HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with connect(server) as connection:
        connection.sendall(HEALTHZ + missing)
        reader = Reader(connection)
        first, second = reader.response(), reader.response()
    assert (first[0], second[0]) == (200, 404), (first, second)


def test_a_client_that_sends_half_a_request_line_and_closes_leaves_the_server_up(server, still_serving):
    with connect(server) as connection:
        send(connection, b"GET /heal")


def test_a_half_request_line_then_half_close_gets_a_refusal_or_a_close(server, still_serving):
    with connect(server) as connection:
        send(connection, b"GET /heal")
        connection.shutdown(socket.SHUT_WR)
        head = read_head(connection)
    assert_refused(status_of(head), head, server)


@pytest.mark.parametrize("where", ["mid-headers", "mid-body"])
def test_a_client_that_stalls_mid_request_is_disconnected(server, still_serving, api_key, session_id, where):
    # The worker closes idle keep-alive connections "so idle clients cannot pile up"; a client that
    # stops halfway through a request is as idle, so it must not hold its connection (and greenlet)
    # open for ever. The bound allows the keep-alive (2 s here) several times over.
    append = f"/realtime/v1/sessions/{session_id}/in/append".encode()
    stalled = {
        "mid-headers": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        "mid-body": request(append, bearer(api_key), b"Content-Length: 10", method=b"POST", body=b"abc"),
    }[where]
    with socket.create_connection(("127.0.0.1", server.port), timeout=STALL_LIMIT) as connection:
        send(connection, stalled)
        try:
            head = read_head(connection)
        except TimeoutError:
            pytest.fail(
                f"the server held a stalled connection open for over {STALL_LIMIT} s: sent {stalled!r}"
            )
    assert_refused(status_of(head), head, server)


def test_two_hundred_silent_connections_opened_and_closed_at_once(server, still_serving):
    connections = [connect(server) for _ in range(200)]
    for connection in connections:
        connection.close()
