"""The example chat agent (``examples/chat_agent``), launched by the webhook launcher, end to end.

A live server on PostgreSQL launches runs by signed webhook to the example's receiver, which starts
one agent process per run. The lifecycle test kills an agent in the middle of a turn and shows the
next run answering what was left unanswered, once; the SDK test has ``@trigger.dev/sdk``'s
``AgentChat`` and ``TriggerChatTransport`` converse with the same agent.

Nothing is timed: waits are bounded loops on what the test observes.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from session_client import Record, SessionsClient
from session_client.chat import SESSION_IN_EVENT_ID, TURN_COMPLETE, close_chunk, message_chunk

from tests.servers import LiveServer, free_port, wait_port

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "chat_agent"
JS = Path(__file__).parent / "js"
TASK = "chat-agent"
#: Short enough that a killed agent's run lapses soon, long enough for a new agent process to
#: start and heartbeat on a busy machine; heartbeats come every third of it.
LEASE_SECONDS = 10


class Receiver:
    """The example's webhook receiver in its own process group (its agents too), with the launches
    it printed."""

    def __init__(self, port: int, base_url: str, secret: str, pause_file: Path) -> None:
        env = {
            **os.environ,
            "SESSIONS_WEBHOOK_SECRET": secret,
            "SESSIONS_URL": base_url,
            "ECHO_PAUSE_FILE": str(pause_file),
            "ECHO_CHUNK_DELAY": "0.01",
        }
        command = [sys.executable, str(EXAMPLE / "webhook_receiver.py"), "--port", str(port)]
        self.proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=EXAMPLE
        )
        self.launches: list[dict] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_port(port, self.proc)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if event.get("event") == "launched":
                self.launches.append(event)

    def launches_of(self, session: str) -> list[dict]:
        return [launch for launch in self.launches if launch["session"] == session]

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the receiver and every agent it started
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def stack(postgres, tmp_path_factory) -> Iterator[dict]:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    receiver_port = free_port()
    env = {
        "SESSIONS_SSE_PING_SECONDS": "1",
        "SESSIONS_RUN_LAUNCHER": "webhook",
        "SESSIONS_WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}/",
        "SESSIONS_WEBHOOK_SECRET": secret,
        "SESSIONS_RUN_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    pause = tmp_path_factory.mktemp("chat") / "pause"
    with LiveServer(postgres.database_url(postgres.create_database()), workers=2, env=env) as server:
        receiver = Receiver(receiver_port, server.base_url, secret, pause)
        try:
            key = server.create_env(f"chat-{uuid.uuid4().hex[:8]}")["apiKey"]
            yield {"server": server, "receiver": receiver, "key": key, "pause": pause}
        finally:
            receiver.stop()


def wait_until(condition: Callable[[], object], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class Follower:
    """Follows one channel live in a thread, keeping every record, until the session-closed marker.

    It has a client of its own, and keeps what ends it early (``error``) for the test to report.
    """

    def __init__(self, client: SessionsClient, session: str, io: str) -> None:
        self.records: list[Record] = []
        self.error: BaseException | None = None
        args = (client.base_url, client.token, session, io)
        self.thread = threading.Thread(target=self._follow, args=args, daemon=True)
        self.thread.start()

    def _follow(self, base_url: str, token: str, session: str, io: str) -> None:
        try:
            with SessionsClient(base_url, token) as client:
                for record in client.channel(session, io).subscribe():  # type: ignore[arg-type]
                    self.records.append(record)
        except BaseException as error:  # reported by the test, not as an unhandled thread error
            self.error = error

    def turn_completes(self) -> list[int]:
        """The ``.in`` seq_num each turn-complete seen so far answered."""
        return [int(r.header(SESSION_IN_EVENT_ID) or -1) for r in self.records if r.control == TURN_COMPLETE]

    def replies(self) -> list[str]:
        """The text of each assistant message that finished (its ``finish`` chunk came)."""
        replies, text = [], None
        for record in self.records:
            chunk = record.data if isinstance(record.data, dict) else {}
            if chunk.get("type") == "start":
                text = ""
            elif chunk.get("type") == "text-delta" and text is not None:
                text += chunk["delta"]
            elif chunk.get("type") == "finish" and text is not None:
                replies.append(text)
                text = None
        return replies


def test_an_agent_killed_mid_turn_is_replaced_and_answers_each_message_once(stack):
    receiver, pause = stack["receiver"], stack["pause"]
    chat = f"chat-{uuid.uuid4().hex[:8]}"
    with SessionsClient(stack["server"].base_url, stack["key"]) as client:
        created = client.sessions.create(
            type="chat.agent",
            external_id=chat,
            task_identifier=TASK,
            trigger_config={"basePayload": {"chatId": chat}},
        )
        followers = [Follower(client, created.id, "out"), Follower(client, created.id, "in")]
        out, inbox = followers[0], followers[1]
        user = client.channel(created.id, "in")
        wait_until(lambda: receiver.launches_of(created.id), "the first launch")

        first = user.append(message_chunk("one", chat))
        wait_until(lambda: first in out.turn_completes(), "the answer to one")
        second = user.append(message_chunk("two", chat))
        wait_until(lambda: second in out.turn_completes(), "the answer to two")

        pause.touch()  # the agent holds its next reply after the first chunk
        third = user.append(message_chunk("three", chat))
        wait_until(lambda: len(out.records) > 0 and out.records[-1].data == _delta("You"), "the third turn")
        os.kill(receiver.launches_of(created.id)[0]["pid"], signal.SIGKILL)
        pause.unlink()
        wait_until(lambda: client.runs.retrieve(created.run_id).status == "EXPIRED", "the lease to lapse")

        fourth = user.append(message_chunk("four", chat))
        wait_until(lambda: fourth in out.turn_completes(), "the new run's answers")
        client.sessions.close(created.id, reason="done")
        for follower in followers:
            follower.thread.join(60)
        launches = receiver.launches_of(created.id)
        runs = client.runs.list(created.id)
        wait_until(
            lambda: client.runs.retrieve(launches[1]["runId"]).status == "COMPLETED", "the new run to end"
        )

    assert [launch["reason"] for launch in launches] == ["initial", "continuation"]
    assert launches[0]["runId"] == created.run_id
    assert [(run.id, run.status) for run in runs][1:] == [(created.run_id, "EXPIRED")]
    assert out.turn_completes() == [first, second, third, fourth]
    assert out.replies() == [f"You said: {word}" for word in ("one", "two", "three", "four")]
    assert all(not follower.thread.is_alive() and follower.error is None for follower in followers)
    assert out.records[-1].is_session_closed and inbox.records[-1].is_session_closed
    assert out.records[-1].header("session-closed-reason") == "done"


def _delta(text: str) -> dict:
    return {"type": "text-delta", "id": "text-0", "delta": text}


def test_a_close_message_ends_the_run_and_a_later_message_starts_another(stack):
    receiver = stack["receiver"]
    chat = f"chat-{uuid.uuid4().hex[:8]}"
    with SessionsClient(stack["server"].base_url, stack["key"]) as client:
        created = client.sessions.create(type="chat.agent", external_id=chat, task_identifier=TASK)
        user = client.channel(chat, "in")
        out = Follower(client, created.id, "out")
        first = user.append(message_chunk("hi", chat))
        wait_until(lambda: first in out.turn_completes(), "the first answer")
        user.append(close_chunk(chat))
        wait_until(lambda: client.runs.retrieve(created.run_id).status == "COMPLETED", "the run to complete")
        later = user.append(message_chunk("back again", chat))
        wait_until(lambda: later in out.turn_completes(), "the answer from a new run")
        client.sessions.close(chat)
        out.thread.join(60)
        first_run = client.runs.retrieve(created.run_id)

    assert [launch["reason"] for launch in receiver.launches_of(created.id)] == ["initial", "continuation"]
    assert first_run.output == {"turns": 1}
    assert out.replies() == ["You said: hi", "You said: back again"]
    assert not out.thread.is_alive() and out.error is None


def test_the_sdk_chat_clients_converse_with_the_python_agent(stack):
    if shutil.which("node") is None or not (JS / "node_modules" / "@trigger.dev" / "sdk").is_dir():
        pytest.fail(
            "the published clients are missing: install Node 20+ and run  npm ci --prefix tests/e2e/js"
        )
    server = stack["server"]
    tag = uuid.uuid4().hex[:8]

    done = subprocess.run(
        ["node", "chat_clients.mjs", server.base_url, stack["key"], TASK, tag],
        cwd=JS, capture_output=True, text=True, timeout=240,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr + done.stdout + server.log()
    seen = json.loads(done.stdout)
    assert seen["agentChat"]["turns"] == ["You said: hello agent", "You said: and again"]
    assert seen["agentChat"]["reconnect"] == {"types": [], "text": ""}
    assert seen["agentChat"]["closed"] is True
    assert seen["publicToken"] == {"parts": 3}
    turns = seen["transport"]["turns"]
    assert [turn["text"] for turn in turns] == ["You said: first words", "You said: second words"]
    assert turns[0]["types"] == ["start", "text-start"] + ["text-delta"] * 4 + ["text-end", "finish"]
    assert seen["transport"]["reconnect"] == {"types": [], "text": ""}
    assert seen["transport"]["closedReason"] == "bye"
    assert "closed" in seen["transport"]["afterClose"]
    with SessionsClient(server.base_url, stack["key"]) as client:
        agent_chat = client.sessions.retrieve(seen["agentChat"]["chatId"])
        wait_until(
            lambda: client.runs.retrieve(agent_chat.current_run_id).status == "COMPLETED", "close to end"
        )


def test_the_example_agent_runs_as_a_celery_task(postgres, redis_server, tmp_path):
    """The celery launcher sends the run to the example's Celery app, whose worker answers."""
    env = {"SESSIONS_RUN_LAUNCHER": "celery", "CELERY_BROKER_URL": redis_server.url}
    with LiveServer(postgres.database_url(postgres.create_database()), env=env) as server:
        worker_env = {**os.environ, "CELERY_BROKER_URL": redis_server.url, "SESSIONS_URL": server.base_url}
        command = [str(Path(sys.executable).parent / "celery"), "-A", "celery_app", "worker"]
        command += ["-P", "threads", "-c", "2", "--without-heartbeat", "--without-gossip", "--without-mingle"]
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                command,
                cwd=EXAMPLE,
                env=worker_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            key = server.create_env("celery")["apiKey"]
            with SessionsClient(server.base_url, key) as client:
                created = client.sessions.create(type="chat.agent", task_identifier=TASK)
                out = Follower(client, created.id, "out")
                asked = client.channel(created.id, "in").append(message_chunk("over celery", created.id))
                wait_until(lambda: asked in out.turn_completes(), "the worker's answer")
                client.sessions.close(created.id)
                out.thread.join(60)
                wait_until(
                    lambda: client.runs.retrieve(created.run_id).status == "COMPLETED", "the task to end"
                )
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    assert out.replies() == ["You said: over celery"]
    assert not out.thread.is_alive() and out.error is None
