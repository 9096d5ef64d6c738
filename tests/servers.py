"""Start REAL PostgreSQL, ClickHouse and the web service as local processes for the tests.

Every server binds 127.0.0.1 only, on a free port, with its files in a private temp dir, and is
stopped by the PID it was started with. A missing server binary raises `MissingServerBinary`
carrying the exact apt-get command; the fixtures turn that into a failed run, never a skip
(DESIGN.md, "Tests and benchmarks"). Recipes and timings: shared docs infra.md sections 1a, 2, 5.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import closing
from pathlib import Path

import psycopg2
import psycopg2.errors

PG_PACKAGE = "postgresql-15"
PG_DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"
CLICKHOUSE_PACKAGES = ("clickhouse-server", "clickhouse-client")
VENV_BIN = Path(sys.executable).parent
# never route loopback health checks through an http_proxy from the environment
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MissingServerBinary(RuntimeError):
    """A server the tests need is not installed; the message holds the command that installs it."""

    def __init__(self, what: str, packages: tuple[str, ...]) -> None:
        command = "apt-get install -y --no-install-recommends " + " ".join(packages)
        super().__init__(f"{what} not found. Install it with:  {command}  (or run .ci/run, which does)")
        self.command = command


class ServerFailed(RuntimeError):
    """A server process exited or never became ready; the message ends with its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Block until 127.0.0.1:port accepts connections; fail early if `proc` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerFailed(f"process {proc.pid} exited with {proc.returncode} before port {port} opened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout:.0f} s")


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


def _stop_child(proc: subprocess.Popen, grace: float, group: bool = False) -> None:
    """SIGTERM our child by PID, SIGKILL it (and, with `group`, its process group) after `grace` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if group:
        _kill_group(proc.pid)


def _kill_group(pgid: int) -> None:
    """SIGKILL whatever is left of a process group that we created (start_new_session)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- PostgreSQL -----------------------------------------------------------------------------------


def pg_bindir() -> Path:
    """Locate PostgreSQL's server binaries: $PGBIN, `pg_config --bindir`, then Debian's PG 15 dir."""
    if os.environ.get("PGBIN"):
        return Path(os.environ["PGBIN"])
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    return Path(PG_DEFAULT_BINDIR)


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root ("cannot be run as root"): drop to the package's system user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PostgresServer:
    """A private PostgreSQL cluster with wal_level=logical; `url`/`dsn` point at database `postgres`."""

    def __init__(self, bindir: Path, base: Path, port: int, pid: int) -> None:
        self.bindir = bindir
        self.base = base
        self.port = port
        self.pid = pid
        self.dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        self.url = self.database_url("postgres")
        self.options = ""  # the server options `start_postgres` started it with, for `resume()`

    def database_url(self, name: str) -> str:
        """Return the SQLAlchemy URL of database `name` on this cluster."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def database_dsn(self, name: str) -> str:
        """Return the libpq DSN of database `name` (for psycopg2, replication connections)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={name}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (default name: unique `t_<hex>`) and return its name."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str, timeout: float = 10.0) -> None:
        """Drop `name`: terminate its sessions and drop its replication slots first (both block DROP)."""
        deadline = time.monotonic() + timeout
        while True:
            self._execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            try:
                self._execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    " WHERE database = %s",
                    (name,),
                )
                self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except psycopg2.errors.ObjectInUse:
                # a walsender takes ~0.1-0.3 s to release its slot after being terminated
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _execute(self, sql: str, params: tuple = ()) -> None:
        with closing(psycopg2.connect(self.dsn)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql, params)

    def pause(self) -> None:
        """Stop the server (fast shutdown) but keep its files, so `resume()` starts it again."""
        data = self.base / "data"
        _run_or_fail(
            _as_postgres_user([str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            self.base / "server.log",
        )

    def resume(self) -> None:
        """Start a `pause()`d server again on the same port and files."""
        data = self.base / "data"
        pg_ctl = [
            str(self.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-t",
            "60",
        ]
        _run_or_fail(_as_postgres_user([*pg_ctl, "-o", self.options, "start"]), self.base / "server.log")
        self.pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop(self) -> None:
        """Stop the cluster immediately (pg_ctl signals the postmaster PID) and delete its files."""
        atexit.unregister(self.stop)
        data = self.base / "data"
        if (data / "postmaster.pid").exists():
            pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            stopped = subprocess.run(_as_postgres_user(pg_ctl), capture_output=True)
            if stopped.returncode != 0:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb a throwaway cluster and start it on a free port (about 0.7 s)."""
    bindir = pg_bindir()
    if not (bindir / "initdb").exists():
        raise MissingServerBinary(f"PostgreSQL server binaries ({bindir}/initdb)", (PG_PACKAGE,))
    # Not under pytest's tmp dirs: those are 0700 root and the postgres user must reach the data dir.
    base = Path(tempfile.mkdtemp(prefix="sessions-pg-"))
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(base, user.pw_uid, user.pw_gid)
        data, log, port = base / "data", base / "server.log", free_port()
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        initdb += ["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
        _run_or_fail(_as_postgres_user(initdb), log)
        options = " ".join(
            [
                f"-c listen_addresses=127.0.0.1 -p {port} -k {base}",
                "-c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20",
                # fsync off is enough for speed; synchronous_commit stays on (infra.md pitfall 7)
                "-c fsync=off -c full_page_writes=off -c max_connections=300",
            ]
        )
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60"]
        _run_or_fail(_as_postgres_user([*pg_ctl, "-o", options, "start"]), log)
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    server = PostgresServer(bindir, base, port, pid)
    server.options = options
    atexit.register(server.stop)
    return server


def _run_or_fail(cmd: list[str], log: Path) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ServerFailed(
            f"{' '.join(cmd)} exited with {done.returncode}\n{done.stdout}{done.stderr}\n{_log_tail(log)}"
        )


# --- ClickHouse -----------------------------------------------------------------------------------

_CLICKHOUSE_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog></logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{port}</tcp_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/data/tmp/</tmp_path>
    <mark_cache_size>268435456</mark_cache_size>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <timezone>UTC</timezone>
</yandex>
"""

# The setting lives in the server profile, never in app SQL: modern ClickHouse rejects its name.
_CLICKHOUSE_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default>
        <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
    </default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <quotas><default></default></quotas>
</yandex>
"""


class ClickHouseServer:
    """A private ClickHouse server speaking the native protocol on `port` (clickhouse-driver)."""

    def __init__(self, base: Path, port: int, proc: subprocess.Popen) -> None:
        self.base = base
        self.port = port
        self.proc = proc
        self.pid = proc.pid
        self.url = f"clickhouse://default@127.0.0.1:{port}/default"

    def stop(self) -> None:
        """SIGTERM the server by PID (SIGKILL after 15 s) and delete its files."""
        atexit.unregister(self.stop)
        _stop_child(self.proc, grace=15)
        shutil.rmtree(self.base, ignore_errors=True)


def start_clickhouse() -> ClickHouseServer:
    """Start Debian's clickhouse-server (18.16) with a minimal private config (about 0.2 s)."""
    # /usr/sbin is where Debian puts it, and often not on a non-root PATH
    binary = shutil.which("clickhouse-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if binary is None:
        raise MissingServerBinary("clickhouse-server", CLICKHOUSE_PACKAGES)
    base = Path(tempfile.mkdtemp(prefix="sessions-ch-"))
    port = free_port()
    (base / "config.xml").write_text(_CLICKHOUSE_CONFIG.format(d=base, port=port))
    (base / "users.xml").write_text(_CLICKHOUSE_USERS)
    with open(base / "stdout.log", "wb") as out:
        proc = subprocess.Popen([binary, f"--config-file={base}/config.xml"], stdout=out, stderr=out)
    server = ClickHouseServer(base, port, proc)
    try:
        wait_port(port, proc)
    except BaseException as exc:
        log = _log_tail(base / "stdout.log") + _log_tail(base / "server.err.log")
        server.stop()
        if isinstance(exc, Exception):
            raise ServerFailed(f"clickhouse-server did not start: {exc}\n{log}") from exc
        raise
    atexit.register(server.stop)
    return server


# --- Redis ----------------------------------------------------------------------------------------

REDIS_PACKAGE = "redis-server"


class RedisServer:
    """A private redis-server (no persistence) on a free loopback port; ``url`` is its database 0."""

    def __init__(self, base: Path, port: int, proc: subprocess.Popen) -> None:
        self.base = base
        self.port = port
        self.proc = proc
        self.pid = proc.pid
        self.url = f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        """SIGTERM the server by PID (SIGKILL after 5 s) and delete its files."""
        atexit.unregister(self.stop)
        _stop_child(self.proc, grace=5)
        shutil.rmtree(self.base, ignore_errors=True)


def start_redis() -> RedisServer:
    """Start Debian's redis-server bound to 127.0.0.1, without snapshots or an append-only file."""
    binary = shutil.which("redis-server", path=f"{os.environ.get('PATH', '')}:/usr/bin:/usr/sbin")
    if binary is None:
        raise MissingServerBinary("redis-server", (REDIS_PACKAGE,))
    base = Path(tempfile.mkdtemp(prefix="sessions-redis-"))
    port = free_port()
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    command += ["--dir", str(base), "--protected-mode", "yes"]
    with open(base / "server.log", "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out)
    server = RedisServer(base, port, proc)
    try:
        wait_port(port, proc)
    except BaseException as exc:
        log = _log_tail(base / "server.log")
        server.stop()
        if isinstance(exc, Exception):
            raise ServerFailed(f"redis-server did not start: {exc}\n{log}") from exc
        raise
    atexit.register(server.stop)
    return server


# --- the web service ------------------------------------------------------------------------------


class LiveServer:
    """The `sessions` web service (gunicorn) in a subprocess, for e2e tests.

    `start()` runs `sessions migrate`, then `sessions serve`, and waits for GET /healthz == 200.
    The port is fixed at construction, so a test can `kill()` the service and `start()` it again
    behind the same `base_url`. Also a context manager (start on enter, stop on exit).
    """

    def __init__(
        self,
        database_url: str,
        *,
        clickhouse_url: str | None = None,
        workers: int = 1,
        port: int | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
        host: str | None = "127.0.0.1",
        url_host: str = "127.0.0.1",
    ) -> None:
        """``host`` is passed as ``--host`` (None: none, so the service picks); ``url_host`` is
        where ``base_url`` reaches it."""
        self.port = port or free_port()
        self.host = host
        self.base_url = f"http://{url_host}:{self.port}"
        self.workers = workers
        self.ready_timeout = ready_timeout
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CLICKHOUSE_URL")}
        # Metrics off unless a test asks for them: parallel servers would contend for the default port.
        self.env["SESSIONS_METRICS_PORT"] = "0"
        self.env.update(env or {})
        self.env["DATABASE_URL"] = database_url
        if clickhouse_url:
            self.env["CLICKHOUSE_URL"] = clickhouse_url
        self.log_dir = Path(tempfile.mkdtemp(prefix="sessions-web-"))
        self.log_path = self.log_dir / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `sessions ARGS...` with this server's environment; raise with its output on failure."""
        command = [str(_sessions_executable()), *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise ServerFailed(
                f"sessions {' '.join(args)} exited with {done.returncode}\n{done.stdout}{done.stderr}"
            )
        return done

    def create_env(self, slug: str, env_type: str | None = None) -> dict:
        """Create an environment through the CLI; return its `{"id", "slug", "type", "apiKey"}`."""
        args = ["env", "create", "--slug", slug, "--json"]
        if env_type:
            args += ["--type", env_type]
        return json.loads(self.cli(*args).stdout)

    def start(self) -> LiveServer:
        """Migrate, start the service and wait (bounded) until /healthz answers 200."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"already running as PID {self.proc.pid}")
        self.cli("migrate")
        serve = ["serve", "--port", str(self.port), "--workers", str(self.workers)]
        if self.host is not None:
            serve += ["--host", self.host]
        with open(self.log_path, "ab") as log:
            # own session: pgid == pid, so kill() can also take down the workers that gunicorn forks
            self.proc = subprocess.Popen(
                [str(_sessions_executable()), *serve],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(
                    f"sessions serve exited with {self.proc.returncode}\n{_log_tail(self.log_path)}"
                )
            try:
                with _HTTP.open(self.base_url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                exc.close()
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ServerFailed(
            f"GET /healthz not 200 within {self.ready_timeout:.0f} s ({last})\n{_log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM the service by PID, SIGKILL it after 10 s; leftover workers are killed too."""
        atexit.unregister(self.stop)
        if self.proc is not None:
            _stop_child(self.proc, grace=10, group=True)

    def kill(self) -> None:
        """SIGKILL the service and its workers at once, like a crash (no graceful shutdown)."""
        atexit.unregister(self.stop)
        if self.proc is not None:
            _kill_group(self.proc.pid)
            self.proc.wait()

    def close(self) -> None:
        """Stop the service and delete its log dir."""
        self.stop()
        shutil.rmtree(self.log_dir, ignore_errors=True)

    def log(self) -> str:
        """Return the tail of the service's combined stdout/stderr."""
        return _log_tail(self.log_path)

    def __enter__(self) -> LiveServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _sessions_executable() -> Path:
    path = VENV_BIN / "sessions"
    if not path.exists():
        raise ServerFailed(f"{path} not found: install the project into this venv:  pip install -e '.[test]'")
    return path
