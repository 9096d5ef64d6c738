"""Replication lag: from a PostgreSQL commit to the row being visible in ClickHouse.

Method. A writer *process* commits one change per transaction at a steady rate (new sessions, and
closes of sessions it opened earlier) and notes ``time.monotonic()`` when each ``COMMIT`` returns.
Meanwhile this process polls ``sessions_v1`` in a tight, bounded loop for the rows whose
``_version`` is new since about a second ago, and notes when each session first appears and when it
first appears closed. Lag = first poll that saw the change − its commit's return. Both clocks are
``CLOCK_MONOTONIC`` on one machine, so no skew enters; a change is seen by the first poll that
*starts* after it landed, so the number is high by at most one poll period (reported with it),
and low by at most the commit's round trip (sub-millisecond on loopback).

The replicator's own ``replication_lag_ms`` histogram (PostgreSQL commit timestamp to insert done)
is scraped at the end as a cross-check.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import re
import resource
import tempfile
import time
import urllib.request
from collections import deque
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psycopg2
from clickhouse_driver import Client

from bench.stats import percentile, summarize_ms
from session_core.ids import generate_cuid, session_friendly_id
from session_core.models import Environment, utcnow

__all__ = ["LagConfig", "measure_lag", "scrape_lag_histogram"]

# A row lands with every other row of its batch; re-reading a second of versions each poll also
# catches a batch that landed out of order (only possible with concurrent flushes or a retry).
_RESCAN_SECONDS = 1.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class LagConfig:
    writes_per_second: float = 500
    seconds: float = 30
    close_share: float = 0.4  # the rest are inserts
    poll_ms: float = 2  # pause between polls
    drain_seconds: float = 15  # how long to wait for the last changes after the writer stops


@dataclass(frozen=True)
class _Writes:
    """What the writer did: one entry per commit, and the rate it really achieved."""

    kinds: list[str]
    ids: list[str]
    committed: list[float]  # monotonic seconds when COMMIT returned
    round_trip: list[float]
    cpu_s: float = 0.0  # the writer process's own CPU time


def measure_lag(
    dsn: str, clickhouse_url: str, table: str, environment: Environment, config: LagConfig
) -> dict[str, Any]:
    """Run the writer against PostgreSQL while polling ClickHouse; return the lag summary."""
    host, port = _host_port(clickhouse_url)
    client = Client(host, port=port)
    out = Path(tempfile.mkstemp(prefix="bench-lag-", suffix=".json")[1])
    tenant = {
        "id": environment.id,
        "organization_id": environment.organization_id,
        "project_id": environment.project_id,
        "type": environment.type.value,
    }
    # A process of its own, so that polling never holds the writer's GIL (or the other way round).
    writer = multiprocessing.get_context("spawn").Process(
        target=_write, args=(dsn, tenant, asdict(config), str(out))
    )
    seen: dict[str, float] = {}
    seen_closed: dict[str, float] = {}
    polls: list[tuple[float, float]] = []  # (started, seconds)
    try:
        writer.start()
        deadline = time.monotonic() + config.seconds + 60  # the writer's own bound, plus start-up
        poller = _Poller(client, table, environment.id, seen, seen_closed, polls)
        while writer.is_alive() and time.monotonic() < deadline:
            poller.poll()
            time.sleep(config.poll_ms / 1000)
        writer.join(10)
        if writer.exitcode != 0:
            raise RuntimeError(f"the lag writer failed (exit code {writer.exitcode}); its error is above")
        writes = _Writes(**json.loads(out.read_text()))
        drain_until = time.monotonic() + config.drain_seconds
        while time.monotonic() < drain_until and not _all_seen(writes, seen, seen_closed):
            poller.poll()
            time.sleep(config.poll_ms / 1000)
    finally:
        if writer.is_alive():
            writer.terminate()
            writer.join(10)
        client.disconnect()
        out.unlink(missing_ok=True)
    return _summary(writes, seen, seen_closed, polls, config)


class _Poller:
    """One poll: the rows of the environment whose ``_version`` is newer than a second ago's maximum."""

    def __init__(
        self,
        client: Client,
        table: str,
        environment_id: str,
        seen: dict[str, float],
        seen_closed: dict[str, float],
        polls: list[tuple[float, float]],
    ) -> None:
        self._client = client
        self._sql = (
            f"SELECT session_id, isNotNull(closed_at), _version FROM {table}"
            " WHERE environment_id = %(env)s AND _version > %(floor)s"
        )
        self._env = environment_id
        self._seen = seen
        self._seen_closed = seen_closed
        self._polls = polls
        self._history: deque[tuple[float, int]] = deque()
        self._newest = 0

    def poll(self) -> None:
        started = time.monotonic()
        floor = 0
        while self._history and self._history[0][0] < started - _RESCAN_SECONDS:
            floor = self._history.popleft()[1]
        if floor:
            self._history.appendleft((started - _RESCAN_SECONDS, floor))
        rows = self._client.execute(self._sql, {"env": self._env, "floor": floor})
        for session_id, closed, version in rows:
            self._seen.setdefault(session_id, started)
            if closed:
                self._seen_closed.setdefault(session_id, started)
            self._newest = max(self._newest, version)
        self._history.append((started, self._newest))
        self._polls.append((started, time.monotonic() - started))


def _all_seen(writes: _Writes, seen: dict[str, float], seen_closed: dict[str, float]) -> bool:
    return all(
        session_id in (seen_closed if kind == "close" else seen)
        for kind, session_id in zip(writes.kinds, writes.ids, strict=True)
    )


def _summary(
    writes: _Writes,
    seen: dict[str, float],
    seen_closed: dict[str, float],
    polls: list[tuple[float, float]],
    config: LagConfig,
) -> dict[str, Any]:
    lags, missing = [], 0
    worst_by_second: dict[int, float] = {}
    start = writes.committed[0] if writes.committed else 0.0
    for kind, session_id, committed in zip(writes.kinds, writes.ids, writes.committed, strict=True):
        visible = (seen_closed if kind == "close" else seen).get(session_id)
        if visible is None:
            missing += 1
            continue
        lags.append(visible - committed)
        second = int(committed - start)
        worst_by_second[second] = max(worst_by_second.get(second, 0.0), visible - committed)
    span = writes.committed[-1] - writes.committed[0] if len(writes.committed) > 1 else 0.0
    steady = [worst for second, worst in worst_by_second.items() if second > 0]
    gaps = [b[0] - a[0] for a, b in zip(polls, polls[1:], strict=False)]
    return {
        "config": asdict(config),
        "writes": len(writes.kinds),
        "inserts": writes.kinds.count("insert"),
        "closes": writes.kinds.count("close"),
        "achieved_writes_per_second": round(len(writes.kinds) / span, 1) if span else 0.0,
        "commit_round_trip": summarize_ms(writes.round_trip),
        "writer_cpu_s": writes.cpu_s,
        "lag": summarize_ms(lags),
        "not_visible": missing,
        "negative": sum(1 for lag in lags if lag < 0),
        "polls": len(polls),
        "poll_period_p50_ms": round(percentile(gaps, 50) * 1000, 2),
        "poll_query_p50_ms": round(percentile([seconds for _, seconds in polls], 50) * 1000, 2),
        # The first second after the replicator starts streaming is its slowest (a warm-up).
        "max_after_first_second_ms": round(max(steady, default=0.0) * 1000, 1),
        # Where in the run the tail happened: the worst lag of the changes committed in each second.
        "worst_ms_by_second": [
            round(worst_by_second.get(n, 0.0) * 1000, 1) for n in range(len(worst_by_second))
        ],
    }


def _write(dsn: str, environment: dict[str, Any], config: dict[str, Any], out: str) -> None:
    """The writer process: one autocommitted change at a time, on a fixed schedule, for ``seconds``."""
    rate, seconds, close_share = config["writes_per_second"], config["seconds"], config["close_share"]
    rng = random.Random(7)
    open_ids: list[str] = []
    writes = _Writes([], [], [], [])
    with closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            start = time.monotonic()
            for n in range(int(rate * seconds)):
                due = start + n / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                elif pause < -seconds:  # hopelessly behind: stop rather than run on unbounded
                    break
                closing_one = open_ids and rng.random() < close_share
                sent = time.monotonic()
                if closing_one:
                    session_id = open_ids.pop(rng.randrange(len(open_ids)))
                    _close(cur, session_id)
                else:
                    session_id = _insert(cur, environment, n)
                    open_ids.append(session_id)
                done = time.monotonic()
                writes.kinds.append("close" if closing_one else "insert")
                writes.ids.append(session_id)
                writes.committed.append(done)
                writes.round_trip.append(done - sent)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    writes = replace(writes, cpu_s=round(usage.ru_utime + usage.ru_stime, 2))
    Path(out).write_text(json.dumps(asdict(writes)))


def _insert(cur: Any, environment: dict[str, Any], n: int) -> str:
    cuid = generate_cuid()
    now = utcnow()
    cur.execute(
        "INSERT INTO sessions (id, friendly_id, type, task_identifier, trigger_config, tags,"
        " organization_id, project_id, environment_id, environment_type, created_at, updated_at)"
        " VALUES (%s, %s, 'chat.agent', 'support-bot', %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            cuid,
            session_friendly_id(cuid),
            '{"basePayload":{}}',
            [f"user:{n % 1000}"],
            environment["organization_id"],
            environment["project_id"],
            environment["id"],
            environment["type"],
            now,
            now,
        ),
    )
    return cuid


def _close(cur: Any, session_id: str) -> None:
    now = utcnow()
    cur.execute(
        "UPDATE sessions SET closed_at = %s, closed_reason = 'bench', updated_at = %s"
        " WHERE id = %s AND closed_at IS NULL",
        (now, now, session_id),
    )


def _host_port(clickhouse_url: str) -> tuple[str, int]:
    match = re.match(r"clickhouse://(?:[^@/]*@)?([^:/]+):(\d+)", clickhouse_url)
    if match is None:
        raise ValueError(f"cannot read host and port from {clickhouse_url!r}")
    return match.group(1), int(match.group(2))


def scrape_lag_histogram(metrics_url: str) -> dict[str, Any]:
    """The replicator's lag and flush-duration histograms, p50/p99 interpolated in their buckets."""
    with _NO_PROXY.open(metrics_url, timeout=5) as response:
        text = response.read().decode()
    lag = _buckets(text, "sessions_replication_replication_lag_ms")
    flush = _buckets(text, "sessions_replication_flush_duration_ms")
    batches = _metric(text, "sessions_replication_batch_size_count")
    rows = _metric(text, "sessions_replication_batch_size_sum")
    return {
        "count": int(lag[-1][1]) if lag else 0,
        "p50_ms": round(_bucket_quantile(lag, 0.5), 1),
        "p99_ms": round(_bucket_quantile(lag, 0.99), 1),
        "flush_p50_ms": round(_bucket_quantile(flush, 0.5), 1),
        "flush_p99_ms": round(_bucket_quantile(flush, 0.99), 1),
        "batches": int(batches),
        "mean_batch_rows": round(rows / batches, 1) if batches else 0.0,
    }


def _buckets(text: str, name: str) -> list[tuple[float, float]]:
    pattern = rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$'
    return [(float(le), float(count)) for le, count in re.findall(pattern, text, re.MULTILINE)]


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' ``histogram_quantile``: linear within the bucket that holds the quantile."""
    if not buckets or not buckets[-1][1]:
        return float("nan")
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / max(count - lower_count, 1e-9)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound
