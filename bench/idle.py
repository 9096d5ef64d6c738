"""Idle subscribers: thousands of live SSE readers on one stream, then records appended one at a time.

The readers live in a few child processes (`bench.raw_sse`), so that the client is not what is
measured; this process appends. For every (record, reader) pair the line takes the time from the
append request's start to the reader's ``data_received``. The loop is closed as in
`bench.workloads.fanout`: the next append waits until every reader of every child has the previous
record (or `Config.deliver_seconds` pass). Every phase is bounded.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.stats import summarize_ms
from bench.targets import BenchError, Target, make_payload
from bench.workloads import Config

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Child:
    """One `bench.raw_sse` process and what it reported."""

    proc: asyncio.subprocess.Process
    readers: int
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    complete: dict[int, asyncio.Event] = field(default_factory=dict)
    error: str | None = None
    final: asyncio.Future[dict[str, Any]] | None = None
    listener: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, spec: dict[str, Any]) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.raw_sse",
            json.dumps(spec),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
            limit=1 << 26,  # the final report holds every arrival time: megabytes on one line
        )
        child = cls(proc, spec["readers"])
        child.final = asyncio.get_running_loop().create_future()
        child.listener = asyncio.create_task(child._listen())
        return child

    def done(self, n: int) -> asyncio.Event:
        return self.complete.setdefault(n, asyncio.Event())

    async def _listen(self) -> None:
        assert self.proc.stdout is not None and self.final is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            if "arrivals" in message:  # the final report (it has a "connected" count too)
                self.final.set_result(message)
                return
            if "connected" in message:
                self.connected.set()
            elif "complete" in message:
                self.done(message["complete"]).set()
            elif "error" in message:
                self.error = message["error"]
                self.connected.set()
        if not self.final.done():
            self.final.set_exception(BenchError(f"raw_sse child exited with {await self.proc.wait()}"))
        self.connected.set()

    async def stop(self, timeout: float) -> dict[str, Any]:
        """Ask for the arrivals; kill the child if it does not answer within `timeout`."""
        assert self.proc.stdin is not None and self.final is not None
        try:
            self.proc.stdin.write(b"stop\n")
            await self.proc.stdin.drain()
            return await asyncio.wait_for(asyncio.shield(self.final), timeout)
        finally:
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def close(self) -> None:
        """Kill the child if it still runs, and collect what its listener left behind."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        if self.listener is not None:
            await self.listener
        if self.final is not None and self.final.done() and not self.final.cancelled():
            self.final.exception()  # retrieved: a failed cell already said why


def shares(total: int, parts: int) -> list[int]:
    """`total` split into at most `parts` near-equal positive counts."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def idle_subscribers(
    target: Target,
    http: aiohttp.ClientSession,
    name: str,
    subscribers: int,
    cfg: Config,
    phase: Callable[[str], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """`subscribers` readers connect and wait; then `idle_appends` records, one fan-out at a time
    (fewer if `idle_append_seconds` run out: a slow server still gets at least one). `phase`, if
    given, is awaited with ``connect`` and ``fanout`` as each phase starts (the profiler's cue)."""
    stream = await target.create_stream(http, name)
    if phase is not None:
        await phase("connect")
    raw = target.sse_request(stream)
    children: list[Child] = []
    started = time.perf_counter()
    try:
        for count in shares(subscribers, cfg.idle_processes):
            spec = {
                "host": raw.host,
                "port": raw.port,
                "request": raw.request.decode("latin-1"),
                "readers": count,
                "gate": cfg.idle_connect_gate,
                "seconds": cfg.idle_seconds,
            }
            children.append(await Child.start(spec))
        await _all(
            [c.connected.wait() for c in children], cfg.idle_connect_seconds, "readers not all connected"
        )
        errors = [c.error for c in children if c.error]
        if errors:
            raise BenchError(f"a reader failed while connecting: {errors[0]}")
        connect_seconds = time.perf_counter() - started
        await asyncio.sleep(cfg.idle_settle_seconds)  # let the server go quiet before the first append
        if phase is not None:
            await phase("fanout")
        sent: dict[int, float] = {}
        append_latencies: list[float] = []
        stalls = 0
        deadline = time.perf_counter() + cfg.idle_append_seconds
        for n in range(cfg.idle_appends):
            if n and time.perf_counter() > deadline:
                break
            sent[n] = time.perf_counter()
            await target.append(http, stream, make_payload(n, cfg.payload_bytes), 0)
            append_latencies.append(time.perf_counter() - sent[n])
            try:
                await _all([c.done(n).wait() for c in children], cfg.deliver_seconds, "")
            except BenchError:
                stalls += 1
            await asyncio.sleep(cfg.fanout_interval)
        reports = await asyncio.gather(*(c.stop(cfg.connect_seconds) for c in children))
    finally:
        await asyncio.gather(*(child.close() for child in children))
    samples: list[float] = []
    per_append: dict[int, list[float]] = {n: [] for n in sent}
    for report in reports:
        for key, times in report["arrivals"].items():
            n = int(key)
            if n in sent:
                delays = [t - sent[n] for t in times]
                samples.extend(delays)
                per_append[n].extend(delays)
    return {
        "subscribers": subscribers,
        "processes": len(children),
        "appends": len(sent),
        "connect_seconds": connect_seconds,
        "deliveries": len(samples),
        "missing": subscribers * len(sent) - len(samples),
        "stalled_appends": stalls,
        "lost_connections": sum(r["lost"] for r in reports),
        "errors": [e for r in reports for e in r["errors"]][:5],
        "delivery": summarize_ms(samples),
        "delivery_per_append": [summarize_ms(per_append[n]) for n in sorted(per_append)],
        "append_latency": summarize_ms(append_latencies),
    }


async def _all(waits: list[Any], timeout: float, what: str) -> None:
    """Await every coroutine in `waits` within `timeout` seconds, else raise BenchError(`what`)."""
    try:
        await asyncio.wait_for(asyncio.gather(*waits), timeout)
    except TimeoutError:
        raise BenchError(f"{what} within {timeout:.0f} s") from None
