"""A launch survives a crash: SIGKILL the web service right after a create, start it again, and the
webhook receiver still gets exactly one acknowledged launch. On SQLite and PostgreSQL.

The receiver holds its first request unanswered, so whether the killed process had begun the
delivery or not, the launch can only reach the receiver again from the restarted process, through
the outbox row committed with the session.
"""

import uuid

import pytest
import requests

from tests.servers import LiveServer
from tests.webhook_receiver import WebhookReceiver, launch_data


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sessions.db"
    postgres = request.getfixturevalue("postgres")
    return postgres.database_url(postgres.create_database())


def test_a_sigkill_right_after_a_create_still_delivers_exactly_one_launch(database_url):
    receiver = WebhookReceiver(script=[0])  # 0: hold the first request, answer nothing
    env = {
        "SESSIONS_RUN_LAUNCHER": "webhook",
        "SESSIONS_WEBHOOK_URL": receiver.url,
        "SESSIONS_WEBHOOK_SECRET": receiver.secret,
        "SESSIONS_LAUNCH_TIMEOUT_SECONDS": "1",
    }
    server = LiveServer(database_url, workers=1, env=env)
    try:
        server.start()
        key = server.create_env(f"kill-{uuid.uuid4().hex[:8]}")["apiKey"]
        body = {"type": "chat.agent", "taskIdentifier": "agent", "triggerConfig": {"basePayload": {}}}
        created = requests.post(
            f"{server.base_url}/api/v1/sessions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        server.kill()
        server.start()
        (delivery,) = receiver.wait_for(1, timeout=60)
    finally:
        server.close()
        receiver.close()

    assert created.status_code == 201
    assert launch_data(delivery)["runId"] == created.json()["runId"]
    assert len(receiver.seen_ids) >= 2 and set(receiver.seen_ids) == {delivery.webhook_id}
    assert len(receiver.acknowledged()) == 1
