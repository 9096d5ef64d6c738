"""Prometheus metrics of the web service, summed over gunicorn's workers (multiprocess mode).

``sessions serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a private directory before any worker
starts (``metrics_dir``); each worker then writes its samples to files there, and the gunicorn
master serves their sum on ``SESSIONS_METRICS_HOST:SESSIONS_METRICS_PORT`` (never on the public
port) and drops an exited worker's live gauges. Without that directory (tests, one process) the
metrics are plain in-process ones. Other modules call the small functions below; the metric
objects stay private.

Names, labels and meanings are listed in the README ("Monitoring").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server

logger = logging.getLogger(__name__)

_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Request methods counted by name; anything else is ``OTHER``, so a client cannot mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_requests = Counter("sessions_http_requests", "HTTP requests answered", ["method", "route", "status"])
_request_seconds = Histogram(
    "sessions_http_request_duration_seconds",
    "Seconds from a request's arrival until its response headers were ready (an SSE read: its setup)",
    ["method", "route"],
    buckets=_SECONDS_BUCKETS,
)
_appends = Counter("sessions_channel_appends", "Records appended to channels", ["io"])
_appended_bytes = Counter("sessions_channel_appended_bytes", "Bytes of records appended to channels", ["io"])
_sse_subscribers = Gauge("sessions_sse_subscribers", "Live reads (SSE) open now", multiprocess_mode="livesum")
_delivery_seconds = Histogram(
    "sessions_delivery_latency_seconds",
    "Seconds from a record's append (its timestamp) until a live reader was sent it",
    buckets=_SECONDS_BUCKETS,
)
_db_checked_out = Gauge(
    "sessions_db_pool_checked_out",
    "Database connections checked out of the pool now",
    multiprocess_mode="livesum",
)
_run_launches = Counter("sessions_run_launches", "Runs launched for sessions", ["launcher", "reason"])


def count_request(method: str, route: str, status: int, seconds_to_headers: float) -> None:
    """Count one answered request; ``route`` is its URL rule (``unmatched`` when none matched)."""
    method = method if method in _METHODS else "OTHER"
    _requests.labels(method, route, str(status)).inc()
    _request_seconds.labels(method, route).observe(seconds_to_headers)


def count_append(io: str, records: int, size: int) -> None:
    """Count ``records`` appended to an ``io`` channel (``in``/``out``), ``size`` bytes in all."""
    _appends.labels(io).inc(records)
    _appended_bytes.labels(io).inc(size)


@contextmanager
def open_subscriber() -> Iterator[None]:
    """Count a live read as open for the duration of the ``with`` block."""
    _sse_subscribers.inc()
    try:
        yield
    finally:
        _sse_subscribers.dec()


def observe_delivery(seconds: float) -> None:
    """Record how long a record waited between its append and its delivery to a live reader."""
    _delivery_seconds.observe(max(seconds, 0.0))


def count_run_launch(launcher: str, reason: str) -> None:
    """Count one run launched through ``launcher`` (``record``, ``webhook``, ``celery``…) for
    ``reason`` (``initial``, ``continuation``, ``upgrade``, ``manual``); call it once the launch
    is handed over (for an outbox: when it is delivered)."""
    _run_launches.labels(launcher, reason).inc()


def watch_pool(engine: sa.Engine) -> None:
    """Keep ``sessions_db_pool_checked_out`` up to date for ``engine``'s pool.

    A detached connection (the live-tail feed's) leaves the pool for good, so it stops counting.
    """

    def checked_out(*_: Any) -> None:
        _db_checked_out.inc()

    def returned(*_: Any) -> None:
        _db_checked_out.dec()

    sa.event.listen(engine, "checkout", checked_out)
    sa.event.listen(engine, "checkin", returned)
    sa.event.listen(engine, "detach", returned)


# --- serving, in the gunicorn master -------------------------------------------------------------


def serve(host: str, port: int) -> None:
    """Serve the workers' summed metrics at ``http://host:port/metrics`` from a daemon thread.

    A port already taken is logged, not fatal: the service runs without metrics rather than not at all.
    """
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        logger.error("metrics not served host=%s port=%d error=%s", host, port, exc)
        return
    logger.info("metrics served url=http://%s:%d/metrics", host, port)


def forget_worker(pid: int) -> None:
    """Drop an exited worker's live gauges (its counters and histograms still count)."""
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
