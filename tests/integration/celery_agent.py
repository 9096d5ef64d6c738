"""The Celery app a test worker runs (``celery -A tests.integration.celery_agent worker``).

Its one task stands in for an agent: it pushes the launch it received onto a Redis list, where the
test reads it back (``AGENT_RESULTS_KEY``). The broker is the test's own redis-server
(``CELERY_BROKER_URL``).
"""

import json
import os

import redis
from celery import Celery

BROKER_URL = os.environ["CELERY_BROKER_URL"]
RECEIVED = os.environ["AGENT_RESULTS_KEY"]

app = Celery("celery_agent", broker=BROKER_URL)
app.conf.broker_connection_retry_on_startup = True


@app.task(name="celery-agent", bind=True)
def run_agent(self, run_id, session, payload, token, reason):
    record = {"task_id": self.request.id, "run_id": run_id, "session": session, "payload": payload}
    record.update(token=token, reason=reason)
    redis.Redis.from_url(BROKER_URL).rpush(RECEIVED, json.dumps(record))
