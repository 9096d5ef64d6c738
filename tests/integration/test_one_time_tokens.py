"""One-time-use tokens (``otu: true``) authorize exactly one request, on SQLite and PostgreSQL.

The use is remembered in the database, so a second worker (here a second app on the same
database) refuses the token too, and of concurrent uses exactly one gets through.
"""

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from session_core.auth import mint_token
from session_core.config import Settings
from session_core.db.tables import spent_tokens
from session_core.db.uow import UnitOfWork
from session_web.app import create_app
from tests.integration.sessions_api import bearer

SESSIONS = "/api/v1/sessions"
SPENT = {"error": "Invalid Public Access Token"}


def one_time_token(env, ttl_seconds=3600):
    return mint_token(env, ["read:sessions"], ttl_seconds=ttl_seconds, extra_claims={"otu": True})


@pytest.fixture(scope="module")
def second_worker(app_database_url):
    """Another app on the same database, as a second gunicorn worker would be."""
    app = create_app(Settings(database_url=app_database_url))
    yield app
    app.extensions["sessions"].hub.close()
    app.extensions["sessions"].engine.dispose()


def test_a_one_time_token_authorizes_exactly_one_request(client, env, make_session):
    ref = make_session()["id"]
    token = bearer(one_time_token(env))

    first = client.get(f"{SESSIONS}/{ref}", headers=token)
    second = client.get(f"{SESSIONS}/{ref}", headers=token)

    assert first.status_code == 200
    assert (second.status_code, second.get_json()) == (401, SPENT)


def test_a_token_spent_on_one_worker_is_refused_by_another(client, second_worker, env, make_session):
    ref = make_session()["id"]
    token = bearer(one_time_token(env))

    first = client.get(f"{SESSIONS}/{ref}", headers=token)
    elsewhere = second_worker.test_client().get(f"{SESSIONS}/{ref}", headers=token)

    assert (first.status_code, elsewhere.status_code) == (200, 401)


def test_of_concurrent_uses_exactly_one_gets_through(app, env, make_session):
    ref = make_session()["id"]
    token = bearer(one_time_token(env))
    uses = 8
    start = threading.Barrier(uses)
    statuses = []

    def use():
        client = app.test_client()
        start.wait()
        statuses.append(client.get(f"{SESSIONS}/{ref}", headers=token).status_code)

    threads = [threading.Thread(target=use) for _ in range(uses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] + [401] * (uses - 1)


def test_tokens_that_are_not_one_time_stay_reusable(client, env, make_session):
    ref = make_session()["id"]
    token = bearer(mint_token(env, ["read:sessions"]))

    assert [client.get(f"{SESSIONS}/{ref}", headers=token).status_code for _ in range(3)] == [200] * 3


def test_spent_tokens_are_remembered_until_they_expire_then_swept(engine):
    now = int(time.time())
    prefix = uuid.uuid4().hex
    uow = UnitOfWork(engine)
    with uow:
        assert uow.spent_tokens.spend(f"{prefix}-expired", now - 1, now - 100)
        assert uow.spent_tokens.spend(f"{prefix}-live", now + 100, now - 100)
        uow.commit()

    with uow:
        assert not uow.spent_tokens.spend(f"{prefix}-live", now + 100, now)
        assert uow.spent_tokens.spend(f"{prefix}-another", now + 100, now)
        uow.commit()

    with engine.connect() as conn:
        left = set(conn.execute(sa.select(spent_tokens.c.token_hash)).scalars())
    assert f"{prefix}-expired" not in left
    assert {f"{prefix}-live", f"{prefix}-another"} <= left
