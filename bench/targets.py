"""The two systems under test, each spoken to in its own native protocol.

A workload only needs four things from a server: create an empty stream, append one record, open a
live SSE read from the start, and read the stream back as JSON. Each `Target` maps those onto its
wire: our Trigger-compatible realtime routes (S2 ``batch`` SSE, ``{"data","id"}`` envelopes) and the
Durable Streams protocol (PUT/POST/GET with ``offset`` and ``live=sse``, JSON-mode streams so each
append is one message). Every payload carries its number ``n``, so a subscriber can match a delivery
to the moment its append started, and the marker ``@@n@@`` in its padding, which survives any JSON
escaping, so the raw subscribers of `bench.raw_sse` find it without parsing anything.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp

from bench.sse import Event, events

# Compression would charge gzip CPU to one side only (ours does not compress): ask for raw bytes.
IDENTITY = {"Accept-Encoding": "identity"}
# A bound on JSON read pages, so a server that never says "done" cannot spin the client forever.
MAX_PAGES = 100_000


class BenchError(RuntimeError):
    """A server answered something the benchmark cannot count as a success."""


def make_payload(n: int, size: int) -> bytes:
    """A JSON object of about `size` bytes that carries its sequence number `n`, twice: as ``n`` and
    as the marker ``@@n@@`` that starts its padding."""
    head = f'{{"n":{n},"pad":"@@{n}@@'
    pad = max(0, size - len(head) - 2)
    return (head + "x" * pad + '"}').encode()


@dataclass(frozen=True)
class RawRequest:
    """An SSE read as bytes to send on a bare TCP connection (``bench.raw_sse``'s subscribers)."""

    host: str
    port: int
    request: bytes


def raw_get(url: str, headers: dict[str, str]) -> RawRequest:
    """An HTTP/1.1 GET of `url` with `headers`, as bytes."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return RawRequest(
        parts.hostname or "127.0.0.1", parts.port or 80, ("\r\n".join(lines) + "\r\n\r\n").encode()
    )


async def _check(response: aiohttp.ClientResponse, what: str, ok: tuple[int, ...]) -> None:
    if response.status not in ok:
        body = (await response.text())[:300]
        raise BenchError(f"{what}: HTTP {response.status} {body}")


@dataclass
class Stream:
    """One stream on one target: its name and the URLs derived from it."""

    name: str
    append_url: str
    read_url: str
    # per-writer counters for idempotent producers (Durable Streams' Producer-Seq)
    producer_seq: dict[int, int] = field(default_factory=dict)


class Target:
    """Common interface; see the two subclasses for the wire details."""

    name = "?"
    pid: int | None = None  # the server's PID (ours: the gunicorn master), for the profiler
    cpu_roots: dict[str, int | None] = {}  # process trees whose CPU each workload records

    def __init__(self, base_url: str, idempotent: bool = False) -> None:
        self.base_url = base_url
        self.idempotent = idempotent

    async def create_stream(self, http: aiohttp.ClientSession, name: str) -> Stream:
        raise NotImplementedError

    async def append(self, http: aiohttp.ClientSession, stream: Stream, body: bytes, writer: int) -> None:
        raise NotImplementedError

    async def open_sse(self, http: aiohttp.ClientSession, stream: Stream) -> aiohttp.ClientResponse:
        raise NotImplementedError

    def sse_request(self, stream: Stream) -> RawRequest:
        """The same live read as `open_sse`, as raw bytes for `bench.raw_sse`."""
        raise NotImplementedError

    def numbers(self, event: Event) -> list[int]:
        """The payload numbers carried by a data event (empty for pings and control events)."""
        raise NotImplementedError

    async def read_all_json(self, http: aiohttp.ClientSession, stream: Stream, expected: int) -> int:
        """Read the stream from the start as JSON pages until `expected` records; return the count."""
        raise NotImplementedError

    async def fill(
        self, http: aiohttp.ClientSession, stream: Stream, records: int, size: int, seconds: float
    ) -> int:
        """Write `records` records for the catch-up read, one record per append, 16 writers at once.

        One append per record keeps the reference's file as the throughput test leaves it: a JSON
        array POSTed in one append would become one frame and one SSE event, an easier read.
        """
        numbers = itertools.count()
        deadline = time.perf_counter() + seconds
        written = 0

        async def writer(w: int) -> None:
            nonlocal written
            for n in numbers:
                if n >= records or time.perf_counter() > deadline:
                    return
                await self.append(http, stream, make_payload(n, size), w)
                written += 1

        await asyncio.gather(*(writer(w) for w in range(16)))
        return written

    async def read_all_sse(self, http: aiohttp.ClientSession, stream: Stream, expected: int) -> int:
        """Read the stream from the start over SSE until `expected` records arrived; return the count."""
        count = 0
        response = await self.open_sse(http, stream)
        try:
            async for event in events(response):
                self._raise_on_error(event)
                count += len(self.numbers(event))
                if count >= expected or self._at_end(event):
                    break
        finally:
            response.close()
        return count

    def _raise_on_error(self, event: Event) -> None:
        if event.event == "error":
            raise BenchError(f"{self.name} SSE error event: {event.data[:300]}")

    def _at_end(self, event: Event) -> bool:
        return False


class SessionsTarget(Target):
    """Our server: ``/realtime/v1/sessions/{ref}/out`` with a secret key.

    Every session is created with an ``externalId``; `by_id` addresses it by its ``session_…``
    friendly id instead, the other form a client may use (and, until issue 12, a slower path).
    """

    name = "sessions"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        idempotent: bool = False,
        timeout_seconds: int = 600,
        by_id: bool = False,
    ):
        super().__init__(base_url, idempotent)
        self.auth = {"Authorization": f"Bearer {api_key}"}
        self.timeout_seconds = timeout_seconds
        self.by_id = by_id

    async def create_stream(self, http: aiohttp.ClientSession, name: str) -> Stream:
        body = {
            "type": "bench",
            "externalId": name,
            "taskIdentifier": "bench",
            "triggerConfig": {"basePayload": {}},
        }
        async with http.post(f"{self.base_url}/api/v1/sessions", json=body, headers=self.auth) as response:
            await _check(response, f"create session {name}", (200, 201))
            created = await response.json()
        ref = created["id"] if self.by_id else name
        read_url = f"{self.base_url}/realtime/v1/sessions/{ref}/out"
        return Stream(name, read_url + "/append", read_url)

    async def fill(
        self, http: aiohttp.ClientSession, stream: Stream, records: int, size: int, seconds: float
    ) -> int:
        """Write the catch-up stream through our S2-compatible endpoint, 500 records per append.

        Each record is stored exactly as ``/append`` stores it (one row, the same envelope), so the
        read that follows is the same; batching only spares the fill the per-request cost.
        """
        async with http.put(stream.read_url, headers=self.auth) as response:
            await _check(response, "initialize channel", (202,))
            grant = response.headers
        url = f"{grant['X-S2-Endpoint']}/streams/{quote(grant['X-S2-Stream-Name'], safe='')}/records"
        headers = {"Authorization": f"Bearer {grant['X-S2-Access-Token']}", "S2-Basin": grant["X-S2-Basin"]}
        deadline = time.perf_counter() + seconds
        written = 0
        while written < records and time.perf_counter() < deadline:
            batch = range(written, min(records, written + 500))
            bodies = [
                json.dumps({"data": make_payload(n, size).decode(), "id": uuid.uuid4().hex[:7]})
                for n in batch
            ]
            async with http.post(url, json={"records": [{"body": b} for b in bodies]}, headers=headers) as r:
                await _check(r, "S2 append", (200,))
                await r.read()
            written += len(batch)
        return written

    async def append(self, http: aiohttp.ClientSession, stream: Stream, body: bytes, writer: int) -> None:
        headers = dict(self.auth)
        if self.idempotent:
            headers["X-Part-Id"] = uuid.uuid4().hex
        async with http.post(stream.append_url, data=body, headers=headers) as response:
            await _check(response, "append", (200,))
            await response.read()

    def _sse_headers(self) -> dict[str, str]:
        return {
            **self.auth,
            **IDENTITY,
            "Accept": "text/event-stream",
            "Timeout-Seconds": str(self.timeout_seconds),
        }

    def sse_request(self, stream: Stream) -> RawRequest:
        return raw_get(stream.read_url, self._sse_headers())

    async def open_sse(self, http: aiohttp.ClientSession, stream: Stream) -> aiohttp.ClientResponse:
        response = await http.get(stream.read_url, headers=self._sse_headers())
        if response.status != 200:
            text = (await response.text())[:300]
            response.close()
            raise BenchError(f"sessions SSE: HTTP {response.status} {text}")
        return response

    def numbers(self, event: Event) -> list[int]:
        if event.event != "batch":
            return []
        found = []
        for record in json.loads(event.data).get("records", []):
            body = record.get("body")
            if body:  # control and command records have no body
                envelope = json.loads(body)
                found.append(json.loads(envelope["data"])["n"])
        return found

    async def read_all_json(self, http: aiohttp.ClientSession, stream: Stream, expected: int) -> int:
        count, after = 0, None
        for _ in range(MAX_PAGES):
            params = {} if after is None else {"afterEventId": str(after)}
            async with http.get(
                f"{stream.read_url}/records", params=params, headers={**self.auth, **IDENTITY}
            ) as r:
                await _check(r, "records", (200,))
                records = (await r.json())["records"]
            if not records:
                break
            for record in records:
                json.loads(record["data"])  # the same parse a client does, so both sides pay it
            count += len(records)
            after = records[-1]["seqNum"]
            if count >= expected:
                break
        return count


class DurableStreamsTarget(Target):
    """A Durable Streams server: JSON-mode streams under ``/v1/stream/{name}``. The reference server
    takes no credentials; ours (``--protocol ds``) takes ``api_key`` as a bearer token."""

    name = "durable-streams"

    def __init__(self, base_url: str, idempotent: bool = False, api_key: str | None = None) -> None:
        super().__init__(base_url, idempotent)
        self.auth = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self.json_headers = {**self.auth, "Content-Type": "application/json"}

    async def create_stream(self, http: aiohttp.ClientSession, name: str) -> Stream:
        url = f"{self.base_url}/v1/stream/{name}"
        async with http.put(url, headers=self.json_headers) as response:
            await _check(response, f"create stream {name}", (200, 201))
        return Stream(name, url, url)

    async def append(self, http: aiohttp.ClientSession, stream: Stream, body: bytes, writer: int) -> None:
        headers = dict(self.json_headers)
        if self.idempotent:
            seq = stream.producer_seq.get(writer, 0)
            stream.producer_seq[writer] = seq + 1
            headers.update({"Producer-Id": f"w{writer}", "Producer-Epoch": "0", "Producer-Seq": str(seq)})
        async with http.post(stream.append_url, data=body, headers=headers) as response:
            await _check(response, "append", (200, 204))
            await response.read()

    def sse_request(self, stream: Stream) -> RawRequest:
        query = urlencode({"offset": "-1", "live": "sse"})
        return raw_get(f"{stream.read_url}?{query}", {**self.auth, **IDENTITY, "Accept": "text/event-stream"})

    async def open_sse(self, http: aiohttp.ClientSession, stream: Stream) -> aiohttp.ClientResponse:
        response = await http.get(
            stream.read_url,
            params={"offset": "-1", "live": "sse"},
            headers={**self.auth, **IDENTITY, "Accept": "text/event-stream"},
        )
        if response.status != 200:
            text = (await response.text())[:300]
            response.close()
            raise BenchError(f"durable-streams SSE: HTTP {response.status} {text}")
        return response

    def numbers(self, event: Event) -> list[int]:
        if event.event != "data":
            return []
        return [message["n"] for message in json.loads(event.data)]

    async def read_all_json(self, http: aiohttp.ClientSession, stream: Stream, expected: int) -> int:
        count, offset = 0, "-1"
        for _ in range(MAX_PAGES):
            headers = {**self.auth, **IDENTITY}
            async with http.get(stream.read_url, params={"offset": offset}, headers=headers) as response:
                await _check(response, "read", (200,))
                messages: list[Any] = await response.json(content_type=None)
                offset = response.headers.get("Stream-Next-Offset", offset)
                done = response.headers.get("Stream-Up-To-Date") == "true"
            count += len(messages)
            if done or not messages or count >= expected:
                break
        return count
