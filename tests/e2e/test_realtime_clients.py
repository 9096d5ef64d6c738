"""The published clients against a live server: @trigger.dev/core 4.8.3 and @s2-dev/streamstore 0.25.0.

`js/realtime_clients.mjs` drives both and prints what it saw; this test checks it. Node and the
npm packages come from `tests/e2e/js` (`npm ci --prefix tests/e2e/js`, run by tox's e2e env).
"""

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from tests.servers import LiveServer

pytestmark = pytest.mark.postgres
JS = Path(__file__).parent / "js"


@pytest.fixture(scope="module")
def server(postgres):
    if shutil.which("node") is None or not (JS / "node_modules" / "@trigger.dev" / "core").is_dir():
        pytest.fail(
            "the published clients are missing: install Node 20+ and run  npm ci --prefix tests/e2e/js"
        )
    with LiveServer(postgres.database_url(postgres.create_database()), workers=2) as live:
        yield live


def test_the_published_clients_append_read_and_tail(server):
    key = server.create_env(f"clients-{uuid.uuid4().hex[:8]}")["apiKey"]
    created = requests.post(
        f"{server.base_url}/api/v1/sessions",
        json={
            "type": "chat.agent",
            "externalId": f"chat-{uuid.uuid4()}",
            "taskIdentifier": "agent",
            "triggerConfig": {"basePayload": {}},
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ).json()

    done = subprocess.run(
        ["node", "realtime_clients.mjs", server.base_url, key, created["id"], created["publicAccessToken"]],
        cwd=JS, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr + server.log()
    seen = json.loads(done.stdout)
    assert seen["initVersion"] == "v2"
    assert seen["s2Ack"] == {"start": 0, "end": 3, "tail": 3}
    assert [r["seqNum"] for r in seen["s2Read"]] == [0, 1, 2]
    assert seen["s2Read"][2]["headers"] == [["trigger-control", "turn-complete"]]
    assert seen["s2Tail"] == 3
    assert seen["s2Mismatch"] == "SeqNumMismatchError"
    assert seen["s2Session"] == [1, 2]
    assert [a["ok"] for a in seen["appends"]] == [True, True]
    assert [(r["seqNum"], json.loads(r["data"])["text"]) for r in seen["inRecords"]] == [
        (0, "first"),
        (1, "second"),
    ]
    assert seen["outChunks"] == [
        {"type": "text-delta", "delta": "hel"},
        {"type": "text-delta", "delta": "lo"},
    ]
    assert seen["controls"] == [{"subtype": "turn-complete", "seqNum": 2}]
    assert seen["trimAck"] == {"start": 3, "end": 4}
    assert seen["afterTrim"] == [
        {"seqNum": 2, "headers": [["trigger-control", "turn-complete"]]},
        {"seqNum": 3, "headers": [["", "trim"]]},
    ]
