"""The gunicorn worker: gevent's own WSGI server (pywsgi), which closes idle keep-alive connections.

pywsgi parses requests in less Python than gunicorn's gevent worker (a third less CPU per append
in ``bench/``), but waits for a connection's next request forever; gunicorn's worker gives up
after ``keepalive`` seconds. This worker does the same, so idle clients cannot pile up.
"""

from __future__ import annotations

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler


class KeepaliveHandler(PyWSGIHandler):  # type: ignore[misc]
    """Waits ``idle_seconds`` for a request line, then closes the connection."""

    idle_seconds: float | None = None

    def read_requestline(self) -> bytes:
        # A timeout here is a socket error, on which pywsgi closes the connection quietly.
        self.socket.settimeout(self.idle_seconds)
        try:
            line: bytes = super().read_requestline()
        finally:
            self.socket.settimeout(None)
        return line


class Worker(GeventPyWSGIWorker):  # type: ignore[misc]
    wsgi_handler = KeepaliveHandler

    def init_process(self) -> None:
        KeepaliveHandler.idle_seconds = self.cfg.keepalive or None
        super().init_process()
