"""Decide when pending rows go to ClickHouse, run the inserts on worker threads, track acks.

The replication loop calls ``add`` at each commit and ``poll`` whenever it wakes; a flush starts
when the pending set reaches ``batch_size`` or its oldest row has waited ``interval``, up to
``max_concurrency`` at once. A batch that fails transiently goes back into the pending set (a newer
version of a row wins over it) and flushing pauses with capped exponential backoff: the rows are
never dropped, so their LSN is never acknowledged before they are in ClickHouse.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from session_core.replication.metrics import ReplicationMetrics
from session_core.replication.pending import AckTracker, PendingRow, PendingRows
from session_core.replication.sink import PermanentInsertError, TransientInsertError, backoff_delay

__all__ = ["FlushScheduler"]

logger = logging.getLogger(__name__)

InsertBatch = Callable[[list[dict[str, object]]], None]


class FlushScheduler:
    def __init__(
        self,
        insert: InsertBatch,
        metrics: ReplicationMetrics,
        *,
        batch_size: int,
        interval_ms: int,
        max_concurrency: int,
        base_delay_ms: int,
        max_delay_ms: int,
        on_flushed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._insert = insert
        self._metrics = metrics
        self._batch_size = batch_size
        self._interval = interval_ms / 1000
        self._max_concurrency = max_concurrency
        self._base_delay_ms = base_delay_ms
        self._max_delay_ms = max_delay_ms
        self._on_flushed = on_flushed
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="clickhouse-flush")
        self._changed = threading.Condition()
        # Everything below is guarded by ``_changed``.
        self._pending = PendingRows()
        self._pending_since: float | None = None
        self._in_flight: dict[int, list[PendingRow]] = {}
        self._in_flight_oldest: dict[int, int] = {}
        self._next_batch_id = 0
        self._acks = AckTracker()
        self._failures = 0
        self._not_before = 0.0
        self._fatal: PermanentInsertError | None = None

    def add(self, rows: list[dict[str, object]], commit_lsn: int, commit_time: datetime) -> None:
        """Queue one committed transaction's rows, whose ``_version`` is ``commit_lsn``."""
        with self._changed:
            for row in rows:
                self._pending.add(
                    PendingRow(str(row["session_id"]), row, commit_lsn, commit_lsn, commit_time)
                )
            if rows and self._pending_since is None:
                self._pending_since = self._clock()
            self._acks.committed(commit_lsn)

    def outstanding(self) -> int:
        """Rows not yet in ClickHouse: pending plus in flight."""
        with self._changed:
            return len(self._pending) + sum(len(batch) for batch in self._in_flight.values())

    def poll(self, *, drain: bool = False) -> None:
        """Start every flush that is due; ``drain`` ignores the interval (shutdown).

        :raise PermanentInsertError: a batch was refused for good; the caller must stop.
        """
        with self._changed:
            if self._fatal is not None:
                raise self._fatal
            now = self._clock()
            while self._pending and len(self._in_flight) < self._max_concurrency and now >= self._not_before:
                waited = now - (self._pending_since or now)
                if not (drain or len(self._pending) >= self._batch_size or waited >= self._interval):
                    break
                batch = self._pending.take()
                self._pending_since = None
                batch_id = self._next_batch_id
                self._next_batch_id += 1
                self._in_flight[batch_id] = batch
                self._in_flight_oldest[batch_id] = min(entry.oldest_lsn for entry in batch)
                self._executor.submit(self._flush, batch_id, batch)

    def seconds_until_due(self) -> float | None:
        """How long the caller may sleep before ``poll`` could start a flush (None: nothing pending)."""
        with self._changed:
            if not self._pending or len(self._in_flight) >= self._max_concurrency:
                return None
            now = self._clock()
            due = max(self._not_before, (self._pending_since or now) + self._interval)
            if len(self._pending) >= self._batch_size:
                due = self._not_before
            return max(0.0, due - now)

    def ackable_lsn(self) -> int | None:
        """The newest commit LSN whose rows, and all earlier ones, are in ClickHouse, if it moved."""
        with self._changed:
            oldest = list(self._in_flight_oldest.values())
            pending_oldest = self._pending.oldest_lsn()
            if pending_oldest is not None:
                oldest.append(pending_oldest)
            return self._acks.advance(min(oldest, default=None))

    def drain(self, timeout: float) -> bool:
        """Flush everything, waiting up to ``timeout`` real seconds; True when nothing is left."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending or self._in_flight:
                self.poll(drain=True)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if not self._in_flight:  # backing off after a failure
                    remaining = min(remaining, max(0.001, self._not_before - self._clock()))
                self._changed.wait(remaining)
            return True

    def close(self) -> None:
        """Wait for running inserts and stop the worker threads."""
        self._executor.shutdown(wait=True)

    def _flush(self, batch_id: int, batch: list[PendingRow]) -> None:
        started = self._clock()
        try:
            self._insert([entry.row for entry in batch])
        except TransientInsertError as exc:
            self._failed(batch_id, batch, exc)
        except PermanentInsertError as exc:
            self._stop(batch_id, batch, exc)
            self._metrics.batches_flushed.labels(success="false").inc()
        except Exception as exc:  # a bug must stop the replicator, not strand rows silently
            logger.exception("clickhouse flush crashed rows=%d", len(batch))
            self._stop(batch_id, batch, PermanentInsertError(f"flush crashed: {exc!r}"))
        else:
            self._succeeded(batch_id, batch, started)
        self._on_flushed()

    def _finish(self, batch_id: int) -> None:
        del self._in_flight[batch_id]
        del self._in_flight_oldest[batch_id]

    def _stop(self, batch_id: int, batch: list[PendingRow], exc: PermanentInsertError) -> None:
        # The rows stay outstanding so that no later success can move the acknowledgement past them.
        with self._changed:
            self._finish(batch_id)
            self._pending.add_all(batch)
            self._fatal = exc
            self._changed.notify_all()

    def _succeeded(self, batch_id: int, batch: list[PendingRow], started: float) -> None:
        with self._changed:
            self._finish(batch_id)
            self._failures = 0
            self._not_before = 0.0
            self._changed.notify_all()
        now = datetime.now(UTC)
        self._metrics.batches_flushed.labels(success="true").inc()
        self._metrics.batch_size.observe(len(batch))
        self._metrics.sessions_inserted.inc(len(batch))
        self._metrics.flush_duration_ms.observe((self._clock() - started) * 1000)
        for entry in batch:
            self._metrics.replication_lag_ms.observe((now - entry.commit_time).total_seconds() * 1000)

    def _failed(self, batch_id: int, batch: list[PendingRow], exc: TransientInsertError) -> None:
        with self._changed:
            self._finish(batch_id)
            self._pending.add_all(batch)
            if self._pending_since is None:
                self._pending_since = self._clock()
            self._failures += 1
            failures = self._failures
            delay = backoff_delay(failures, self._base_delay_ms, self._max_delay_ms, random.random())
            self._not_before = self._clock() + delay
            self._changed.notify_all()
        self._metrics.batches_flushed.labels(success="false").inc()
        logger.warning(
            "clickhouse batch kept for retry rows=%d failures=%d retry_in_ms=%d error=%s",
            len(batch),
            failures,
            delay * 1000,
            exc,
        )
