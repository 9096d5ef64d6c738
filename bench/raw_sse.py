"""Thousands of live SSE readers on bare asyncio connections, in a child process of the benchmark.

aiohttp costs ~90 µs of client CPU per delivered event: at 10,000 readers that is most of a second
per record, so the client would be what is measured. A reader here is an `asyncio.Protocol` that
sends one prepared GET, checks the status line, and then only stamps ``time.perf_counter()`` in
``data_received`` and looks for the payload's ``@@n@@`` marker (`bench.targets.make_payload`): no
HTTP, SSE or JSON parsing. ``perf_counter`` is ``CLOCK_MONOTONIC`` on Linux, the same clock in every
process, so the parent can subtract its append start from these stamps.

The parent starts ``python -m bench.raw_sse SPEC`` (a JSON object: host, port, request, readers,
gate, seconds) and talks over pipes, one JSON object per line. Child to parent: ``{"connected": k}``
once every reader has its status line (or ``{"error": …}``), ``{"complete": n}`` when every reader
has record ``n``. Parent to child: ``stop``; the child answers ``{"arrivals": {n: [t, …]}, …}``,
resets its connections (``SO_LINGER`` 0: no TIME_WAIT left behind) and exits. It also exits on its
own after ``seconds``, so an orphan cannot outlive the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import socket
import struct
import sys
import time
from typing import Any

MARKER = re.compile(rb"@@(\d+)@@")
#: Bytes kept from the end of a chunk, so a marker cut between two reads is still found.
TAIL = 24
STATUS_OK = (b"HTTP/1.1 200", b"HTTP/1.0 200")


def emit(message: dict[str, Any]) -> None:
    """One JSON line to the parent."""
    os.write(1, json.dumps(message).encode() + b"\n")


class Readers:
    """Every reader of this process, and what they received."""

    def __init__(self, request: bytes, count: int) -> None:
        self.request = request
        self.count = count
        self.connected = 0
        self.arrivals: dict[int, list[float]] = {}
        self.errors: list[str] = []
        self.lost = 0
        self.transports: list[asyncio.Transport] = []
        self.all_connected = asyncio.Event()

    def on_status(self, ok: bool, head: bytes) -> None:
        if not ok:
            self.fail(f"status: {head[:200]!r}")
            return
        self.connected += 1
        if self.connected == self.count:
            self.all_connected.set()
            emit({"connected": self.connected})

    def on_record(self, n: int, received: float) -> None:
        times = self.arrivals.setdefault(n, [])
        times.append(received)
        if len(times) == self.count:
            emit({"complete": n})

    def fail(self, message: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(message)
        if not self.all_connected.is_set():
            self.all_connected.set()
            emit({"error": message})


class Reader(asyncio.Protocol):
    """One SSE connection: stamp, find markers, nothing else."""

    def __init__(self, readers: Readers) -> None:
        self.readers = readers
        self.status: bool | None = None
        self.tail = b""
        self.last = -1
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.readers.transports.append(transport)
        transport.write(self.readers.request)

    def data_received(self, data: bytes) -> None:
        received = time.perf_counter()
        chunk = self.tail + data
        if self.status is None:
            if len(chunk) < len(STATUS_OK[0]):
                self.tail = chunk
                return
            self.status = chunk.startswith(STATUS_OK)
            self.readers.on_status(self.status, chunk)
            if not self.ready.done():
                self.ready.set_result(None)
        for match in MARKER.finditer(chunk):
            n = int(match.group(1))
            if n > self.last:  # the tail may hold a marker already counted
                self.last = n
                self.readers.on_record(n, received)
        self.tail = chunk[-TAIL:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.readers.lost += 1
        if not self.ready.done():
            self.ready.set_result(None)
            self.readers.fail(f"closed before the status line: {exc!r}")


async def run(spec: dict[str, Any]) -> None:
    readers = Readers(spec["request"].encode("latin-1"), spec["readers"])
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(spec["gate"])

    async def open_one() -> None:
        async with gate:  # a few at a time: node's listen backlog is 511
            try:
                _, reader = await loop.create_connection(lambda: Reader(readers), spec["host"], spec["port"])
            except OSError as exc:
                readers.fail(f"connect: {exc!r}")
                return
            await reader.ready

    opening = [asyncio.create_task(open_one()) for _ in range(readers.count)]
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        await asyncio.wait_for(stdin.readline(), spec["seconds"])  # "stop", or EOF if the parent died
    except TimeoutError:
        pass
    for task in opening:
        task.cancel()
    emit(
        {
            "arrivals": readers.arrivals,
            "connected": readers.connected,
            "lost": readers.lost,
            "errors": readers.errors,
        }
    )
    reset = struct.pack("ii", 1, 0)
    for transport in readers.transports:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
        transport.abort()


def main() -> int:
    spec = json.loads(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = spec["readers"] + 100
    if soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    asyncio.run(run(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
