"""A browser-style ``EventSource`` (the ``eventsource`` npm package) resumes through a server restart.

It sends back our SSE ``id:`` (``next_seq,count,bytes``) as ``Last-Event-ID`` on reconnect; the
read must go on exactly after it: nothing lost, nothing repeated. ``js/eventsource_resume.mjs``
prints one JSON line per event; this test restarts gunicorn on the same port between records.
"""

import json
import queue
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import requests

from tests.servers import LiveServer

pytestmark = pytest.mark.postgres
JS = Path(__file__).parent / "js"


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """Node's stdout, one parsed JSON line per item (None at its end), read on a thread."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(json.loads(line))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _records_until(lines: queue.Queue, seen: list[dict], count: int) -> None:
    """Collect lines into ``seen`` until it holds ``count`` records (bounded by a generous timeout)."""
    while sum("seq" in line for line in seen) < count:
        line = lines.get(timeout=60)
        assert line is not None, f"the client ended early after {seen}"
        seen.append(line)


def test_eventsource_resumes_through_a_server_restart_with_the_id_we_emit(postgres):
    if shutil.which("node") is None or not (JS / "node_modules" / "eventsource").is_dir():
        pytest.fail(
            "the eventsource client is missing: install Node 20+ and run  npm ci --prefix tests/e2e/js"
        )
    with LiveServer(postgres.database_url(postgres.create_database())) as server:
        key = server.create_env(f"es-{uuid.uuid4().hex[:8]}")["apiKey"]
        auth = {"Authorization": f"Bearer {key}"}
        created = requests.post(
            f"{server.base_url}/api/v1/sessions",
            json={"type": "chat.agent", "taskIdentifier": "agent", "triggerConfig": {"basePayload": {}}},
            headers=auth,
            timeout=10,
        ).json()
        channel = f"{server.base_url}/realtime/v1/sessions/{created['id']}/in"

        def append(text: str) -> None:
            response = requests.post(channel + "/append", data=text, headers=auth, timeout=10)
            assert response.status_code == 200, response.text

        append("r0")
        append("r1")
        with subprocess.Popen(
            ["node", "eventsource_resume.mjs", channel, key, "4"],
            cwd=JS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ) as node:  # fmt: skip
            try:
                lines, seen = _lines(node), []
                _records_until(lines, seen, 2)
                server.stop()  # open streams end with an `error` event; the client reconnects in 3 s
                server.start()  # same port
                append("r2")
                append("r3")
                _records_until(lines, seen, 4)
                assert node.wait(timeout=30) == 0, node.stderr.read()
            finally:
                node.kill()

    records = [line for line in seen if "seq" in line]
    assert [line["seq"] for line in records] == [0, 1, 2, 3], seen
    assert max(line.get("open", 0) for line in seen) >= 2, f"the client never reconnected: {seen}"
    # The id it sent back on reconnect was ours: next_seq,count,bytes.
    assert records[1]["lastEventId"].split(",")[0] == "2", records
