"""Writing a live read's bytes straight to its connection, from the greenlet that fans a batch out.

A batch appended to a channel with ten thousand readers at its tail is one event, the same bytes
for every reader. Waking each reader's greenlet to yield them through the WSGI stack costs two
greenlet switches, a timeout and the iterator layers per reader: most of a large fan-out. Instead
the fan-out loop writes the event to every parked reader's socket itself, without waiting (a socket
whose buffer is full takes what fits, and its reader's greenlet sends the rest). Only our gunicorn
worker offers this (``Handler.get_environ``); elsewhere readers take the ordinary path.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

#: The WSGI environ key under which a connection offers its ``DirectSink``.
ENVIRON_KEY = "sessions.direct_sink"


class DirectSink(Protocol):
    """A streaming response's connection, after its head and first bytes went out."""

    #: Bytes written directly, for the access log (they do not pass through the response body).
    sent: int

    @property
    def chunked(self) -> bool:
        """Whether the response's bytes go in HTTP/1.1 chunks (``frame`` does that)."""

    def try_send(self, data: bytes) -> int:
        """Send what the socket takes now, without waiting; return how many bytes went.

        :raise OSError: the connection is gone.
        """

    def send_all(self, data: bytes) -> None:
        """Send all of ``data``, waiting as long as the client needs.

        :raise OSError: the connection is gone.
        """


def frame(data: bytes, chunked: bool) -> bytes:
    """``data`` as it goes on the wire: one HTTP/1.1 chunk, or as it is (HTTP/1.0)."""
    return b"%x\r\n%b\r\n" % (len(data), data) if chunked else data


class DirectWriter:
    """The ``DirectSink`` of a request on gevent's pywsgi handler (``session_web.gunicorn_worker``),
    on a plain socket: a TLS socket's ``send`` waits whatever timeout it is given.

    It holds its handler weakly: the handler holds the environ that holds this writer, and a cycle
    would outlive the connection until a full garbage collection.
    """

    __slots__ = ("_handler", "sent")

    def __init__(self, handler: Any) -> None:
        self._handler = weakref.ref(handler)
        self.sent = 0

    def _connection(self) -> Any:
        handler = self._handler()
        if handler is None:
            raise ConnectionError("the connection is closed")
        return handler

    @property
    def chunked(self) -> bool:
        return bool(self._connection().response_use_chunked)

    def try_send(self, data: bytes) -> int:
        try:
            sent: int = self._connection().socket.send(data, 0, timeout=0.0)  # gevent: raise, no wait
        except BlockingIOError:
            return 0
        self.sent += sent
        return sent

    def send_all(self, data: bytes) -> None:
        self._connection()._sendall(data)
        self.sent += len(data)
