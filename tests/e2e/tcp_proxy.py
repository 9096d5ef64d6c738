"""A tiny TCP proxy for tests that need a connection to drop at a chosen moment.

It relays bytes both ways. Armed with ``drop_next_response(marker)``, it lets the next request
whose bytes contain ``marker`` through to the server, waits for the server's answer, and then
closes the client's connection without relaying it: the request was processed, the client never
heard back, exactly what a crash of a proxy or a network cut between them looks like.
"""

from __future__ import annotations

import socket
import threading

from tests.servers import free_port


class DroppingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dropped = 0
        self._marker: bytes | None = None
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_next_response(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            drop = threading.Event()
            threading.Thread(target=self._forward, args=(client, upstream, drop), daemon=True).start()
            threading.Thread(target=self._backward, args=(upstream, client, drop), daemon=True).start()

    def _forward(self, client: socket.socket, upstream: socket.socket, drop: threading.Event) -> None:
        """Client to server; arms ``drop`` for this connection when a request holds the marker."""
        try:
            while data := client.recv(65536):
                with self._lock:
                    if self._marker is not None and self._marker in data:
                        self._marker = None
                        drop.set()
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _shut(upstream)

    def _backward(self, upstream: socket.socket, client: socket.socket, drop: threading.Event) -> None:
        """Server to client; an armed connection is cut as soon as the server's answer arrives."""
        try:
            while data := upstream.recv(65536):
                if drop.is_set():
                    self.dropped += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
