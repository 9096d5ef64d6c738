"""The launch pacing rule and the webhook's body and signature."""

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from session_core.launchers import webhook_body
from session_core.services.launches import Launch, retry_delay
from tests.webhook_receiver import SECRET

LAUNCH = Launch(
    id="msg_abc",
    run_id="run_abc",
    reason="initial",
    task_identifier="agent",
    session={"id": "session_x", "externalId": "chat-1"},
    payload={"chatId": "chat-1"},
    token="ey.token",
)


def test_retries_back_off_exponentially_up_to_a_cap_with_jitter_in_the_upper_half():
    assert [retry_delay(n, 0.5, 60, 1.0) for n in range(1, 6)] == [0.5, 1, 2, 4, 8]
    assert retry_delay(20, 0.5, 60, 1.0) == 60
    assert retry_delay(3, 0.5, 60, 0.0) == 1.0  # half of 2 s
    assert retry_delay(0, 0.5, 60, 1.0) == 0.5


@pytest.mark.parametrize("jitter", [0.0, 0.3, 0.99])
def test_jitter_keeps_a_retry_between_half_and_the_full_delay(jitter):
    assert 2.0 <= retry_delay(3, 1.0, 60, jitter) <= 4.0


def test_the_webhook_body_carries_the_launch_and_verifies_with_standard_webhooks():
    now = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
    body = webhook_body(LAUNCH, now)
    headers = {
        "webhook-id": LAUNCH.id,
        "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
    }
    headers["webhook-signature"] = Webhook(SECRET).sign(
        LAUNCH.id, datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC), body
    )

    assert json.loads(body) == {
        "type": "run.triggered",
        "timestamp": "2026-12-03T12:00:00Z",
        "data": {
            "runId": "run_abc",
            "reason": "initial",
            "session": {"id": "session_x", "externalId": "chat-1"},
            "payload": {"chatId": "chat-1"},
            "token": "ey.token",
        },
    }
    assert Webhook(SECRET).verify(body, headers)["data"]["runId"] == "run_abc"
