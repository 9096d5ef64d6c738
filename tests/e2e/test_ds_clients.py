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
import requests
from durable_streams import DurableStream

from tests.e2e.sse_client import iter_events
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


def test_writers_and_live_readers_of_one_stream_at_once_each_get_their_own_answer(server, key):
    """Appends arriving together are written in one transaction and readers woken together share
    one read: still, each append gets its own offset, and each reader every message once, in order."""
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{server.base_url}/v1/stream/together/{uuid.uuid4().hex}"
    httpx.put(url, headers={**headers, "Content-Type": "application/json"}).raise_for_status()
    writers, appends, readers = 8, 25, 20
    connected = threading.Barrier(readers + 1, timeout=30)
    received: list[list[dict]] = [[] for _ in range(readers)]
    offsets: list[list[str]] = [[] for _ in range(writers)]

    def read(messages: list[dict]) -> None:
        at_tail = False
        with requests.get(f"{url}?offset=-1&live=sse", headers=headers, stream=True, timeout=30) as response:
            for event in iter_events(response):
                if event.name == "control" and not at_tail:  # the first one: the stream is read up to now
                    at_tail = True
                    connected.wait()
                if event.name == "data":
                    messages.extend(json.loads(event.data))
                if len(messages) >= writers * appends:
                    return

    def write(w: int) -> None:
        with httpx.Client(headers={**headers, "Content-Type": "application/json"}, timeout=30) as client:
            for n in range(appends):
                answer = client.post(url, content=json.dumps([{"w": w, "n": n}]))
                assert answer.status_code == 204, answer.text
                offsets[w].append(answer.headers["Stream-Next-Offset"])

    reading = [threading.Thread(target=read, args=(messages,), daemon=True) for messages in received]
    for thread in reading:
        thread.start()
    connected.wait()
    writing = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in writing:
        thread.start()
    for thread in writing + reading:
        thread.join(timeout=60)

    stored = httpx.get(f"{url}?offset=-1", headers=headers).json()
    assert len(stored) == writers * appends
    for w in range(writers):
        assert [m["n"] for m in stored if m["w"] == w] == list(range(appends))
        assert offsets[w] == sorted(offsets[w])  # offsets are ordered strings
    assert len({offset for per_writer in offsets for offset in per_writer}) == writers * appends
    assert all(messages == stored for messages in received)
