"""`sessions serve` on a developer's machine: loopback only unless told otherwise, private files.

Linux routes all of 127.0.0.0/8 to loopback, so 127.0.0.2 tells "listens on 127.0.0.1" apart from
"listens on every interface" without a second network interface.
"""

import os
import socket
import stat

import requests

from tests.servers import LiveServer


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def test_serve_listens_on_loopback_by_default_with_private_database_files(tmp_path):
    path = tmp_path / "sessions.db"
    previous = os.umask(0o022)  # the usual umask (the server inherits it): SQLite alone makes 0644 files
    try:
        modes = _serve_and_write(path)
    finally:
        os.umask(previous)
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}


def _serve_and_write(path) -> dict[str, int]:
    """Serve ``path`` without ``--host``, check where it listens, write, and return the files' modes."""
    with LiveServer(f"sqlite:///{path}", host=None) as server:
        key = server.create_env("dev2")["apiKey"]
        created = requests.post(
            f"{server.base_url}/api/v1/sessions",
            json={"type": "chat.agent", "taskIdentifier": "agent", "triggerConfig": {"basePayload": {}}},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert created.status_code in (200, 201), created.text
        assert _accepts("127.0.0.1", server.port)
        assert not _accepts("127.0.0.2", server.port)
        return {s: stat.S_IMODE(os.stat(f"{path}{s}").st_mode) for s in ("", "-wal", "-shm")}


def test_serve_honours_sessions_host(tmp_path):
    env = {"SESSIONS_HOST": "127.0.0.2"}
    with LiveServer(f"sqlite:///{tmp_path}/sessions.db", host=None, url_host="127.0.0.2", env=env) as server:
        assert requests.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
        assert not _accepts("127.0.0.1", server.port)
