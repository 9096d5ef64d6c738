"""The replication worker: PostgreSQL ``sessions`` changes into ClickHouse ``sessions_v1``.

One process per deployment does the work; any others wait as standbys on a PostgreSQL advisory
lock and take over within a poll interval when the leader's connection goes away. The leader
streams pgoutput from its slot, hands committed transactions to the flush scheduler and
acknowledges an LSN only once ClickHouse holds every row up to it, so a crash at any point loses
nothing: the slot replays from the last acknowledged LSN and ReplacingMergeTree folds duplicates.

This process never loads gevent or psycogreen: psycopg2's replication API refuses to run under them.
"""

from __future__ import annotations

import logging
import os
import select
import time

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from replicator.backfill import backfill
from replicator.postgres import (
    SetupError,
    check_replica_identity,
    check_wal_level,
    confirmed_flush_lsn,
    connect,
    connect_replication,
    create_slot,
    ensure_publication,
    is_backfill_pending,
    libpq_dsn,
    mark_backfill,
    slot_exists,
    try_lock,
)
from replicator.wakeup import Wakeup
from session_core.config import ConfigError, ReplicationSettings, Settings
from session_core.logs import configure_logging
from session_core.replication.changes import ChangeAssembler
from session_core.replication.ddl import SchemaMismatch, ensure_schema
from session_core.replication.decode import DecodeError, format_lsn
from session_core.replication.metrics import ReplicationMetrics
from session_core.replication.scheduler import FlushScheduler
from session_core.replication.sink import (
    ClickHouseSink,
    PermanentInsertError,
    backoff_delay,
    describe_error,
    is_permanent,
)
from session_core.replication.target import ClickHouseTarget, parse_clickhouse_url

logger = logging.getLogger(__name__)

EXIT_SETUP = 2
EXIT_CLICKHOUSE_REFUSED = 3
EXIT_BAD_STREAM = 4
SHUTDOWN_FLUSH_SECONDS = 10.0
_MAX_IDLE_WAIT = 1.0
_RECONNECT_MAX_SECONDS = 5.0


def main() -> int:
    """Entry point of ``python -m replicator`` and ``sessions replicate``; returns the exit status."""
    configure_logging()
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        logger.error("replicator not started: %s", exc)
        return EXIT_SETUP
    configure_logging(settings.log_level, settings.log_format)
    # It logs every failed connect with a traceback; our own retry line already says it in one.
    logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)
    wakeup = Wakeup()
    wakeup.install_signal_handlers()
    return Replicator(settings, wakeup).run()


class Replicator:
    def __init__(self, settings: Settings, wakeup: Wakeup) -> None:
        self._settings = settings
        self._config: ReplicationSettings = settings.replication
        self._wakeup = wakeup
        self._metrics = ReplicationMetrics()
        self._pg_failures = 0

    def run(self) -> int:
        """Lead (or wait to lead) until asked to stop; reconnect after PostgreSQL connection loss."""
        try:
            dsn, target = self._targets()
            self._serve_metrics()
            while not self._wakeup.stopping:
                try:
                    self._lead(dsn, target)
                    return 0
                except psycopg2.Error as exc:
                    if not _is_connection_loss(exc):
                        raise
                    self._pg_failures += 1
                    delay = min(0.25 * 2**self._pg_failures, _RECONNECT_MAX_SECONDS)
                    logger.warning(
                        "postgres unavailable attempt=%d retry_in_ms=%d error=%s",
                        self._pg_failures,
                        delay * 1000,
                        _first_line(exc),
                    )
                    self._wakeup.wait(delay)
            return 0
        except SetupError as exc:
            logger.error("replicator cannot start: %s", exc)
            return EXIT_SETUP
        except PermanentInsertError as exc:
            logger.error("clickhouse refused a batch; stopping without acknowledging it: %s", exc)
            return EXIT_CLICKHOUSE_REFUSED
        except DecodeError as exc:
            logger.error("cannot replicate the change stream; stopping without acknowledging it: %s", exc)
            return EXIT_BAD_STREAM
        except psycopg2.Error as exc:
            logger.error("replicator stopped by a postgres error: %s", _first_line(exc))
            return EXIT_SETUP

    def _targets(self) -> tuple[str, ClickHouseTarget]:
        if not self._settings.clickhouse_url:
            raise SetupError("CLICKHOUSE_URL is not set: the replicator has nowhere to write")
        try:
            target = parse_clickhouse_url(self._settings.clickhouse_url)
        except ValueError as exc:
            raise SetupError(str(exc)) from None
        return libpq_dsn(self._settings.database_url), target

    def _serve_metrics(self) -> None:
        if not self._config.metrics_port:
            return
        try:
            self._metrics.serve(self._config.metrics_host, self._config.metrics_port)
        except OSError as exc:
            raise SetupError(
                f"cannot serve metrics on {self._config.metrics_host}:{self._config.metrics_port} ({exc}): "
                "set SESSION_REPLICATION_METRICS_PORT to a free port, or 0 to disable"
            ) from None

    def _lead(self, dsn: str, target: ClickHouseTarget) -> None:
        control = connect(dsn)
        try:
            check_wal_level(control)
            if not self._acquire_leadership(control):
                return
            check_replica_identity(control)
            publication, slot = self._config.publication_name, self._config.slot_name
            ensure_publication(control, publication)
            if not slot_exists(control, slot):
                # Marked first: a crash between the two still leaves the backfill to do.
                mark_backfill(control, publication, pending=True)
                create_slot(control, slot)
            if not self._wait_for_clickhouse(target):
                return
            sink = ClickHouseSink(
                target,
                self._metrics,
                max_retries=self._config.insert_max_retries,
                base_delay_ms=self._config.insert_base_delay_ms,
                max_delay_ms=self._config.insert_max_delay_ms,
            )
            try:
                if is_backfill_pending(control, publication):
                    if not self._backfill(dsn, sink, confirmed_flush_lsn(control, slot)):
                        return
                    mark_backfill(control, publication, pending=False)
                self._consume(dsn, sink)
            finally:
                sink.close()
        finally:
            control.close()

    def _backfill(self, dsn: str, sink: ClickHouseSink, version: int) -> bool:
        return backfill(
            dsn,
            sink,
            version,
            base_delay_ms=self._config.insert_base_delay_ms,
            max_delay_ms=self._config.insert_max_delay_ms,
            stopping=lambda: self._wakeup.stopping,
            wait=self._wakeup.wait,
        )

    def _acquire_leadership(self, control: psycopg2.extensions.connection) -> bool:
        """Poll the advisory lock until we hold it (True) or are asked to stop (False)."""
        interval = self._config.leader_retry_interval_ms / 1000
        announced = False
        while not self._wakeup.stopping:
            if try_lock(control, self._config.leader_lock_id):
                logger.info("leader lock acquired lock_id=%d", self._config.leader_lock_id)
                return True
            if not announced:
                logger.info("standby waiting for the leader lock poll_ms=%d", interval * 1000)
                announced = True
            self._wakeup.wait(interval)
        return False

    def _wait_for_clickhouse(self, target: ClickHouseTarget) -> bool:
        """Apply the schema, retrying an unreachable server with capped backoff (one line per attempt)."""
        attempt = 0
        while not self._wakeup.stopping:
            attempt += 1
            client = target.connect()
            try:
                features = ensure_schema(client, target)
            except SchemaMismatch as exc:
                raise SetupError(str(exc)) from None
            except Exception as exc:
                if is_permanent(exc):
                    raise SetupError(
                        f"clickhouse at {target.address} refused the schema setup: {describe_error(exc)}"
                    ) from None
                delay = backoff_delay(
                    attempt, self._config.insert_base_delay_ms, self._config.insert_max_delay_ms, 0.5
                )
                logger.warning(
                    "clickhouse unreachable address=%s attempt=%d retry_in_ms=%d error=%s",
                    target.address,
                    attempt,
                    delay * 1000,
                    describe_error(exc),
                )
                self._wakeup.wait(delay)
                continue
            finally:
                client.disconnect()
            logger.info("clickhouse ready table=%s server_version=%s", target.table, features.version)
            return True
        return False

    def _consume(self, dsn: str, sink: ClickHouseSink) -> None:
        scheduler = FlushScheduler(
            sink.insert,
            self._metrics,
            batch_size=self._config.flush_batch_size,
            interval_ms=self._config.flush_interval_ms,
            max_concurrency=self._config.max_flush_concurrency,
            base_delay_ms=self._config.insert_base_delay_ms,
            max_delay_ms=self._config.insert_max_delay_ms,
            on_flushed=self._wakeup.wake,
        )
        connection = connect_replication(dsn)
        try:
            cursor = connection.cursor()
            cursor.start_replication(
                slot_name=self._config.slot_name,
                decode=False,
                options={"proto_version": "1", "publication_names": self._config.publication_name},
            )
            logger.info("replication started slot=%s", self._config.slot_name)
            self._pg_failures = 0
            self._stream(cursor, scheduler)
            self._shut_down(cursor, scheduler)
        finally:
            scheduler.close()
            connection.close()

    def _stream(self, cursor: psycopg2.extras.ReplicationCursor, scheduler: FlushScheduler) -> None:
        assembler = ChangeAssembler()
        last_keepalive = time.monotonic()
        while not self._wakeup.stopping:
            scheduler.poll()
            self._acknowledge(cursor, scheduler)
            if scheduler.outstanding() >= self._config.max_buffered_rows:
                # Back-pressure: stop reading the WAL, but keep the walsender from timing us out.
                if time.monotonic() - last_keepalive >= _MAX_IDLE_WAIT:
                    cursor.send_feedback(force=True)
                    last_keepalive = time.monotonic()
                self._wakeup.wait(_MAX_IDLE_WAIT)
                continue
            message = cursor.read_message()
            if message is not None:
                committed = assembler.feed(message.payload)
                if committed is not None:
                    scheduler.add(committed.rows, committed.commit_lsn, committed.commit_time)
                    for kind, count in committed.events.items():
                        self._metrics.events_processed.labels(event_type=kind).inc(count)
                continue
            due = scheduler.seconds_until_due()
            timeout = _MAX_IDLE_WAIT if due is None else min(due, _MAX_IDLE_WAIT)
            select.select([cursor, self._wakeup], [], [], timeout)
            self._wakeup.clear()

    def _acknowledge(self, cursor: psycopg2.extras.ReplicationCursor, scheduler: FlushScheduler) -> None:
        lsn = scheduler.ackable_lsn()
        if lsn is not None:
            cursor.send_feedback(write_lsn=lsn, flush_lsn=lsn, apply_lsn=lsn, force=True)
            logger.debug("acked lsn=%s", format_lsn(lsn))

    def _shut_down(self, cursor: psycopg2.extras.ReplicationCursor, scheduler: FlushScheduler) -> None:
        """Flush what is pending, acknowledge it, and leave; an open transaction is replayed later."""
        drained = scheduler.drain(SHUTDOWN_FLUSH_SECONDS)
        self._acknowledge(cursor, scheduler)
        if drained:
            logger.info("replicator stopped cleanly")
        else:
            logger.warning(
                "replicator stopped with rows=%d not in clickhouse; they will be replayed on restart",
                scheduler.outstanding(),
            )


def _is_connection_loss(exc: psycopg2.Error) -> bool:
    """Errors that a reconnect can cure: network loss, server restart, the slot still held elsewhere.

    A dropped replication stream surfaces as a bare ``DatabaseError`` ("error with status
    PGRES_COPY_BOTH and no message from the libpq").
    """
    return (
        isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
        or type(exc) is psycopg2.DatabaseError
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
