"""Insert row batches into ``sessions_v1``: exponential backoff with jitter, permanent errors at once.

A batch either lands or raises. ``TransientInsertError`` means "try again later" (the caller keeps
the rows and does not acknowledge their LSN); ``PermanentInsertError`` means retrying cannot help
(bad credentials, missing table, rows ClickHouse will never accept), so the replicator stops.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError
from clickhouse_driver.errors import ServerException

from session_core.replication.metrics import ReplicationMetrics
from session_core.replication.rows import COLUMNS
from session_core.replication.target import ClickHouseTarget

__all__ = [
    "ClickHouseSink",
    "InsertError",
    "PermanentInsertError",
    "TransientInsertError",
    "backoff_delay",
    "describe_error",
    "is_permanent",
]

logger = logging.getLogger(__name__)

# Trigger.dev's list (wire reference §9), matched case-insensitively in the error text.
PERMANENT_MESSAGES = (
    "authentication failed",
    "permission denied",
    "invalid credentials",
    "table not found",
    "database not found",
    "column not found",
    "schema mismatch",
    "invalid query",
    "syntax error",
    "type error",
    "constraint violation",
    "duplicate key",
    "foreign key violation",
)
# The same failures as ClickHouse reports them: THERE_IS_NO_COLUMN, NO_SUCH_COLUMN_IN_TABLE,
# UNKNOWN_IDENTIFIER, TYPE_MISMATCH, UNKNOWN_TABLE, SYNTAX_ERROR, UNKNOWN_DATABASE, READONLY,
# UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD, DATABASE_ACCESS_DENIED, ACCESS_DENIED,
# AUTHENTICATION_FAILED.
PERMANENT_CODES = frozenset({8, 16, 47, 53, 60, 62, 81, 164, 192, 193, 194, 291, 497, 516})


class InsertError(Exception):
    """A batch did not reach ClickHouse."""


class TransientInsertError(InsertError):
    """Every attempt failed for a reason that may pass (network, server restarting, overload)."""


class PermanentInsertError(InsertError):
    """ClickHouse refused the batch for a reason no retry fixes."""


def is_permanent(exc: BaseException) -> bool:
    """Classify a failed insert: only network and server-side transient failures are retried."""
    text = str(exc).lower()
    if any(fragment in text for fragment in PERMANENT_MESSAGES):
        return True
    if isinstance(exc, ServerException):
        return exc.code in PERMANENT_CODES
    # Client-side serialisation errors (TypeError, struct.error, ...) fail the same way every time.
    return not isinstance(exc, ClickHouseError | OSError | EOFError)


def describe_error(exc: BaseException) -> str:
    """One line for logs: the error class and the first line of its message, no stack trace."""
    if isinstance(exc, ServerException):
        message = (exc.message or "").strip().splitlines()
        first = message[0] if message else ""
        return f"ClickHouse code {exc.code}: {first.split('. Stack trace')[0]}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def backoff_delay(attempt: int, base_ms: int, max_ms: int, jitter: float) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): ``min(base·2^(n-1), max) + jitter·base``."""
    return (min(base_ms << (attempt - 1), max_ms) + jitter * base_ms) / 1000


class ClickHouseSink:
    """Writes batches to ``sessions_v1``; safe to call from several threads (one client each)."""

    def __init__(
        self,
        target: ClickHouseTarget,
        metrics: ReplicationMetrics,
        *,
        max_retries: int,
        base_delay_ms: int,
        max_delay_ms: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._target = target
        self._metrics = metrics
        self._max_retries = max_retries
        self._base_delay_ms = base_delay_ms
        self._max_delay_ms = max_delay_ms
        self._sleep = sleep
        self._local = threading.local()
        self._clients: set[Client] = set()
        self._clients_lock = threading.Lock()
        self._statement = f"INSERT INTO {target.table} ({', '.join(COLUMNS)}) VALUES"

    def insert(self, rows: Sequence[Mapping[str, object]]) -> None:
        """Insert ``rows`` in one statement, retrying up to ``max_retries`` times.

        :raise PermanentInsertError: at the first non-retryable failure.
        :raise TransientInsertError: when every attempt failed.
        """
        attempt = 1
        while True:
            try:
                self._client().execute(self._statement, list(rows))
                return
            except Exception as exc:
                self._reset_client()
                reason = describe_error(exc)
                if is_permanent(exc):
                    raise PermanentInsertError(reason) from exc
                if attempt > self._max_retries:
                    raise TransientInsertError(reason) from exc
                delay = backoff_delay(attempt, self._base_delay_ms, self._max_delay_ms, random.random())
                logger.warning(
                    "clickhouse insert retry attempt=%d rows=%d delay_ms=%d error=%s",
                    attempt,
                    len(rows),
                    delay * 1000,
                    reason,
                )
                self._metrics.insert_retries.labels(operation="sessions").inc()
                self._sleep(delay)
                attempt += 1

    def close(self) -> None:
        """Disconnect every thread's client; call once no insert is running."""
        with self._clients_lock:
            clients, self._clients = self._clients, set()
        for client in clients:
            client.disconnect()

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._target.connect()
            self._local.client = client
            with self._clients_lock:
                self._clients.add(client)
        return client

    def _reset_client(self) -> None:
        client: Client | None = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._clients_lock:
                self._clients.discard(client)
            client.disconnect()
