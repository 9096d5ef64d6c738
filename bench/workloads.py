"""The four measurements, each bounded in count and in time, run against any `Target`.

Latencies are taken with one monotonic clock in this process: an append's clock starts just before
its request is written, and a delivery is stamped when its bytes are read from the subscriber's
socket. Every phase is wrapped in a time limit, so a stuck server yields an error, not a hung run.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.sse import events
from bench.stats import summarize_ms
from bench.targets import BenchError, Stream, Target, make_payload


@dataclass
class Config:
    """Sizes and bounds; every field has a command-line flag in `bench.run`."""

    payload_bytes: int = 100
    latency_appends: int = 1000
    latency_seconds: float = 15.0
    writers: int = 16
    throughput_seconds: float = 10.0
    throughput_max_appends: int = 100_000
    records: int = 10_000
    fill_seconds: float = 60.0
    subscribers: tuple[int, ...] = (1, 100, 1000)
    fanout_appends: int = 30
    #: A cell with few subscribers appends more, up to this many deliveries: 30 samples of one
    #: subscriber make a p50 that one scheduling hiccup moves.
    fanout_min_deliveries: int = 300
    fanout_interval: float = 0.01
    connect_seconds: float = 60.0
    settle_seconds: float = 0.5
    deliver_seconds: float = 10.0
    fanout_seconds: float = 20.0
    catchup_repeats: int = 3
    catchup_seconds: float = 60.0
    warmup_appends: int = 20
    #: The idle-subscribers line (`bench.idle`): readers on one stream, spread over child processes.
    idle_subscribers: int = 10_000
    idle_appends: int = 5
    idle_processes: int = 3
    idle_connect_gate: int = 100
    idle_connect_seconds: float = 180.0
    idle_settle_seconds: float = 2.0
    #: A bound on the appending phase: no new fan-out starts after it.
    idle_append_seconds: float = 30.0
    #: The most a reader process lives: it exits on its own after this, even if never told to stop.
    idle_seconds: float = 600.0


def client(limit: int = 0) -> aiohttp.ClientSession:
    """An HTTP client for loopback: no pool cap, keep-alive shorter than gunicorn's 5 s, no env proxy.

    The short keep-alive stops the client from reusing a connection the server has just closed.
    """
    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=4, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=90)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)


async def append_latency(
    target: Target, http: aiohttp.ClientSession, name: str, cfg: Config
) -> dict[str, Any]:
    """One writer, sequential appends: how long each acknowledged append takes."""
    stream = await target.create_stream(http, name)
    for n in range(cfg.warmup_appends):
        await target.append(http, stream, make_payload(n, cfg.payload_bytes), 0)
    samples: list[float] = []
    deadline = time.perf_counter() + cfg.latency_seconds
    for n in range(cfg.latency_appends):
        if time.perf_counter() > deadline:
            break
        body = make_payload(cfg.warmup_appends + n, cfg.payload_bytes)
        started = time.perf_counter()
        await target.append(http, stream, body, 0)
        samples.append(time.perf_counter() - started)
    return summarize_ms(samples)


async def throughput(target: Target, http: aiohttp.ClientSession, name: str, cfg: Config) -> dict[str, Any]:
    """`writers` concurrent writers append to one stream for `throughput_seconds`, each sequentially.

    One stream, because a session channel is one ordered log: this is the rate at which that log
    takes acknowledged appends. Bounded by time and by `throughput_max_appends`.
    """
    stream = await target.create_stream(http, name)
    numbers = itertools.count()
    latencies: list[float] = []
    deadline = time.perf_counter() + cfg.throughput_seconds

    async def writer(w: int) -> None:
        for n in numbers:  # shared: each record number is claimed by exactly one writer
            if n >= cfg.throughput_max_appends or time.perf_counter() > deadline:
                return
            body = make_payload(n, cfg.payload_bytes)
            started = time.perf_counter()
            await target.append(http, stream, body, w)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(cfg.writers)))
    elapsed = time.perf_counter() - started
    done = len(latencies)
    result = {"writers": cfg.writers, "appends": done, "seconds": elapsed, "appends_per_s": done / elapsed}
    result["latency"] = summarize_ms(latencies)
    return result


async def fanout(target: Target, name: str, subscribers: int, cfg: Config) -> dict[str, Any]:
    """`subscribers` live SSE readers; one writer appends at a steady pace.

    Measures, for every (record, subscriber) pair, the time from the append request's start to the
    subscriber receiving that record. The loop is closed: the next append waits until every
    subscriber has the previous record (or `deliver_seconds` pass), then `fanout_interval` more.
    An open loop at a fixed rate would measure the backlog of whichever side saturates first (this
    single-process client included) rather than the latency of one fan-out.
    """
    appends = max(cfg.fanout_appends, -(-cfg.fanout_min_deliveries // subscribers))
    sent: dict[int, float] = {}
    samples: list[float] = []
    got = [0] * subscribers
    arrived: dict[int, int] = {}
    complete = {n: asyncio.Event() for n in range(appends)}
    opened = 0
    all_open = asyncio.Event()
    gate = asyncio.Semaphore(100)  # node's default listen backlog is 511: don't SYN-flood it
    errors: list[str] = []

    async def subscriber(i: int, http: aiohttp.ClientSession, stream: Stream) -> None:
        nonlocal opened
        async with gate:
            response = await target.open_sse(http, stream)
        opened += 1
        if opened == subscribers:
            all_open.set()
        try:
            async for event in events(response):
                target._raise_on_error(event)
                for n in target.numbers(event):
                    started = sent.get(n)
                    if started is not None:
                        samples.append(event.received - started)
                        got[i] += 1
                        arrived[n] = arrived.get(n, 0) + 1
                        if arrived[n] == subscribers:
                            complete[n].set()
                if got[i] >= appends:
                    return
        finally:
            response.close()

    async with client() as readers, client() as writer_http:
        stream = await target.create_stream(writer_http, name)
        tasks = [asyncio.create_task(subscriber(i, readers, stream)) for i in range(subscribers)]
        try:
            connect_started = time.perf_counter()
            await _wait_event_or_failure(all_open, tasks, cfg.connect_seconds)
            connect_seconds = time.perf_counter() - connect_started
            await asyncio.sleep(cfg.settle_seconds)
            append_latencies: list[float] = []
            stalls = 0
            deadline = time.perf_counter() + cfg.fanout_seconds
            for n in range(appends):
                if time.perf_counter() > deadline:
                    break
                sent[n] = time.perf_counter()
                await target.append(writer_http, stream, make_payload(n, cfg.payload_bytes), 0)
                append_latencies.append(time.perf_counter() - sent[n])
                try:
                    await asyncio.wait_for(complete[n].wait(), cfg.deliver_seconds)
                except TimeoutError:
                    stalls += 1
                await asyncio.sleep(cfg.fanout_interval)
            await asyncio.wait(tasks, timeout=cfg.settle_seconds + 1)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    errors.append(repr(task.exception()))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    expected = subscribers * len(sent)
    result = {
        "subscribers": subscribers,
        "appends": len(sent),
        "connect_seconds": connect_seconds,
        "deliveries": len(samples),
        "missing": expected - len(samples),
        "stalled_appends": stalls,
        "errors": errors[:5],
        "delivery": summarize_ms(samples),
        "append_latency": summarize_ms(append_latencies),
    }
    return result


async def _wait_event_or_failure(
    flag: asyncio.Event, tasks: list[asyncio.Task[None]], timeout: float
) -> None:
    """Wait for `flag`, but fail fast if a subscriber task dies first, and at `timeout` seconds."""
    waiter = asyncio.create_task(flag.wait())
    deadline = time.perf_counter() + timeout
    try:
        while not flag.is_set():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise BenchError(f"subscribers not all connected within {timeout:.0f} s")
            await asyncio.wait(
                [waiter, *tasks], timeout=min(remaining, 1.0), return_when=asyncio.FIRST_COMPLETED
            )
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise BenchError(f"a subscriber failed while connecting: {task.exception()!r}")
    finally:
        waiter.cancel()


async def catch_up(target: Target, http: aiohttp.ClientSession, name: str, cfg: Config) -> dict[str, Any]:
    """Write a `records`-record stream, then read it whole from the start, over SSE and as JSON pages."""
    stream = await target.create_stream(http, name)
    started = time.perf_counter()
    records = await target.fill(http, stream, cfg.records, cfg.payload_bytes, cfg.fill_seconds)
    result: dict[str, Any] = {"records": records, "fill_seconds": time.perf_counter() - started}
    for mode, read in (("sse", target.read_all_sse), ("json", target.read_all_json)):
        times = []
        for _ in range(cfg.catchup_repeats):
            started = time.perf_counter()
            count = await asyncio.wait_for(read(http, stream, records), cfg.catchup_seconds)
            times.append(time.perf_counter() - started)
            if count != records:
                raise BenchError(f"{target.name} {mode} catch-up read {count} records, expected {records}")
        result[mode] = {"median_ms": statistics.median(times) * 1000, "runs_ms": [t * 1000 for t in times]}
    return result
