"""Start and stop the servers under test, all on 127.0.0.1 and all stopped by the PID we started.

Our service and its PostgreSQL come from ``tests/servers.py`` (the same recipes the e2e tests use),
with one difference: the tests run PostgreSQL with ``fsync=off`` for speed, but a benchmark against
a server that ``fdatasync``s every append must be durable too, so `start_postgres` here starts the
cluster with ``fsync=on`` unless asked otherwise. The Durable Streams server is the npm package pinned
in ``tests/e2e/js/package.json``, started by ``ds_server.cjs`` with its file-backed store (``fdatasync``
per append) or its in-memory one (no data directory: the package's default).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests import servers as test_servers

REPO = Path(__file__).resolve().parent.parent
JS_DIR = REPO / "tests" / "e2e" / "js"
DS_LAUNCHER = Path(__file__).resolve().parent / "ds_server.cjs"


def ensure_node_modules() -> None:
    """Install the pinned npm packages (``npm ci``, from the lock file) if they are missing."""
    if (JS_DIR / "node_modules" / "@durable-streams" / "server" / "package.json").exists():
        return
    if shutil.which("npm") is None:
        raise RuntimeError("npm not found: install Node.js 20+ (apt-get install -y nodejs npm)")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=300)


def node_package_version(name: str) -> str:
    """The installed version of an npm package under tests/e2e/js (reported with the results)."""
    return json.loads((JS_DIR / "node_modules" / name / "package.json").read_text())["version"]


class DurableStreamsServer:
    """``@durable-streams/server`` in a node subprocess, on a free loopback port; `store` is
    ``file`` (a data directory under a temp dir) or ``memory``."""

    def __init__(self, store: str = "file") -> None:
        if store not in ("file", "memory"):
            raise ValueError(f"store must be file or memory, got {store!r}")
        self.store = store
        self.base = Path(tempfile.mkdtemp(prefix="bench-ds-"))
        self.port = test_servers.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> DurableStreamsServer:
        ensure_node_modules()
        data = str(self.base / "data") if self.store == "file" else "-"
        command = ["node", str(DS_LAUNCHER), str(JS_DIR), data, str(self.port)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            test_servers.wait_port(self.port, self.proc, timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 10 s, then delete the data directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres(fsync: bool = True) -> test_servers.PostgresServer:
    """A throwaway PostgreSQL cluster; with `fsync` (the default) commits are durable on disk."""
    if not fsync:
        return test_servers.start_postgres()
    bindir = test_servers.pg_bindir()
    if not (bindir / "initdb").exists():
        raise test_servers.MissingServerBinary(f"PostgreSQL ({bindir}/initdb)", (test_servers.PG_PACKAGE,))
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(base, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, log, port = base / "data", base / "server.log", test_servers.free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
    _run([*as_postgres, *initdb, "--locale=C.UTF-8"], base)
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c max_connections=300"
        " -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c shared_buffers=256MB"
    )
    pg_ctl = [
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(log),
        "-w",
        "-t",
        "60",
        "-o",
        options,
        "start",
    ]
    _run([*as_postgres, *pg_ctl], base)
    pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    server = test_servers.PostgresServer(bindir, base, port, pid)
    atexit.register(server.stop)  # stop() unregisters it again
    return server


def _run(command: list[str], base: Path) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise test_servers.ServerFailed(f"{' '.join(command)}: {done.returncode}\n{done.stdout}{done.stderr}")


def start_sessions(
    database_url: str, workers: int, env: dict[str, str] | None = None, slug: str = "bench"
) -> tuple[test_servers.LiveServer, str]:
    """Migrate, serve with `workers` gevent workers (`env` added to the server's environment), and
    create the environment `slug` with its key."""
    server = test_servers.LiveServer(database_url, workers=workers, env=env, ready_timeout=60)
    server.start()
    try:
        api_key = server.create_env(slug)["apiKey"]
    except BaseException:
        server.close()
        raise
    return server, api_key
