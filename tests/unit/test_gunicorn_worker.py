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
