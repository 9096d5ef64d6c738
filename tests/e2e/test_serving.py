"""The gunicorn worker's connection handling: keep-alive is honoured, and idle connections end."""

import socket
import time

import pytest

from tests.servers import LiveServer

KEEPALIVE_SECONDS = 1
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    database_url = f"sqlite:///{tmp_path_factory.mktemp('serving')}/sessions.db"
    with LiveServer(database_url, env={"SESSIONS_KEEPALIVE": str(KEEPALIVE_SECONDS)}) as live:
        yield live


def read_response(connection: socket.socket) -> bytes:
    """One response to ``REQUEST`` (a small JSON body with Content-Length), or b"" if closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(4096)
    return head


def test_a_connection_serves_several_requests_then_closes_when_idle(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        for _ in range(3):
            connection.sendall(REQUEST)
            assert read_response(connection).startswith(b"HTTP/1.1 200")

        time.sleep(KEEPALIVE_SECONDS + 1.5)

        assert connection.recv(4096) == b""  # the server closed it


def test_a_request_arriving_within_the_keepalive_is_served(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(REQUEST)
        assert read_response(connection).startswith(b"HTTP/1.1 200")
        time.sleep(KEEPALIVE_SECONDS / 4)
        connection.sendall(REQUEST)
        assert read_response(connection).startswith(b"HTTP/1.1 200")
