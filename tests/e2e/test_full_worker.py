"""A full worker refuses new live reads instead of hanging (issue 10 item 9).

One gevent worker admits SESSIONS_MAX_LIVE_READS live reads, proportionally smaller than the
defaults (10,000 live reads in 11,000 connections): 2,000 in 2,200. Idle subscribers fill it up
through raw sockets (asyncio), then more live reads are refused with 503 + Retry-After while an
append and a control-plane read are still answered. Without the limit, the 2,200th connection
fills gunicorn's pool and every later request waits as long as the subscribers stay.
"""

import asyncio
import resource
import uuid

import pytest
import requests

from tests.servers import LiveServer

LIVE_READS = 2000
CONNECTIONS = 2200
EXTRA_LIVE_READS = 250  # past the pool too, had they been admitted
#: Generous bounds so a loaded machine does not fail the test; nothing here is timed.
DEADLINE_SECONDS = 180
REQUEST_TIMEOUT = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * (CONNECTIONS + EXTRA_LIVE_READS) + 200  # our sockets and the server's (it inherits this)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.fail(f"ulimit -n allows {hard} files; this test needs {wanted}: raise the hard limit")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    env = {"SESSIONS_MAX_LIVE_READS": str(LIVE_READS), "SESSIONS_WORKER_CONNECTIONS": str(CONNECTIONS)}
    database_url = f"sqlite:///{tmp_path_factory.mktemp('full-worker')}/sessions.db"
    try:
        with LiveServer(database_url, workers=1, env=env) as live:
            yield live
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def open_live_read(port: int, path: str, key: str) -> tuple[int, bytes, asyncio.StreamWriter]:
    """Send a live read and wait for its status line and headers (plus a first event if 200)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Timeout-Seconds: 600\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status == 200:
        await reader.readuntil(b"event: ping")  # the stream is open
    return status, head, writer


async def fill_and_overflow(port: int, path: str, key: str) -> tuple[list, list]:
    """Open LIVE_READS subscribers (a few hundred at a time), then EXTRA_LIVE_READS more at once."""
    gate = asyncio.Semaphore(200)

    async def one() -> tuple[int, bytes, asyncio.StreamWriter]:
        async with gate:
            return await open_live_read(port, path, key)

    held = await asyncio.gather(*(one() for _ in range(LIVE_READS)))
    extra = await asyncio.gather(*(open_live_read(port, path, key) for _ in range(EXTRA_LIVE_READS)))
    return held, extra


def test_a_full_worker_refuses_live_reads_and_still_serves_appends_and_reads(server):
    key = server.create_env(f"full-{uuid.uuid4().hex[:8]}")["apiKey"]
    auth = {"Authorization": f"Bearer {key}"}
    created = requests.post(
        f"{server.base_url}/api/v1/sessions",
        json={"type": "chat.agent", "taskIdentifier": "agent", "triggerConfig": {"basePayload": {}}},
        headers=auth,
        timeout=REQUEST_TIMEOUT,
    ).json()
    path = f"/realtime/v1/sessions/{created['id']}/in"

    async def scenario():
        held, extra = await asyncio.wait_for(fill_and_overflow(server.port, path, key), DEADLINE_SECONDS)
        try:
            # While every admitted subscriber is still open: short requests are served.
            append = await asyncio.to_thread(
                requests.post,
                server.base_url + path + "/append",
                data="hi",
                headers=auth,
                timeout=REQUEST_TIMEOUT,
            )
            retrieved = await asyncio.to_thread(
                requests.get,
                f"{server.base_url}/api/v1/sessions/{created['id']}",
                headers=auth,
                timeout=REQUEST_TIMEOUT,
            )
            return [status for status, _, _ in held], [(s, h) for s, h, _ in extra], append, retrieved
        finally:
            for _, _, writer in held + extra:
                writer.close()

    held, extra, append, retrieved = asyncio.run(scenario())

    assert held.count(200) == LIVE_READS
    assert [status for status, _ in extra] == [503] * EXTRA_LIVE_READS
    assert all(b"\r\nretry-after: " in head.lower() for _, head in extra)
    assert all(b"\r\nconnection: close" in head.lower() for _, head in extra)  # frees its slot at once
    assert append.status_code == 200, append.text
    assert retrieved.status_code == 200, retrieved.text
