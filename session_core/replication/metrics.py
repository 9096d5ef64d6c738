"""Prometheus metrics of the replicator, shaped like Trigger.dev's ``sessions_replication.*`` (§9).

Each ``ReplicationMetrics`` owns its registry, so tests can build as many as they like; counters
are exposed with Prometheus' ``_total`` suffix.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, start_http_server

__all__ = ["ReplicationMetrics"]

_PREFIX = "sessions_replication_"
_MS_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 10000)


class ReplicationMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.replication_lag_ms = Histogram(
            _PREFIX + "replication_lag_ms",
            "Milliseconds from a PostgreSQL commit until its rows are in ClickHouse",
            buckets=_MS_BUCKETS,
            registry=self.registry,
        )
        self.batches_flushed = Counter(
            _PREFIX + "batches_flushed", "Batches sent to ClickHouse", ["success"], registry=self.registry
        )
        self.batch_size = Histogram(
            _PREFIX + "batch_size", "Rows per flushed batch", buckets=_SIZE_BUCKETS, registry=self.registry
        )
        self.sessions_inserted = Counter(
            _PREFIX + "sessions_inserted", "Rows written to sessions_v1", registry=self.registry
        )
        self.insert_retries = Counter(
            _PREFIX + "insert_retries",
            "ClickHouse insert attempts retried",
            ["operation"],
            registry=self.registry,
        )
        self.events_processed = Counter(
            _PREFIX + "events_processed",
            "Row changes decoded from PostgreSQL",
            ["event_type"],
            registry=self.registry,
        )
        self.flush_duration_ms = Histogram(
            _PREFIX + "flush_duration_ms",
            "Milliseconds one batch insert took, retries included",
            buckets=_MS_BUCKETS,
            registry=self.registry,
        )

    def serve(self, host: str, port: int) -> None:
        """Expose ``/metrics`` over HTTP on a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
