"""The README's quick start works as written: its run command serves, and its key creates a session.

The command is read from README.md and run in an empty directory with no DATABASE_URL, as a new user
would after installing; only `--host 127.0.0.1 --port P` are added, so the test binds loopback on a
free port. The installed `sessions` script is the one in this test run's venv.
"""

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.servers import VENV_BIN, free_port

README = Path(__file__).parents[2] / "README.md"
KEY_LINE = re.compile(r"^secret API key \(shown once\): (tr_\S+)$", re.MULTILINE)
START_TIMEOUT = 30.0


def _quick_start() -> str:
    text = README.read_text()
    return text[text.index("## Quick start") : text.index("\n## ", text.index("## Quick start") + 1)]


def readme_serve_args() -> list[str]:
    """The arguments the README's run command gives `sessions` (`serve` and whatever follows it)."""
    match = re.search(r"\.venv/bin/sessions (serve[^\n&|;]*)", _quick_start())
    assert match, "README's quick start has no `.venv/bin/sessions serve` command"
    return shlex.split(match.group(1))


def readme_create_body() -> dict:
    """The JSON body of the README's first `curl` create."""
    match = re.search(r"-d '(\{.*?\})'", _quick_start(), re.DOTALL)
    assert match, "README's quick start has no `curl … -d '{…}'` create"
    return json.loads(match.group(1))


class ReadmeServer:
    """`sessions serve` as the README runs it, in `workdir`, stopped by its PID (and process group)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.output = workdir / f"serve-{self.port}.log"
        self.http = requests.Session()
        self.http.trust_env = False  # loopback must never go through a proxy from the environment
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CLICKHOUSE_URL", "PORT")}
        command = [str(VENV_BIN / "sessions"), *readme_serve_args(), "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"sessions serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.http.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow on a loaded machine
                pass
            time.sleep(0.1)
        pytest.fail(f"sessions serve did not answer /healthz within {START_TIMEOUT:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def printed_keys(self) -> list[str]:
        return KEY_LINE.findall(self.log())

    def stop(self) -> None:
        """SIGTERM the server by PID; SIGKILL it after 10 s, then whatever is left of its group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: pgid == pid
        except ProcessLookupError:
            pass
        self.http.close()

    def create(self, key: str) -> requests.Response:
        return self.http.post(
            f"{self.base_url}/api/v1/sessions",
            json=readme_create_body(),
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )


@pytest.fixture
def start_readme_server(tmp_path) -> Iterator:
    """Factory: start the README's run command in one fresh empty directory; all stopped after."""
    started: list[ReadmeServer] = []

    def start() -> ReadmeServer:
        server = ReadmeServer(tmp_path)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


def test_the_readme_run_command_serves_and_its_printed_key_creates_a_session(start_readme_server, tmp_path):
    server = start_readme_server()
    keys = server.printed_keys()
    assert len(keys) == 1, server.log()

    created = server.create(keys[0])

    assert (tmp_path / "sessions.db").is_file()
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["externalId"] == readme_create_body()["externalId"]
    assert body["isCached"] is False
    assert body["runId"].startswith("run_")


def test_a_second_start_prints_no_new_key_and_the_first_key_still_works(start_readme_server):
    first = start_readme_server()
    key = first.printed_keys()[0]
    first.stop()

    second = start_readme_server()
    created = second.create(key)

    assert second.printed_keys() == []
    assert created.status_code == 201, created.text
