"""A real HTTP webhook receiver for launcher tests: verifies Standard Webhooks signatures.

It listens on 127.0.0.1 (a free port) in a thread, verifies every request with the
``standardwebhooks`` package, and answers with a status taken from a script (default 200), so a
test can make it fail a few times first. What it saw is kept per ``webhook-id``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + "c2Vzc2lvbnMtdGVzdC1zZWNyZXQtMzJieXRlcyEhISE="


@dataclass
class Delivery:
    webhook_id: str
    body: dict
    status: int


@dataclass
class WebhookReceiver:
    secret: str = SECRET
    #: Statuses to answer in order; past the end, 200. ``0`` means: hold the request unanswered.
    script: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    #: The ``webhook-id`` of every verified request, answered or held.
    seen_ids: list[str] = field(default_factory=list)
    refused_signatures: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = Webhook(receiver.secret).verify(raw, dict(self.headers.items()))
                except WebhookVerificationError:
                    with receiver._lock:
                        receiver.refused_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with receiver._lock:
                    attempt = len(receiver.seen_ids)
                    receiver.seen_ids.append(self.headers["webhook-id"])
                    status = receiver.script[attempt] if attempt < len(receiver.script) else 200
                if status == 0:
                    receiver._release.wait(60)  # held: the sender gives up (or dies) first
                    return
                self.send_response(status)
                self.end_headers()
                with receiver._lock:
                    receiver.deliveries.append(Delivery(self.headers["webhook-id"], body, status))
                    receiver._lock.notify_all()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/runs"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def acknowledged(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if 200 <= d.status < 300]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        """Block until ``count`` deliveries were acknowledged (bounded); return them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len([d for d in self.deliveries if 200 <= d.status < 300]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{count} acknowledged launches not seen: {self.deliveries}")
                self._lock.wait(remaining)
            return [d for d in self.deliveries if 200 <= d.status < 300]

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


def launch_data(delivery: Delivery) -> dict:
    assert delivery.body["type"] == "run.triggered"
    return delivery.body["data"]
