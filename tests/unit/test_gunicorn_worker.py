"""The worker's framing rule on header blocks parsed as pywsgi parses them (no server needed)."""

import io
from http import client

import pytest

from session_web.gunicorn_worker import framing_problem


def headers(*lines: str):
    block = "".join(f"{line}\r\n" for line in lines) + "\r\n"
    return client.parse_headers(io.BytesIO(block.encode("latin-1")))


@pytest.mark.parametrize(
    "lines",
    [
        ("Host: a",),
        ("Host: a", "Content-Length: 12"),
        ("Content-Length: 5", "Content-Length: 5"),
        ("Transfer-Encoding: chunked",),
        ("X-Folded: one", " two"),
    ],
)
def test_ordinary_framing_passes(lines):
    assert framing_problem(headers(*lines)) is None


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (("Host: a", "NoColonHere", "Authorization: Bearer k"), "Malformed header block"),
        (("Content-Length: +2",), "Invalid Content-Length"),
        (("Content-Length: 0x10",), "Invalid Content-Length"),
        (("Content-Length: 2", "Content-Length: 5"), "Invalid Content-Length"),
        (("Content-Length: 4", "Transfer-Encoding: chunked"), "Both Content-Length and Transfer-Encoding"),
    ],
)
def test_framing_a_proxy_could_read_differently_is_named(lines, problem):
    assert framing_problem(headers(*lines)) == problem


def test_a_short_response_leaves_in_one_send(monkeypatch):
    """pywsgi sends the head and the body apart; the worker's handler joins them."""
    import threading
    import urllib.request

    import gevent
    from gevent import pywsgi

    from session_web.gunicorn_worker import Handler

    sends: list[bytes] = []
    real_sendall = pywsgi.WSGIHandler._sendall
    monkeypatch.setattr(
        pywsgi.WSGIHandler,
        "_sendall",
        lambda self, data: (sends.append(bytes(data)), real_sendall(self, data)),
    )

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "8")])
        return [b'{"ok":1}']

    server = pywsgi.WSGIServer(("127.0.0.1", 0), app, handler_class=Handler, log=None)
    server.start()
    bodies: list[bytes] = []
    client = threading.Thread(
        target=lambda: bodies.append(
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/", timeout=5).read()
        )
    )
    client.start()
    for _ in range(500):  # bounded: 5 s of the gevent loop while the client thread waits
        if not client.is_alive():
            break
        gevent.sleep(0.01)
    server.stop()

    assert bodies == [b'{"ok":1}']
    assert len(sends) == 1 and sends[0].startswith(b"HTTP/1.1 200 OK\r\n") and sends[0].endswith(b'{"ok":1}')
