"""The Python client (``clients/python``) against a live server on PostgreSQL: every method, sync
and async; a retried append stored once; a live read across a restart and a SIGKILLed worker.

Nothing is timed: waits are bounded loops on what the test observes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from session_client import (
    AsyncSessionsClient,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    Record,
    Retries,
    SessionClosedError,
    SessionsClient,
)

from tests.e2e.tcp_proxy import DroppingProxy
from tests.servers import LiveServer

pytestmark = pytest.mark.postgres
#: Pings every second, so a reader notices a dead server soon.
SERVER_ENV = {"SESSIONS_SSE_PING_SECONDS": "1"}


@pytest.fixture(scope="module")
def server(postgres) -> Iterator[LiveServer]:
    with LiveServer(postgres.database_url(postgres.create_database()), workers=2, env=SERVER_ENV) as live:
        yield live


@pytest.fixture(scope="module")
def key(server: LiveServer) -> str:
    return server.create_env(f"pyclient-{uuid.uuid4().hex[:8]}")["apiKey"]


@pytest.fixture
def client(server: LiveServer, key: str) -> Iterator[SessionsClient]:
    with SessionsClient(server.base_url, key) as sessions_client:
        yield sessions_client


def new_session(client: SessionsClient, **kwargs) -> str:
    return client.sessions.create(type="chat.agent", task_identifier="agent", **kwargs).id


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_a_session_is_created_found_updated_and_closed(client: SessionsClient):
    external = f"chat-{uuid.uuid4()}"

    created = client.sessions.create(
        type="chat.agent",
        external_id=external,
        task_identifier="my-agent",
        trigger_config={"basePayload": {}},
    )
    cached = client.sessions.create(type="chat.agent", external_id=external, task_identifier="my-agent")
    by_external = client.sessions.retrieve(external)
    updated = client.sessions.update(created.id, tags=["a", "b"], metadata={"k": 1})
    closed = client.sessions.close(external, reason="done")
    closed_again = client.sessions.close(created.id, reason="other")

    assert created.id.startswith("session_") and created.external_id == external and not created.is_cached
    assert created.run_id.startswith("run_") and created.public_access_token.count(".") == 2
    assert (cached.is_cached, cached.id, cached.run_id) == (True, created.id, created.run_id)
    assert by_external.id == created.id and by_external.task_identifier == "my-agent"
    assert (updated.tags, updated.metadata) == (["a", "b"], {"k": 1})
    assert closed.is_closed and closed.closed_reason == "done"
    assert (closed_again.closed_at, closed_again.closed_reason) == (closed.closed_at, "done")
    with pytest.raises(SessionClosedError):
        client.channel(created.id, "in").append("too late")
    with pytest.raises(ConflictError):
        client.sessions.create(type="chat.agent", external_id=external, task_identifier="my-agent")


def test_list_iterates_every_page(client: SessionsClient):
    tag = f"t-{uuid.uuid4().hex[:10]}"
    ids = {new_session(client, tags=[tag]) for _ in range(3)}
    client.sessions.close(sorted(ids)[0])

    listed = [session.id for session in client.sessions.list(tag=tag, page_size=1)]
    active = [session.id for session in client.sessions.list(tag=[tag], status="ACTIVE", page_size=2)]

    assert sorted(listed) == sorted(ids) and len(listed) == 3
    assert sorted(active) == sorted(ids - {sorted(ids)[0]})


def test_records_reads_every_stored_record_across_pages(client: SessionsClient, server: LiveServer):
    ref = new_session(client)
    channel = client.channel(ref, "in")
    first = channel.append("first")
    # Over 4 MiB in one channel: the server's records page stops there, so reading it all takes pages.
    bodies = write_through_s2(client, server, ref, count=1100, size=4200)

    records = list(channel.records())
    after_first = list(channel.records(after=first))

    assert [r.seq_num for r in records] == list(range(1101))
    assert records[0].data == "first" and records[0].part_id and not records[0].is_control
    assert [r.data for r in records[1:]] == bodies
    assert all(isinstance(r.timestamp, int) for r in records)
    assert [r.seq_num for r in after_first] == list(range(1, 1101))


def write_through_s2(
    client: SessionsClient, server: LiveServer, ref: str, count: int, size: int
) -> list[str]:
    """Append ``count`` envelopes of ``size`` characters through the S2 endpoint, 200 a request."""
    grant = httpx.put(f"{server.base_url}/realtime/v1/sessions/{ref}/in", headers=auth(client.token))
    name = grant.headers["x-s2-stream-name"]
    url = f"{grant.headers['x-s2-endpoint']}/streams/{name.replace('/', '%2F')}/records"
    s2_auth = {**auth(grant.headers["x-s2-access-token"]), "S2-Basin": grant.headers["x-s2-basin"]}
    bodies = [f"{n:05d}" + "x" * (size - 5) for n in range(count)]
    for start in range(0, count, 200):
        chunk = [
            {"body": f'{{"data":"{body}","id":"p{start}-{i}"}}'}
            for i, body in enumerate(bodies[start:][:200])
        ]
        httpx.post(url, json={"records": chunk}, headers=s2_auth, timeout=30).raise_for_status()
    return bodies


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_subscribe_delivers_stored_then_live_records_in_order(client: SessionsClient):
    ref = new_session(client)
    channel = client.channel(ref, "in")
    channel.append("zero")
    seen: list[Record] = []

    def follow() -> None:
        for record in channel.subscribe():
            seen.append(record)
            if record.data == "two":
                return

    reader = threading.Thread(target=follow)
    reader.start()
    wait_until(lambda: len(seen) == 1, "the stored record")
    channel.append("one")
    channel.append("two", part_id="my-part")
    reader.join(60)

    assert [(r.seq_num, r.data) for r in seen] == [(0, "zero"), (1, "one"), (2, "two")]
    assert seen[2].part_id == "my-part" and not reader.is_alive()
    resumed = channel.subscribe(after=1)
    assert next(resumed).seq_num == 2
    resumed.close()


def test_a_bad_token_a_forbidden_write_and_a_missing_session_raise_typed_errors(client, server):
    ref = new_session(client)
    created = client.sessions.retrieve(ref)
    token = client.sessions.create(type="chat.agent", task_identifier="agent").public_access_token

    with SessionsClient(server.base_url, "tr_dev_not-a-key") as stranger:
        with pytest.raises(AuthenticationError):
            stranger.sessions.retrieve(ref)
    with SessionsClient(server.base_url, token) as browser:
        with pytest.raises(PermissionDeniedError):
            browser.channel(ref, "out").append("not yours")
    with pytest.raises(NotFoundError) as missing:
        client.sessions.retrieve("session_doesnotexist000000000")

    assert missing.value.status_code == 404 and missing.value.response.headers["x-should-retry"] == "false"
    assert created.id == ref


def test_an_append_retried_after_a_dropped_connection_is_stored_once(client, server):
    ref = new_session(client)
    proxy = DroppingProxy(server.port)
    try:
        with SessionsClient(proxy.url, client.token, retries=Retries(base_delay=0.05)) as through_proxy:
            channel = through_proxy.channel(ref, "in")
            proxy.drop_next_response(b"/append")
            seq = channel.append("once")
            later = channel.append("after")
    finally:
        proxy.close()

    stored = [(r.seq_num, r.data) for r in client.channel(ref, "in").records()]
    assert proxy.dropped == 1
    assert (seq, later) == (0, 1)
    assert stored == [(0, "once"), (1, "after")]


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def test_the_async_client_does_the_same(server: LiveServer, key: str):
    async def scenario() -> dict:
        async with AsyncSessionsClient(server.base_url, key) as client:
            tag = f"t-{uuid.uuid4().hex[:10]}"
            external = f"chat-{uuid.uuid4()}"
            created = await client.sessions.create(
                type="chat.agent", external_id=external, task_identifier="agent", tags=[tag]
            )
            cached = await client.sessions.create(
                type="chat.agent", external_id=external, task_identifier="agent"
            )
            second = await client.sessions.create(type="chat.agent", task_identifier="agent", tags=[tag])
            retrieved = await client.sessions.retrieve(external)
            updated = await client.sessions.update(created.id, metadata={"n": 2})
            listed = [s.id async for s in client.sessions.list(tag=tag, page_size=1)]
            channel = client.channel(created.id, "in")
            appended = [await channel.append("a"), await channel.append("b")]
            stored = [(r.seq_num, r.data) async for r in channel.records()]
            live = []
            async for record in channel.subscribe():
                live.append((record.seq_num, record.data))
                if len(live) == 1:
                    await channel.append("c")
                if record.data == "c":
                    break
            closed = await client.sessions.close(created.id, reason="bye")
            try:
                await channel.append("late")
                late = None
            except SessionClosedError as error:
                late = error.message
            return {
                "created": created,
                "cached": cached,
                "second": second.id,
                "retrieved": retrieved.id,
                "metadata": updated.metadata,
                "listed": listed,
                "appended": appended,
                "stored": stored,
                "live": live,
                "closed": (closed.closed_reason, closed.is_closed),
                "late": late,
            }

    seen = asyncio.run(scenario())

    assert seen["cached"].is_cached and seen["cached"].id == seen["created"].id == seen["retrieved"]
    assert seen["metadata"] == {"n": 2}
    assert sorted(seen["listed"]) == sorted([seen["created"].id, seen["second"]])
    assert seen["appended"] == [0, 1]
    assert seen["stored"] == [(0, "a"), (1, "b")]
    assert seen["live"] == [(0, "a"), (1, "b"), (2, "c")]
    assert seen["closed"] == ("bye", True)
    assert seen["late"] == "Cannot append to a closed session"


def test_a_subscribe_across_a_restart_and_a_worker_sigkill_delivers_every_record_once(server, key):
    # Restarts the module's server (same port, same database): the other tests only need it up.
    with SessionsClient(server.base_url, key, retries=Retries(max_retries=10)) as client:
        ref = new_session(client)
        channel = client.channel(ref, "in")
        seen: list[Record] = []

        def follow() -> None:
            for record in channel.subscribe(reconnects=100):
                seen.append(record)
                if record.data == "end":
                    return

        reader = threading.Thread(target=follow)
        reader.start()
        expected = [f"r{n}" for n in range(15)] + ["end"]
        for body in expected[:5]:
            channel.append(body)
        wait_until(lambda: len(seen) >= 5, "the first records")

        server.stop()
        server.start()
        for body in expected[5:10]:
            channel.append(body)
        wait_until(lambda: len(seen) >= 10, "records after the restart")

        for pid in worker_pids(server.pid):
            os.kill(pid, signal.SIGKILL)
        for body in expected[10:]:
            channel.append(body)
        reader.join(120)

    assert not reader.is_alive()
    assert [(r.seq_num, r.data) for r in seen] == list(enumerate(expected))
