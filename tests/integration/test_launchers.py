"""Launchers on real receivers: a webhook server verifying Standard Webhooks signatures, and a
Celery worker process on a real Redis. The app runs in-process, on SQLite and PostgreSQL."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from session_core.config import Settings
from session_core.db.migrate import upgrade_database
from session_core.db.tables import run_launches, session_runs
from session_core.db.uow import UnitOfWork
from session_core.launchers import CelerySender, WebhookSender
from session_core.models import EnvironmentType, utcnow
from session_core.services.environments import create_environment
from session_core.services.launches import Dispatcher, DispatchPolicy, OutboxLauncher
from session_web.app import create_app
from tests.integration.sessions_api import bearer, session_body
from tests.webhook_receiver import WebhookReceiver, launch_data

REPO = Path(__file__).resolve().parents[2]
#: Short pauses so retries happen within a test; the policy's shape is production's.
#: The Redis list the Celery test agent pushes what it received onto.
RECEIVED = "received-launches"
FAST = DispatchPolicy(poll_seconds=0.2, hold_seconds=30, base_delay_seconds=0.05, max_delay_seconds=0.5)


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def build_app(database_url, sender, lease_seconds=30):
    upgrade_database(database_url)
    settings = Settings(database_url=database_url, run_lease_seconds=lease_seconds)
    holder = {}
    dispatcher = Dispatcher(lambda: UnitOfWork(holder["engine"]), sender, settings.run_lease_seconds, FAST)
    app = create_app(settings, launcher=OutboxLauncher(settings.run_lease_seconds, dispatcher))
    holder["engine"] = app.extensions["sessions"].engine
    return app, dispatcher


@pytest.fixture
def webhook_app(db_url, receiver):
    app, dispatcher = build_app(db_url, WebhookSender(receiver.url, receiver.secret, timeout_seconds=5))
    yield app
    dispatcher.close()
    app.extensions["sessions"].hub.close()
    app.extensions["sessions"].engine.dispose()


def new_env(app):
    engine = app.extensions["sessions"].engine
    return create_environment(
        UnitOfWork(engine), f"env-{uuid.uuid4().hex[:8]}", EnvironmentType.DEVELOPMENT, utcnow()
    )


def outbox(app, run_id):
    with app.extensions["sessions"].engine.connect() as conn:
        return conn.execute(sa.select(run_launches).where(run_launches.c.run_id == run_id)).one()._mapping


def settled_outbox(app, run_id, timeout=30.0):
    """The outbox row once the dispatcher marked it done (it does so just after the receiver answers)."""
    deadline = time.monotonic() + timeout
    row = outbox(app, run_id)
    while row["delivered_at"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
        row = outbox(app, run_id)
    return row


def test_a_create_is_launched_once_by_a_signed_webhook(webhook_app, receiver):
    env = new_env(webhook_app)
    client = webhook_app.test_client()
    body = session_body(triggerConfig={"basePayload": {"chatId": "c1"}, "idleTimeoutInSeconds": 60})

    created = client.post("/api/v1/sessions", json=body, headers=bearer(env.api_key)).get_json()
    (delivery,) = receiver.wait_for(1)

    data = launch_data(delivery)
    assert receiver.refused_signatures == 0
    assert (data["runId"], data["reason"], data["session"]["id"]) == (
        created["runId"],
        "initial",
        created["id"],
    )
    assert data["session"]["externalId"] == body["externalId"] and "triggerConfig" not in data["session"]
    assert data["payload"] == {"chatId": "c1", "idleTimeoutInSeconds": 60}
    assert delivery.body["timestamp"].endswith("Z")
    beat = client.post(f"/api/v1/runs/{data['runId']}/heartbeat", json={}, headers=bearer(data["token"]))
    assert beat.get_json()["status"] == "EXECUTING"
    assert settled_outbox(webhook_app, created["runId"])["delivered_at"] is not None


def test_a_receiver_that_fails_three_times_gets_the_launch_acknowledged_once(db_url):
    receiver = WebhookReceiver(script=[500, 503, 404])
    app, dispatcher = build_app(db_url, WebhookSender(receiver.url, receiver.secret, timeout_seconds=5))
    try:
        env = new_env(app)
        created = app.test_client().post("/api/v1/sessions", json=session_body(), headers=bearer(env.api_key))
        run_id = created.get_json()["runId"]
        acknowledged = receiver.wait_for(1)
        dispatcher.close()
        row = settled_outbox(app, run_id)
    finally:
        dispatcher.close()
        receiver.close()
        app.extensions["sessions"].hub.close()
        app.extensions["sessions"].engine.dispose()

    assert [d.status for d in receiver.deliveries] == [500, 503, 404, 200]
    assert {d.webhook_id for d in receiver.deliveries} == {row["id"]}  # one launch, retried under one id
    assert len(acknowledged) == 1
    assert (row["attempts"], row["delivered_at"] is not None, row["last_error"]) == (4, True, None)


def test_an_expired_run_is_followed_by_one_continuation_launch(webhook_app, receiver):
    env = new_env(webhook_app)
    client = webhook_app.test_client()
    created = client.post("/api/v1/sessions", json=session_body(), headers=bearer(env.api_key)).get_json()
    receiver.wait_for(1)
    with webhook_app.extensions["sessions"].engine.begin() as conn:
        conn.execute(
            sa.update(session_runs)
            .where(session_runs.c.run_id == created["runId"])
            .values(lease_expires_at=utcnow().replace(year=2020))
        )

    for text in ("one", "two", "three"):
        client.post(
            f"/realtime/v1/sessions/{created['id']}/in/append", data=text, headers=bearer(env.api_key)
        )
    first, second = receiver.wait_for(2)

    assert launch_data(first)["runId"] == created["runId"]
    assert (
        launch_data(second)["reason"] == "continuation" and launch_data(second)["runId"] != created["runId"]
    )
    time.sleep(0.5)  # a third launch, if one were wrongly queued, would be delivered by now
    assert len(receiver.deliveries) == 2


@pytest.fixture(scope="module")
def celery_worker(redis_server):
    """A real Celery worker process (solo pool) running ``tests.integration.celery_agent``."""
    env = {
        **os.environ,
        "CELERY_BROKER_URL": redis_server.url,
        "PYTHONPATH": str(REPO),
        "AGENT_RESULTS_KEY": RECEIVED,
    }
    log = open(Path(redis_server.base) / f"celery-{uuid.uuid4().hex[:6]}.log", "wb")
    command = [str(Path(sys.executable).parent / "celery"), "-A", "tests.integration.celery_agent", "worker"]
    command += [
        "--pool",
        "solo",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "WARNING",
    ]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    yield proc
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def received_for(results, run_id, timeout=120.0):
    """The launch of ``run_id`` the Celery test agent reported, skipping other tests' (bounded: a
    worker boots slowly on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = results.lpop(RECEIVED)
        if item is not None and json.loads(item)["run_id"] == run_id:
            return json.loads(item)
        if item is None:
            time.sleep(0.2)
    return None


def test_a_celery_worker_receives_the_launch_as_a_task(db_url, redis_server, celery_worker):
    results = redis.Redis.from_url(redis_server.url)
    app, dispatcher = build_app(db_url, CelerySender(redis_server.url))
    try:
        env = new_env(app)
        body = session_body(taskIdentifier="celery-agent")
        created = (
            app.test_client().post("/api/v1/sessions", json=body, headers=bearer(env.api_key)).get_json()
        )
        received = received_for(results, created["runId"])
        row = settled_outbox(app, created["runId"])
    finally:
        dispatcher.close()
        app.extensions["sessions"].hub.close()
        app.extensions["sessions"].engine.dispose()

    assert received is not None, "the Celery worker never ran the launch's task"
    assert (received["run_id"], received["reason"], received["task_id"]) == (
        created["runId"],
        "initial",
        row["id"],
    )
    assert received["session"]["id"] == created["id"] and received["token"].startswith("ey")
    assert row["delivered_at"] is not None


def test_a_lease_left_to_lapse_expires_the_run_and_the_next_message_launches_another(db_url, receiver):
    app, dispatcher = build_app(db_url, WebhookSender(receiver.url, receiver.secret), lease_seconds=1)
    try:
        env = new_env(app)
        client = app.test_client()
        created = client.post("/api/v1/sessions", json=session_body(), headers=bearer(env.api_key)).get_json()
        token = launch_data(receiver.wait_for(1)[0])["token"]
        beat = client.post(f"/api/v1/runs/{created['runId']}/heartbeat", json={}, headers=bearer(token))
        time.sleep(1.5)  # the agent stops heartbeating: its 1 s lease lapses
        expired = client.get(f"/api/v1/runs/{created['runId']}", headers=bearer(env.api_key)).get_json()
        late = client.post(f"/api/v1/runs/{created['runId']}/heartbeat", json={}, headers=bearer(token))
        client.post(
            f"/realtime/v1/sessions/{created['id']}/in/append",
            data="still there?",
            headers=bearer(env.api_key),
        )
        second = launch_data(receiver.wait_for(2)[1])
    finally:
        dispatcher.close()
        app.extensions["sessions"].hub.close()
        app.extensions["sessions"].engine.dispose()

    assert (beat.get_json()["status"], beat.get_json()["leaseSeconds"]) == ("EXECUTING", 1)
    assert expired["status"] == "EXPIRED"
    assert (late.status_code, late.get_json()["code"]) == (409, "run_final")
    assert second["reason"] == "continuation" and second["runId"] != created["runId"]
