"""``/readyz`` follows the database: 503 while PostgreSQL is down, 200 once it is back.

The test stops and restarts a PostgreSQL of its own, never the one the other tests share.
"""

import time

import pytest
import requests

from tests.servers import LiveServer, MissingServerBinary, start_postgres

pytestmark = pytest.mark.postgres
POLL_SECONDS = 30


@pytest.fixture(scope="module")
def own_postgres():
    try:
        server = start_postgres()
    except MissingServerBinary as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def ready_status(server):
    return requests.get(f"{server.base_url}/readyz", timeout=10)


def wait_for_ready_status(server, status):
    deadline = time.monotonic() + POLL_SECONDS
    while True:
        response = ready_status(server)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_readyz_is_503_while_postgres_is_down_and_200_once_it_is_back(own_postgres):
    url = own_postgres.database_url(own_postgres.create_database())
    with LiveServer(url, workers=1) as server:
        ready = ready_status(server)

        own_postgres.pause()
        try:
            down = wait_for_ready_status(server, 503)
            alive = requests.get(f"{server.base_url}/healthz", timeout=10)
        finally:
            own_postgres.resume()
        back = wait_for_ready_status(server, 200)

    assert (ready.status_code, ready.json()) == (200, {"ok": True, "checks": {"database": "ok"}})
    assert (down.status_code, down.json()) == (503, {"ok": False, "checks": {"database": "unavailable"}})
    assert alive.status_code == 200
    assert back.status_code == 200
