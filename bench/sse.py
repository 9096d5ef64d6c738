"""A small server-sent-events reader that stamps each event with the time its bytes arrived.

Both servers speak SSE, in different dialects (S2 ``batch`` events for ours, ``data``/``control``
for Durable Streams); this module only splits the byte stream into events. The arrival time is taken
when the chunk is read from the socket, before any JSON parsing, so parsing cost in this client is
not charged to the server.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp


@dataclass(slots=True)
class Event:
    """One SSE event: its type (``message`` when absent), joined data lines, id, and arrival time."""

    event: str
    data: str
    id: str | None
    received: float


def parse_block(block: bytes, received: float) -> Event | None:
    """Parse one event block (the text between blank lines); None for comments and empty blocks."""
    event, data, event_id = "message", [], None
    for line in block.decode().split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
    if not data and event == "message":
        return None
    return Event(event, "\n".join(data), event_id, received)


async def events(response: aiohttp.ClientResponse, max_bytes: int = 1 << 30) -> AsyncIterator[Event]:
    """Yield events until the body ends or `max_bytes` were read (a bound against runaway streams)."""
    buffer = b""
    total = 0
    while total < max_bytes:
        chunk = await response.content.readany()
        if not chunk:
            return
        received = time.perf_counter()
        total += len(chunk)
        buffer += chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            block, buffer = buffer[:end], buffer[end + 2 :]
            parsed = parse_block(block, received)
            if parsed is not None:
                yield parsed
