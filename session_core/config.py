"""Settings: the only code that reads the environment.

Each process builds one ``Settings`` (``Settings.from_env(os.environ)``) and passes it down; tests
build ``Settings(...)`` directly and never touch ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from session_core.logs import LOG_FORMATS, LogFormat

DEFAULT_DATABASE_URL = "sqlite:///sessions.db"
#: Connections a gevent worker keeps beyond its live reads, for appends and the control plane.
CONNECTION_HEADROOM = 1000
RUN_LAUNCHERS = ("record", "webhook", "celery")


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _int(environ: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{name} must be a non-negative number, got {raw!r}")
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise ConfigError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def normalize_database_url(url: str) -> str:
    """Accept the ``postgres://`` and ``postgresql://`` forms that hosting platforms hand out."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def _log_format(environ: Mapping[str, str]) -> LogFormat:
    raw = (environ.get("LOG_FORMAT") or "text").strip().lower()
    for log_format in LOG_FORMATS:
        if raw == log_format:
            return log_format
    raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {raw!r}")


@dataclass(frozen=True)
class ReplicationSettings:
    """The replicator's ``SESSION_REPLICATION_*`` settings (wire reference §9)."""

    slot_name: str = "sessions_to_clickhouse_v1"
    publication_name: str = "sessions_to_clickhouse_v1_publication"
    flush_batch_size: int = 100
    flush_interval_ms: int = 50
    max_flush_concurrency: int = 1
    insert_max_retries: int = 3
    insert_base_delay_ms: int = 100
    insert_max_delay_ms: int = 2000
    leader_lock_id: int = 7_340_021
    leader_retry_interval_ms: int = 500
    metrics_port: int = 9464
    # Loopback by default; set 0.0.0.0 where a Prometheus outside the host scrapes the worker.
    metrics_host: str = "127.0.0.1"
    # Rows held for ClickHouse (pending + in flight) before the worker stops reading the WAL.
    max_buffered_rows: int = 50_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ReplicationSettings:
        p = "SESSION_REPLICATION_"
        return cls(
            slot_name=environ.get(p + "SLOT_NAME") or cls.slot_name,
            publication_name=environ.get(p + "PUBLICATION_NAME") or cls.publication_name,
            flush_batch_size=_int(environ, p + "FLUSH_BATCH_SIZE", cls.flush_batch_size, 1),
            flush_interval_ms=_int(environ, p + "FLUSH_INTERVAL_MS", cls.flush_interval_ms, 1),
            max_flush_concurrency=_int(environ, p + "MAX_FLUSH_CONCURRENCY", cls.max_flush_concurrency, 1),
            insert_max_retries=_int(environ, p + "INSERT_MAX_RETRIES", cls.insert_max_retries, 0),
            insert_base_delay_ms=_int(environ, p + "INSERT_BASE_DELAY_MS", cls.insert_base_delay_ms, 1),
            insert_max_delay_ms=_int(environ, p + "INSERT_MAX_DELAY_MS", cls.insert_max_delay_ms, 1),
            leader_lock_id=_int(environ, p + "LEADER_LOCK_ID", cls.leader_lock_id, 1),
            leader_retry_interval_ms=_int(
                environ, p + "LEADER_RETRY_INTERVAL_MS", cls.leader_retry_interval_ms, 10
            ),
            metrics_port=_int(environ, p + "METRICS_PORT", cls.metrics_port, 0),
            metrics_host=environ.get(p + "METRICS_HOST") or cls.metrics_host,
            max_buffered_rows=_int(environ, p + "MAX_BUFFERED_ROWS", cls.max_buffered_rows, 1),
        )


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know, with defaults that work on a laptop."""

    database_url: str = DEFAULT_DATABASE_URL
    clickhouse_url: str | None = None
    port: int = 3030
    # Loopback by default: opening the service to a network is a decision (``--host 0.0.0.0``).
    host: str = "127.0.0.1"
    public_url: str | None = None
    log_level: str = "INFO"
    log_format: LogFormat = "text"
    # The web service's Prometheus endpoint: its own port (0: off), never the public one.
    metrics_port: int = 9465
    metrics_host: str = "127.0.0.1"
    # How long a web worker trusts an API key it looked up: the most a rotated-out key lives on.
    auth_cache_seconds: int = 5
    # Realtime: how long an SSE read may stay open, how often it pings, how much one read returns.
    sse_default_wait_seconds: int = 60
    sse_ping_interval_seconds: float = 15.0
    read_batch_limit: int = 1000
    part_id_ttl_seconds: int = 300
    max_append_bytes: int = 1024 * 1024
    # gunicorn: worker processes, and per worker its live reads (SSE) and connections. Live reads
    # past their limit are refused (503), so CONNECTION_HEADROOM connections stay for short requests.
    web_concurrency: int = 2
    max_live_reads: int = 10_000
    worker_connections: int = 10_000 + CONNECTION_HEADROOM
    graceful_timeout_seconds: int = 5
    keepalive_seconds: int = 5
    client_timeout_seconds: float = 30.0
    # PostgreSQL: PREPARE the channel append once per connection. Off behind a pooler that hands
    # a client's statements to whichever server connection is free (PgBouncer, transaction mode).
    pg_prepare: bool = True
    # Runs: how long a lease lasts without a heartbeat, and what starts a new run's agent.
    run_lease_seconds: int = 30
    run_launcher: str = "record"
    webhook_url: str | None = None
    webhook_secret: str | None = None
    celery_broker_url: str | None = None
    launch_timeout_seconds: int = 10
    # Durable Streams: how long a long-poll waits, and the environment served without credentials.
    ds_long_poll_ms: int = 20_000
    ds_public_environment: str | None = None
    replication: ReplicationSettings = field(default_factory=ReplicationSettings)

    @property
    def base_url(self) -> str:
        """The URL clients reach us at, used in headers that point back at this service."""
        return (self.public_url or f"http://127.0.0.1:{self.port}").rstrip("/")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from environment variables; a bad value raises ``ConfigError``."""
        max_live_reads = _int(environ, "SESSIONS_MAX_LIVE_READS", cls.max_live_reads, 1)
        connections = max_live_reads + CONNECTION_HEADROOM
        launcher, webhook_url, webhook_secret, broker = _launcher_settings(environ)
        return cls(
            database_url=normalize_database_url(environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL),
            clickhouse_url=environ.get("CLICKHOUSE_URL") or None,
            port=_int(environ, "PORT", 3030, 1),
            host=(environ.get("SESSIONS_HOST") or "").strip() or cls.host,
            public_url=environ.get("SESSIONS_PUBLIC_URL") or None,
            log_level=(environ.get("LOG_LEVEL") or "INFO").upper(),
            log_format=_log_format(environ),
            metrics_port=_int(environ, "SESSIONS_METRICS_PORT", 9465, 0),
            metrics_host=environ.get("SESSIONS_METRICS_HOST") or "127.0.0.1",
            auth_cache_seconds=_int(environ, "SESSIONS_AUTH_CACHE_SECONDS", 5, 0),
            sse_default_wait_seconds=_int(environ, "SESSIONS_SSE_WAIT_SECONDS", 60, 1),
            sse_ping_interval_seconds=float(_int(environ, "SESSIONS_SSE_PING_SECONDS", 15, 1)),
            web_concurrency=_int(environ, "WEB_CONCURRENCY", cls.web_concurrency, 1),
            max_live_reads=max_live_reads,
            worker_connections=_int(environ, "SESSIONS_WORKER_CONNECTIONS", connections, max_live_reads + 1),
            graceful_timeout_seconds=_int(environ, "SESSIONS_GRACEFUL_TIMEOUT", cls.graceful_timeout_seconds),
            keepalive_seconds=_int(environ, "SESSIONS_KEEPALIVE", cls.keepalive_seconds),
            client_timeout_seconds=_float(environ, "SESSIONS_CLIENT_TIMEOUT", cls.client_timeout_seconds),
            pg_prepare=_bool(environ, "SESSIONS_PG_PREPARE", True),
            run_lease_seconds=_int(environ, "SESSIONS_RUN_LEASE_SECONDS", 30, 1),
            run_launcher=launcher,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            celery_broker_url=broker,
            launch_timeout_seconds=_int(environ, "SESSIONS_LAUNCH_TIMEOUT_SECONDS", 10, 1),
            ds_long_poll_ms=_int(environ, "SESSIONS_DS_LONG_POLL_MS", 20_000, 1),
            ds_public_environment=environ.get("SESSIONS_DS_PUBLIC_ENVIRONMENT") or None,
            replication=ReplicationSettings.from_env(environ),
        )


def _launcher_settings(environ: Mapping[str, str]) -> tuple[str, str | None, str | None, str | None]:
    """``SESSIONS_RUN_LAUNCHER`` and what the chosen launcher needs, each checked by name."""
    launcher = (environ.get("SESSIONS_RUN_LAUNCHER") or "record").strip().lower()
    if launcher not in RUN_LAUNCHERS:
        raise ConfigError(
            f"SESSIONS_RUN_LAUNCHER must be one of {', '.join(RUN_LAUNCHERS)}, got {launcher!r}"
        )
    url = environ.get("SESSIONS_WEBHOOK_URL") or None
    secret = environ.get("SESSIONS_WEBHOOK_SECRET") or None
    broker = environ.get("CELERY_BROKER_URL") or None
    if launcher == "webhook":
        if not url or not url.startswith(("http://", "https://")):
            raise ConfigError(
                "SESSIONS_WEBHOOK_URL must be an http(s) URL when SESSIONS_RUN_LAUNCHER=webhook"
            )
        if not secret or not secret.startswith("whsec_"):
            raise ConfigError(
                "SESSIONS_WEBHOOK_SECRET must be a whsec_… secret when SESSIONS_RUN_LAUNCHER=webhook"
            )
    if launcher == "celery" and not broker:
        raise ConfigError("CELERY_BROKER_URL must be set when SESSIONS_RUN_LAUNCHER=celery")
    return launcher, url, secret, broker
