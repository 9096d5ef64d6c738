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
    ControlRecord,
    DataRecord,
    NotFoundError,
    PermissionDeniedError,
    Record,
    Retries,
    RunFinalError,
    SessionClosedError,
    SessionsClient,
)

from tests.e2e.tcp_proxy import DroppingProxy
from tests.servers import LiveServer

pytestmark = pytest.mark.postgres
#: Pings every second, so a reader notices a dead server soon; a short lease, so heartbeats (every
#: third of it) come often enough to watch.
LEASE_SECONDS = 6
SERVER_ENV = {"SESSIONS_SSE_PING_SECONDS": "1", "SESSIONS_RUN_LEASE_SECONDS": str(LEASE_SECONDS)}


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


def test_json_data_headers_and_control_records_keep_their_shape(client: SessionsClient):
    ref = new_session(client)
    out = client.channel(ref, "out")

    first = out.append({"type": "start", "n": [1, 2]}, headers={"h": "v"})
    stored = list(out.records())
    live = out.subscribe()
    streamed = next(live)
    live.close()
    turn = [
        DataRecord({"type": "finish"}, part_id="f1"),
        ControlRecord([("trigger-control", "turn-complete")]),
    ]
    written = out.write(turn, part_id="turn-1")
    again = out.write(turn, part_id="turn-1")  # a retried write: stored once
    trimmed = out.write([DataRecord("plain")], trim_before=written[-1])
    records = list(out.records())

    assert stored == [streamed]
    assert (streamed.data, streamed.headers, streamed.is_control) == (
        {"type": "start", "n": [1, 2]},
        [("h", "v")],
        False,
    )
    assert (first, written, again) == (0, [1, 2], [1, 2])
    assert [r.seq_num for r in records] == [2, trimmed[0]]
    assert records[0].is_control and records[0].control == "turn-complete" and records[0].data is None
    assert (records[1].data, records[1].is_control) == ("plain", False)


def test_subscribe_ends_after_the_session_closed_marker(client: SessionsClient):
    ref = new_session(client)
    seen: list[Record] = []
    reader = threading.Thread(target=lambda: seen.extend(client.channel(ref, "out").subscribe()))
    reader.start()
    client.channel(ref, "out").append("last words")
    wait_until(lambda: len(seen) == 1, "the record before the close")

    client.sessions.close(ref, reason="finished")
    reader.join(60)

    assert not reader.is_alive()
    assert [r.data for r in seen] == ["last words", None]
    assert seen[-1].is_session_closed and seen[-1].header("session-closed-reason") == "finished"
    assert [r.is_session_closed for r in client.channel(ref, "in").subscribe()] == [True]


def test_a_run_token_drives_its_run_and_heartbeats_while_subscribed(
    client: SessionsClient, server: LiveServer
):
    created = client.sessions.create(type="chat.agent", task_identifier="agent")
    other = new_session(client)
    # failed at once: its run's short lease would expire (409 EXPIRED) while this test waits on heartbeats
    failed = client.runs.fail(client.sessions.retrieve(other).current_run_id, {"message": "no model"})
    beat = client.runs.heartbeat(created.run_id)  # a secret key may heartbeat too; it answers a run token
    assert beat.token is not None
    agent = SessionsClient(server.base_url, beat.token)
    leases: set = set()
    outcome: list[BaseException] = []

    def listen() -> None:
        try:
            for _ in agent.channel(created.id, "in").subscribe():
                pass
        except RunFinalError as error:
            outcome.append(error)

    with agent:
        assert (
            agent.run_id == created.run_id
            and beat.status == "EXECUTING"
            and beat.lease_seconds == LEASE_SECONDS
        )
        agent.channel(created.id, "out").append({"type": "text-delta", "delta": "hi"})
        with pytest.raises((PermissionDeniedError, NotFoundError)):
            agent.channel(other, "in").append("not my session")
        listener = threading.Thread(target=listen)
        listener.start()
        # the open subscription heartbeats on its own: the lease moves on, the token is refreshed
        wait_until(
            lambda: leases.add(client.runs.retrieve(created.run_id).lease_expires_at) or len(leases) >= 3,
            "heartbeats",
        )
        refreshed = agent.token != beat.token
        done = client.runs.complete(created.run_id, output={"answer": 42})
        # the next heartbeat learns the run is over; the next record then ends the subscription
        for n in range(600):
            if outcome or not listener.is_alive():
                break
            client.channel(created.id, "in").append(f"ping {n}")
            time.sleep(0.1)
        listener.join(60)
        with pytest.raises(RunFinalError):
            agent.runs.heartbeat(created.run_id)

    assert refreshed and client.runs.retrieve(created.run_id).status == "COMPLETED"
    assert (done.status, done.output) == ("COMPLETED", {"answer": 42})
    assert len(outcome) == 1 and outcome[0].code == "run_final"
    assert (failed.status, failed.error) == ("FAILED", {"message": "no model"})


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


def test_the_async_client_drives_runs_writes_records_and_ends_at_the_marker(server: LiveServer, key: str):
    async def scenario() -> dict:
        async with AsyncSessionsClient(server.base_url, key) as client:
            created = await client.sessions.create(type="chat.agent", task_identifier="agent")
            other = await client.sessions.create(type="chat.agent", task_identifier="agent")
            # failed at once, before its short lease can expire while the heartbeats are awaited
            failed = await client.runs.fail(other.run_id, "broken")
            beat = await client.runs.heartbeat(created.run_id)
            assert beat.token is not None
            async with AsyncSessionsClient(server.base_url, beat.token) as agent:
                out = agent.channel(created.id, "out")
                first = await out.append({"type": "start"})
                written = await out.write(
                    [DataRecord({"type": "finish"}), ControlRecord({"trigger-control": "turn-complete"})],
                    trim_before=first + 1,
                )
                stored = [(r.seq_num, r.data, r.control) async for r in out.records()]
                leases = set()
                seen = []
                refreshed = False
                await client.channel(created.id, "in").append("hello")
                async for record in agent.channel(created.id, "in").subscribe():
                    seen.append(record)
                    if record.data == "hello":  # heartbeats run as a task while the subscription is open
                        while len(leases) < 3:
                            leases.add((await client.runs.retrieve(created.run_id)).lease_expires_at)
                            await asyncio.sleep(0.2)
                        refreshed = agent.token != beat.token
                        await client.sessions.close(created.id, reason="async bye")
                done = await agent.runs.complete(created.run_id, output="ok")
                retrieved = await agent.runs.retrieve(created.run_id)
            try:
                await client.runs.heartbeat(other.run_id)
                final = None
            except RunFinalError as error:
                final = error.code
            return {
                "written": [first, *written],
                "stored": stored,
                "seen": [(r.data, r.is_session_closed, r.header("session-closed-reason")) for r in seen],
                "refreshed": refreshed,
                "done": (done.status, done.output, retrieved.status),
                "failed": (failed.status, failed.error),
                "final": final,
            }

    seen = asyncio.run(scenario())

    assert seen["written"] == [0, 1, 2]
    assert seen["stored"] == [(1, {"type": "finish"}, None), (2, None, "turn-complete")]
    assert seen["seen"] == [("hello", False, None), (None, True, "async bye")]
    assert seen["refreshed"] is True
    assert seen["done"] == ("COMPLETED", "ok", "COMPLETED")
    assert seen["failed"] == ("FAILED", "broken")
    assert seen["final"] == "run_final"
