"""The gunicorn worker: gevent's own WSGI server (pywsgi), held to timeouts and strict framing.

pywsgi parses requests in less Python than gunicorn's gevent worker (a third less CPU per append
in ``bench/``), but as it comes it waits for a slow or silent client forever, and it accepts
message framing that a proxy in front could read differently (RFC 9112 §6). This worker:

- closes a keep-alive connection idle for ``keepalive`` seconds between requests, as gunicorn's
  own worker does;
- drops a client that makes no progress for ``SESSIONS_CLIENT_TIMEOUT`` seconds (default 30)
  while sending its headers or body, or while receiving the response, so stalled clients cannot
  pile up (a live read waiting for records sends nothing and is not affected);
- answers 400, and closes, a header block holding a line that is no header, a ``Content-Length``
  that is not digits or is given twice differently, or one beside ``Transfer-Encoding``;
- sends a response's head with its first body bytes in one ``send`` (pywsgi makes two): one
  system call and one TCP segment less for every short answer, such as an append's;
- offers each request's connection to a live read's fan-out (``session_web.direct_write``).
"""

from __future__ import annotations

import os
import re
from typing import Any

from gevent.ssl import SSLSocket
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler

from session_core.config import Settings
from session_web import direct_write

_DIGITS = re.compile(r"[0-9]+")


def framing_problem(headers: Any) -> str | None:
    """Why a parsed header block cannot be trusted to frame its request, or None if it can."""
    if headers.defects:  # e.g. a line without a colon, where the email parser stops reading headers
        return "Malformed header block"
    lengths = [value.strip() for value in headers.get_all("Content-Length") or []]
    if not lengths:
        return None
    if len(set(lengths)) > 1 or not all(_DIGITS.fullmatch(value) for value in lengths):
        return "Invalid Content-Length"
    if headers.get("Transfer-Encoding") is not None:
        return "Both Content-Length and Transfer-Encoding"
    return None


class Handler(PyWSGIHandler):  # type: ignore[misc]
    idle_seconds: float | None = None
    client_seconds: float | None = None
    #: While pywsgi writes the head: None until it is sent to ``_sendall``, then the head itself.
    _head: bytes | None = None
    _is_writing_head = False

    def _write_with_headers(self, data: bytes) -> None:
        self._is_writing_head = True
        try:
            super()._write_with_headers(data)
        finally:
            self._is_writing_head = False
            head, self._head = self._head, None
            if head is not None:  # no body bytes came with it (an empty first chunk)
                super()._sendall(head)

    def _sendall(self, data: bytes) -> None:
        if self._is_writing_head and self._head is None:
            self._head = bytes(data)  # held until the body's first bytes join it
            return
        if self._head is not None:
            data, self._head = self._head + data, None
        super()._sendall(data)

    def log_request(self) -> None:
        """Nothing: ``session_web.request_log`` writes the access line (gunicorn's is off)."""

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        if not isinstance(self.socket, SSLSocket):  # its send waits whatever the timeout says
            environ[direct_write.ENVIRON_KEY] = direct_write.DirectWriter(self)
        return environ

    def read_requestline(self) -> str:
        # A timeout is a socket error here: pywsgi then closes the connection quietly.
        self.socket.settimeout(self.idle_seconds)
        line: str = super().read_requestline()
        self.socket.settimeout(self.client_seconds)
        return line

    def MessageClass(self, *args: Any) -> Any:  # noqa: N802 (pywsgi's name)
        headers = super().MessageClass(*args)
        problem = framing_problem(headers)
        if problem and not headers.status:
            headers.status = problem  # pywsgi answers 400 and closes on a header block with a status
        return headers


class Worker(GeventPyWSGIWorker):  # type: ignore[misc]
    wsgi_handler = Handler

    def init_process(self) -> None:
        Handler.idle_seconds = self.cfg.keepalive or None
        Handler.client_seconds = Settings.from_env(os.environ).client_timeout_seconds or None
        super().init_process()
