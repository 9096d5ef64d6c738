"""Receives the server's ``run.triggered`` webhooks and starts ``agent.py`` for each launch.

Every request's Standard Webhooks signature is checked with ``SESSIONS_WEBHOOK_SECRET`` (the
server signs with the same ``whsec_…`` secret); a bad one gets 401. A launch delivered twice (the
server retries until it sees a 2xx) starts one agent. Each start is printed as a JSON line.

    SESSIONS_WEBHOOK_SECRET=whsec_… python webhook_receiver.py --port 8000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

AGENT = Path(__file__).with_name("agent.py")


class Launches:
    """Starts one agent process per run, and remembers which runs it started."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.started: dict[str, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()

    def start(self, data: dict) -> None:
        run_id, session = data["runId"], data["session"]["id"]
        with self.lock:
            if run_id in self.started:
                return
            env = {**os.environ, "SESSIONS_URL": self.base_url, "SESSIONS_RUN_TOKEN": data["token"]}
            agent = subprocess.Popen([sys.executable, str(AGENT), session], env=env)
            self.started[run_id] = agent
        line = {"event": "launched", "runId": run_id, "session": session, "reason": data.get("reason")}
        print(json.dumps({**line, "pid": agent.pid}), flush=True)
        threading.Thread(target=agent.wait, daemon=True).start()  # reaps it when it exits


def handler(webhook: Webhook, launches: Launches) -> type[BaseHTTPRequestHandler]:
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                event = webhook.verify(body, dict(self.headers.items()))
            except WebhookVerificationError:
                self._answer(401, {"error": "bad signature"})
                return
            if event.get("type") == "run.triggered":
                launches.start(event["data"])
            self._answer(200, {"ok": True})

        def _answer(self, status: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one JSON line per launch is the log

    return Receiver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    webhook = Webhook(os.environ["SESSIONS_WEBHOOK_SECRET"])
    launches = Launches(os.environ.get("SESSIONS_URL", "http://127.0.0.1:3030"))
    server = ThreadingHTTPServer((args.host, args.port), handler(webhook, launches))
    print(json.dumps({"event": "listening", "port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
