"""The published Durable Streams clients against our `/v1/stream` routes, and producers across a crash.

`js/ds_clients.mjs` drives `@durable-streams/client` 0.2.7 (its `IdempotentProducer` included); the
Python client is PyPI `durable-streams` 0.1.0. Both authenticate with a bearer token.
"""

import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from durable_streams import DurableStream

from tests.servers import LiveServer

pytestmark = pytest.mark.postgres
JS = Path(__file__).parent / "js"


@pytest.fixture(scope="module")
def server(postgres):
    with LiveServer(postgres.database_url(postgres.create_database()), workers=2) as live:
        yield live


@pytest.fixture(scope="module")
def key(server) -> str:
    return server.create_env(f"ds-clients-{uuid.uuid4().hex[:8]}")["apiKey"]


def test_the_typescript_client_and_its_idempotent_producer(server, key):
    session = httpx.post(
        f"{server.base_url}/api/v1/sessions",
        json={"type": "chat.agent", "externalId": f"ds-{uuid.uuid4()}", "taskIdentifier": "agent",
              "triggerConfig": {"basePayload": {}}},
        headers={"Authorization": f"Bearer {key}"},
    ).json()  # fmt: skip

    done = subprocess.run(
        ["node", "ds_clients.mjs", server.base_url, key, session["id"], session["publicAccessToken"]],
        cwd=JS, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr + server.log()
    seen = json.loads(done.stdout)
    assert seen["producerErrors"] == []
    assert seen["items"] == list(range(200))
    assert seen["longPoll"] == [{"n": "live"}]
    assert seen["sse"] == [{"n": "live"}]
    assert seen["afterClose"] == [{"n": "live"}, {"n": "end"}]
    assert seen["closedHeader"] == "true"
    assert [json.loads(item["data"]) for item in seen["sessionIn"]] == [{"kind": "message", "text": "hi"}]


def test_the_python_client_writes_and_reads_with_a_bearer_token(server, key):
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{server.base_url}/v1/stream/python/{uuid.uuid4().hex}"
    with DurableStream.create(
        url, content_type="application/json", headers=headers, batching=False
    ) as handle:
        handle.append({"a": 1})
        handle.append([{"b": 2}, {"c": 3}])
        with handle.stream(offset="-1", live=False) as response:
            # The client wraps each value in an array, so a list is one message.
            assert response.read_json() == [{"a": 1}, [{"b": 2}, {"c": 3}]]
        assert handle.head().offset == response.offset

    binary = f"{url}-bytes"
    with DurableStream.create(binary, content_type="application/octet-stream", headers=headers) as handle:
        handle.append(bytes(range(256)))
        with handle.stream(offset="-1", live=False) as response:
            assert response.read_bytes() == bytes(range(256))


def test_a_sigkill_during_idempotent_appends_loses_and_duplicates_nothing(postgres):
    """A producer keeps appending (retrying each request until it is answered) while the server is
    killed and started again: every seq is stored exactly once, in order."""
    appends = 120
    with LiveServer(postgres.database_url(postgres.create_database()), workers=2) as live:
        headers = {"Authorization": f"Bearer {live.create_env('ds-crash')['apiKey']}"}
        url = f"{live.base_url}/v1/stream/crash"
        httpx.put(url, headers={**headers, "Content-Type": "application/json"}).raise_for_status()
        acked = threading.Semaphore(0)
        statuses: list[int] = []

        def produce() -> None:
            with httpx.Client(headers=headers, timeout=5) as client:
                for seq in range(appends):
                    while True:
                        try:
                            answer = client.post(url, content=json.dumps([{"seq": seq}]), headers={
                                "Content-Type": "application/json", "Producer-Id": "crash-test",
                                "Producer-Epoch": "0", "Producer-Seq": str(seq)})  # fmt: skip
                        except httpx.TransportError:  # down, or killed mid-request: send it again
                            time.sleep(0.05)
                            continue
                        if answer.status_code < 500:
                            break
                    statuses.append(answer.status_code)
                    acked.release()

        writer = threading.Thread(target=produce)
        writer.start()
        for _ in range(appends // 3):
            acked.acquire(timeout=60)
        live.kill()
        live.start()
        writer.join(timeout=120)

        read = httpx.get(f"{url}?offset=-1", headers=headers)
    assert not writer.is_alive()
    assert set(statuses) <= {200, 204} and len(statuses) == appends
    assert [item["seq"] for item in read.json()] == list(range(appends))
