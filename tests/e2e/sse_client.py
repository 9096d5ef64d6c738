"""A small, bounded SSE client for the realtime tests: parse events, collect S2 ``batch`` records."""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import requests


@dataclass
class Event:
    name: str
    data: str
    id: str | None = None


@dataclass
class Subscription:
    """What one SSE read returned: its response headers, every event, and the records in batches."""

    status: int
    headers: dict
    events: list[Event] = field(default_factory=list)

    @property
    def records(self) -> list[dict]:
        return [r for e in self.events if e.name == "batch" for r in json.loads(e.data)["records"]]


def iter_events(response: requests.Response) -> Iterator[Event]:
    name, data, event_id = None, [], None
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if name is not None or data:
                yield Event(name or "message", "\n".join(data), event_id)
            name, data, event_id = None, [], None
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line.startswith("id:"):
            event_id = line[3:].strip()


def subscribe(
    url: str,
    headers: dict,
    *,
    stop_after_records: int | None = None,
    timeout: float = 30.0,
    session: requests.Session | None = None,
) -> Subscription:
    """Read an SSE response until it ends, ``stop_after_records`` records arrived, or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    http = session or requests
    with http.get(
        url, headers={"Accept": "text/event-stream", **headers}, stream=True, timeout=timeout
    ) as resp:
        result = Subscription(resp.status_code, dict(resp.headers))
        if resp.status_code != 200:
            result.events.append(Event("http-error", resp.text))
            return result
        for event in iter_events(resp):
            result.events.append(event)
            if stop_after_records is not None and len(result.records) >= stop_after_records:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"SSE read still open after {timeout:.0f} s: {result.events[-3:]}")
    return result
