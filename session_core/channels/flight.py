"""Single flight: callers that ask the same question at the same time share one answer.

When an append wakes a thousand live readers of one channel, they all want the same batch; one
database read serves them all instead of a thousand. A caller that joins a read already under way
may get an answer from just before its wake-up; its subscription still knows the newer tail, so it
simply reads again and loses nothing. A wake-up that moves no tail (a Durable Stream closed or
deleted) leaves nothing to compare: that reader reads again alone (``session_web.durable``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    value: V  # set by the leader before ``done``, unless ``error`` is

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


class SingleFlight(Generic[K, V]):
    """Run ``compute`` once per ``key`` among concurrent callers; every caller gets its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[K, _Flight[V]] = {}

    def do(self, key: K, compute: Callable[[], V]) -> V:
        """Return ``compute()``, or the result of the identical call already running.

        An exception from ``compute`` is raised to every caller that shared the flight.
        """
        with self._lock:
            flight = self._flights.get(key)
            is_leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not is_leader:
            flight.done.wait()
        else:
            try:
                flight.value = compute()
            except BaseException as error:
                flight.error = error
            finally:
                with self._lock:
                    del self._flights[key]
                flight.done.set()
        if flight.error is not None:
            raise flight.error
        return flight.value
