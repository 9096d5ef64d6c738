"""Group commit: concurrent writes to one key become one transaction, each caller getting its own outcome.

Sixteen writers appending to one channel would otherwise queue one by one on the channel's row lock,
each paying a whole transaction (statements, commit, fsync) while holding it. Here the first caller
for a key becomes its leader and runs its item at once; callers arriving meanwhile queue. When the
leader is done it answers its batch and hands the queue to the first caller waiting, who runs all of
it as the next batch. With no contention a batch is the one caller's item, run straight away.

Only ``threading`` primitives are used: under gunicorn's gevent worker they are greenlet-aware.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar, cast

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class _Waiter(Generic[T, R]):
    def __init__(self, item: T, size: int) -> None:
        self.item = item
        self.size = size
        self.wake = threading.Event()
        self.batch: list[_Waiter[T, R]] | None = None  # set when this waiter is made the next leader
        self.outcome: R | BaseException | None = None
        self.is_done = False


class GroupCommit(Generic[K, T, R]):
    """Run concurrent items with the same key in batches, one batch at a time per key.

    A batch holds at most ``max_items`` items and, beyond its first item, at most ``max_size``
    (the sum of the sizes callers give, e.g. body bytes), so one transaction stays bounded.
    """

    def __init__(self, max_items: int = 64, max_size: int = 4 * 1024 * 1024) -> None:
        self._max_items = max_items
        self._max_size = max_size
        self._lock = threading.Lock()
        #: Keys with a batch running, each with the callers queued behind it.
        self._queues: dict[K, list[_Waiter[T, R]]] = {}

    def submit(
        self, key: K, item: T, run: Callable[[list[T]], Sequence[R | BaseException]], size: int = 0
    ) -> R:
        """Return ``item``'s result once the batch holding it has run (and, for a write, committed).

        ``run`` gets the batch's items in arrival order and returns one outcome per item; the
        caller that leads a batch runs it with its own ``run``, so every caller of a key must
        pass an equivalent one. An exception raised by ``run`` is every item's outcome.

        :raise BaseException: this item's error outcome.
        """
        waiter: _Waiter[T, R] = _Waiter(item, size)
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                self._queues[key] = []
                waiter.batch = [waiter]
            else:
                queue.append(waiter)
        if waiter.batch is None:
            waiter.wake.wait()
        if not waiter.is_done:
            self._lead(key, cast(list[_Waiter[T, R]], waiter.batch), run)
        if isinstance(waiter.outcome, BaseException):
            raise waiter.outcome
        return cast(R, waiter.outcome)

    def _lead(
        self, key: K, batch: list[_Waiter[T, R]], run: Callable[[list[T]], Sequence[R | BaseException]]
    ) -> None:
        """Run ``batch``, answer it, and hand the key's queue on to its next leader (or forget the key)."""
        try:
            outcomes: Sequence[R | BaseException] = run([waiter.item for waiter in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} items got {len(outcomes)} outcomes")
        except BaseException as error:  # the batch failed as a whole: every item shares the error
            outcomes = [error] * len(batch)
        finally:
            next_batch = self._next_batch(key)
        for waiter, outcome in zip(batch, outcomes, strict=True):
            waiter.outcome = outcome
            waiter.is_done = True
            waiter.wake.set()
        if next_batch:
            next_batch[0].batch = next_batch
            next_batch[0].wake.set()

    def _next_batch(self, key: K) -> list[_Waiter[T, R]]:
        """Take the next batch off ``key``'s queue, or forget the key when nobody is waiting."""
        with self._lock:
            queue = self._queues[key]
            if not queue:
                del self._queues[key]
                return []
            taken, total = 1, queue[0].size
            while (
                taken < len(queue) and taken < self._max_items and total + queue[taken].size <= self._max_size
            ):
                total += queue[taken].size
                taken += 1
            batch = queue[:taken]
            del queue[:taken]
            return batch
