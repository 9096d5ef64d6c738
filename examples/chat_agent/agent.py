"""A scripted chat agent: it echoes each user message back in chunks, with no model and no network.

Run by ``webhook_receiver.py`` (one process per launch) or by ``celery_app.py`` (one task per
launch). On its own: ``SESSIONS_RUN_TOKEN=… python agent.py session_…``.

``ECHO_CHUNK_DELAY`` (seconds, default 0.05) paces the chunks; while the file named by
``ECHO_PAUSE_FILE`` exists, replies hold after their first chunk (to demonstrate, and test, an
agent killed in the middle of a turn).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from session_client import SessionsClient
from session_client.chat import ChatAgent, UserMessage

DEFAULT_URL = "http://127.0.0.1:3030"


def echo(message: UserMessage) -> Iterator[str]:
    """The reply to ``message``: "You said: <text>", a word at a time."""
    delay = float(os.environ.get("ECHO_CHUNK_DELAY", "0.05"))
    pause = os.environ.get("ECHO_PAUSE_FILE")
    for index, word in enumerate(f"You said: {message.text}".split(" ")):
        while index > 0 and pause and Path(pause).exists():
            time.sleep(0.05)
        yield word if index == 0 else " " + word
        time.sleep(delay)


def run_agent(base_url: str, token: str, session: str) -> int:
    """Answer ``session``'s chat until it closes; returns the turns answered."""
    with SessionsClient(base_url, token) as client:
        return ChatAgent(client, session, echo).run()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if len(sys.argv) != 2:
        sys.exit("usage: SESSIONS_RUN_TOKEN=… python agent.py <session id>")
    base_url = os.environ.get("SESSIONS_URL", DEFAULT_URL)
    turns = run_agent(base_url, os.environ["SESSIONS_RUN_TOKEN"], sys.argv[1])
    logging.info("session %s: answered %d turns", sys.argv[1], turns)


if __name__ == "__main__":
    main()
