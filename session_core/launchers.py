"""The senders behind ``SESSIONS_RUN_LAUNCHER``: a signed webhook POST, or a Celery task.

Both are only ever called by the outbox dispatcher (``services.launches``), which retries whatever
they raise. ``standardwebhooks`` and ``celery`` are imported when their launcher is built, so the
embedded default needs neither.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from session_core.services.launches import Launch

EVENT_TYPE = "run.triggered"


def webhook_body(launch: Launch, now: datetime) -> str:
    """The webhook's JSON body: ``{"type": "run.triggered", "timestamp", "data": {…}}``."""
    data = {
        "runId": launch.run_id,
        "reason": launch.reason,
        "session": launch.session,
        "payload": launch.payload,
        "token": launch.token,
    }
    timestamp = now.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"type": EVENT_TYPE, "timestamp": timestamp, "data": data}, separators=(",", ":"))


class DeliveryFailed(Exception):
    """The receiver did not acknowledge the launch with a 2xx."""


class WebhookSender:
    """POSTs each launch to ``url``, signed per Standard Webhooks with the ``whsec_…`` secret.

    The ``webhook-id`` is the launch's id, the same on every attempt, so receivers de-duplicate.
    """

    def __init__(self, url: str, secret: str, timeout_seconds: float = 10.0) -> None:
        from standardwebhooks.webhooks import Webhook

        self._url = url
        self._webhook = Webhook(secret)
        self._timeout = timeout_seconds

    def send(self, launch: Launch) -> None:
        now = datetime.now(UTC)
        body = webhook_body(launch, now)
        request = urllib.request.Request(
            self._url,
            data=body.encode(),
            method="POST",
            headers={
                "content-type": "application/json",
                "user-agent": "sessions-launcher",
                "webhook-id": launch.id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": self._webhook.sign(launch.id, now, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            error.close()
            raise DeliveryFailed(f"receiver answered {error.code}") from None
        except (OSError, ValueError) as error:
            raise DeliveryFailed(f"receiver unreachable: {error}") from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"receiver answered {status}")


class CelerySender:
    """Sends each launch as the Celery task named by the session's ``taskIdentifier``.

    The task id is the launch's id; kwargs are ``run_id``, ``session``, ``payload``, ``token`` and
    ``reason``. Publishing fails fast (the dispatcher retries), rather than blocking on a broker.
    """

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self._app = Celery("sessions-launcher", broker=broker_url, set_as_current=False)
        self._app.conf.broker_connection_retry_on_startup = False

    def send(self, launch: Launch) -> None:
        kwargs: dict[str, Any] = {
            "run_id": launch.run_id,
            "session": launch.session,
            "payload": launch.payload,
            "token": launch.token,
            "reason": launch.reason,
        }
        self._app.send_task(
            launch.task_identifier,
            kwargs=kwargs,
            task_id=launch.id,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        )
