"""The Celery side: the server's ``celery`` launcher sends a task named after the session's
``taskIdentifier``; this worker runs the agent in it.

    CELERY_BROKER_URL=redis://127.0.0.1:6379/0 celery -A celery_app worker -P threads -c 8

Each task holds a worker slot for the whole conversation, so give the worker as many as the
chats you expect at once (threads are cheap: the agent mostly waits on the network).
"""

from __future__ import annotations

import os
from typing import Any

from agent import DEFAULT_URL, run_agent
from celery import Celery

#: The task name: the ``taskIdentifier`` sessions for this agent are created with.
TASK = os.environ.get("AGENT_TASK", "chat-agent")

app = Celery("chat_agent", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))


@app.task(name=TASK)
def chat_agent(session: dict[str, Any], token: str, run_id: str = "", **launch: Any) -> int:
    """Run the agent for one launch (kwargs: ``run_id``, ``session``, ``payload``, ``token``, ``reason``)."""
    return run_agent(os.environ.get("SESSIONS_URL", DEFAULT_URL), token, session["id"])
