"""Live-tail wake-ups: an in-process hub, and the feeds that fill it with other processes' appends.

A live reader subscribes to a channel, reads what is there in a short transaction, then waits on
its subscription holding no database connection. Wake-ups reach the hub three ways (an append in
this process also hands over the records it wrote, so readers at the tail need not read them)::

    append in this process ── UnitOfWork.on_commit ─────────────┐
    append anywhere ── pg_notify ── PgTailListener (LISTEN) ─────┼──> WakeupHub ──> Subscription.wait
    SQLite commit elsewhere ── SqliteTailWatcher (data_version) ─┘

One feed runs per process (``start_tail_feed``). Only ``threading`` primitives are used: under
gunicorn's gevent worker they are monkey-patched, so the feed thread and every waiting reader are
greenlets that cost no OS thread.
"""

from __future__ import annotations

import gc
import logging
import select
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import sqlalchemy as sa

from session_core.channels.notices import NOTIFY_CHANNEL, parse_tail_notice
from session_core.channels.records import ReadBatch

logger = logging.getLogger(__name__)

_FIRST_BACKOFF_SECONDS = 0.1


class Subscription:
    """One reader's interest in one channel.

    Subscribe *before* the first read: a wake-up that arrives between that read and ``wait`` is
    then kept, never lost. Use it as a context manager so the hub forgets it afterwards.
    """

    def __init__(self, hub: WakeupHub, key: str) -> None:
        self.key = key
        #: Set by a reader that can take records without waking: called with the records this
        #: process appended up to a new tail, it returns True when it delivered them itself.
        self.deliver_directly: Callable[[ReadBatch], bool] | None = None
        self._hub = hub
        self._known_tail = -1
        #: The tail ``deliver_directly`` took the reader to while it waited (a NOTIFY of the same
        #: append that came first then wakes nobody).
        self._delivered_tail = -1
        self._is_poked = False
        self._written: ReadBatch | None = None
        self._event = threading.Event()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._hub._remove(self)

    def wait(self, tail: int, timeout: float) -> bool:
        """Wait until the channel is known to end past ``tail`` (the tail the caller last read, or
        the one ``deliver_directly`` took it to since).

        Return True when the caller should read again: new records, a feed that reconnected and may
        have missed some, or the hub closing (check ``WakeupHub.is_closed``). Return False when
        ``timeout`` seconds pass without any of these.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._event.clear()
            if self._is_poked or self._known_tail > max(tail, self._delivered_tail) or self._hub.is_closed:
                self._is_poked = False
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._event.wait(remaining)

    def take_written(self, start_seq: int) -> ReadBatch | None:
        """The records this process last appended, if they are what a read from ``start_seq``
        would return now: they start there and reach the newest tail known. Else None: read."""
        written, self._written = self._written, None
        if written is None or not written.records or written.records[0].seq_num != start_seq:
            return None
        return written if written.tail.seq_num >= self._known_tail else None

    def _delivered_directly(self, written: ReadBatch) -> bool:
        """Whether ``deliver_directly`` took ``written``; one that fails leaves it to the reader,
        as it runs after the append committed, which must still be answered as written."""
        assert self.deliver_directly is not None
        try:
            return self.deliver_directly(written)
        except Exception:
            logger.exception("a direct delivery failed; the reader reads the records itself")
            return False

    def _deliver(self, tail: int | None, written: ReadBatch | None = None) -> None:
        """Record a new tail, or with None a poke, and the records written up to the tail if this
        process appended them; only the hub calls this, under its lock."""
        if written is not None and tail is not None and tail >= self._known_tail:
            if self.deliver_directly is not None and self._delivered_directly(written):
                self._known_tail = self._delivered_tail = tail
                return
            self._written = written  # also when a NOTIFY of the same append announced its tail first
        if tail is None:
            self._is_poked = True
        elif tail > self._known_tail:
            self._known_tail = tail
        else:
            return
        self._event.set()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector off while one fan-out runs, as long as it was on.

    Waking ten thousand readers allocates a wake-up per reader that lives until they run: passes
    started during the loop find nothing to free and still cost a fifth of the fan-out. The
    objects are counted all the same, so the pass they call for runs right after the loop.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _deliver_to(
    subscriptions: Iterable[Subscription], tail: int | None, written: ReadBatch | None = None
) -> None:
    with _collector_paused():
        for subscription in subscriptions:
            subscription._deliver(tail, written)


class WakeupHub:
    """Fan tail announcements out to the subscriptions of this process, keyed by channel.

    ``start_feed`` (usually ``start_tail_feed`` bound to an engine) runs on the first subscription,
    so a process that never tails a channel never holds a feed connection.
    """

    def __init__(self, start_feed: Callable[[WakeupHub], TailFeed] | None = None) -> None:
        self._lock = threading.Lock()
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._is_closed = False
        self._start_feed = start_feed
        self._feed: TailFeed | None = None

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    def subscribe(self, key: str) -> Subscription:
        subscription = Subscription(self, key)
        with self._lock:
            if self._feed is None and self._start_feed is not None and not self._is_closed:
                self._feed = self._start_feed(self)
            self._subscriptions.setdefault(key, set()).add(subscription)
        return subscription

    def publish(self, key: str, tail: int | None, written: ReadBatch | None = None) -> None:
        """Wake the subscriptions of ``key`` that have not yet seen ``tail`` (all of them for None);
        ``written`` is the batch of records this process appended up to ``tail``, shared by every
        reader that takes it."""
        with self._lock:
            _deliver_to(self._subscriptions.get(key, ()), tail, written)

    def poke(self, key: str) -> None:
        """Make the subscriptions of ``key`` read again, though its tail did not move."""
        with self._lock:
            _deliver_to(self._subscriptions.get(key, ()), None)

    def poke_all(self) -> None:
        """Make every subscription read again: a feed may have missed announcements."""
        with self._lock:
            for subscriptions in self._subscriptions.values():
                _deliver_to(subscriptions, None)

    def close(self, timeout: float = 5.0) -> None:
        """End live reads now (shutdown), instead of letting them run out their wait; stop the feed."""
        with self._lock:
            self._is_closed = True
            feed, self._feed = self._feed, None
        self.poke_all()
        if feed is not None:
            feed.stop(timeout)

    def subscribed_keys(self) -> list[str]:
        with self._lock:
            return list(self._subscriptions)

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            subscriptions = self._subscriptions.get(subscription.key)
            if subscriptions is not None:
                subscriptions.discard(subscription)
                if not subscriptions:
                    del self._subscriptions[subscription.key]


class TailFeed(Protocol):
    """A per-process source of other processes' appends for a ``WakeupHub``."""

    def start(self) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...

    def wait_ready(self, timeout: float) -> bool: ...


class _BackgroundFeed(ABC):
    """A daemon thread that holds a detached connection and replaces it, with capped backoff, on failure.

    Once following, a feed pokes the hub: announcements made while it was away are gone, so readers
    re-read and lose nothing.
    """

    thread_name = "tail-feed"
    #: How often the feed looks for news (or, for LISTEN, how long one wait for a notice lasts).
    interval_seconds = 1.0

    def __init__(
        self,
        engine: sa.Engine,
        hub: WakeupHub,
        *,
        interval_seconds: float | None = None,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self._engine = engine
        self._hub = hub
        if interval_seconds is not None:
            self.interval_seconds = interval_seconds
        self._max_backoff = max_backoff_seconds
        self._backoff = _FIRST_BACKOFF_SECONDS
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_ready(self, timeout: float) -> bool:
        """Block until the feed is connected and following; False if ``timeout`` passes first."""
        return self._ready.wait(timeout)

    @abstractmethod
    def _follow(self, conn: Any) -> None:
        """Call ``_following()`` once set up, then publish tails until stopping; raise on failure."""

    def _following(self) -> None:
        self._backoff = _FIRST_BACKOFF_SECONDS
        self._ready.set()
        self._hub.poke_all()

    def _run(self) -> None:
        while not self._stopping.is_set():
            # Detached from the pool: a feed holds its connection for the life of the process.
            pooled = None
            try:
                pooled = self._engine.raw_connection()
                driver_connection = pooled.driver_connection
                pooled.detach()
                self._follow(driver_connection)
            except Exception:  # a lost connection or a server restart: log, back off, reconnect
                logger.exception("tail feed failed; reconnecting in %.1fs", self._backoff)
            finally:
                self._ready.clear()
                if pooled is not None:
                    pooled.close()
            self._stopping.wait(self._backoff)
            self._backoff = min(self._backoff * 2, self._max_backoff)


class PgTailListener(_BackgroundFeed):
    """``LISTEN`` for tail notices on a dedicated PostgreSQL connection and publish them to the hub.

    Idle for ``keepalive_seconds``, it runs ``SELECT 1`` so a dead connection is noticed and replaced.
    """

    thread_name = "pg-tail-listener"
    keepalive_seconds = 30.0

    def _follow(self, conn: Any) -> None:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
        self._following()
        quiet_since = time.monotonic()
        while not self._stopping.is_set():
            readable, _, _ = select.select([conn], [], [], self.interval_seconds)
            if readable:
                conn.poll()
                notices, conn.notifies = conn.notifies, []
                for notice in notices:
                    parsed = parse_tail_notice(notice.payload)
                    if parsed is not None:
                        self._hub.publish(*parsed)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= self.keepalive_seconds:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT 1")
                quiet_since = time.monotonic()


class SqliteTailWatcher(_BackgroundFeed):
    """Publish the tails of subscribed channels whenever another connection commits to the SQLite file.

    ``PRAGMA data_version`` changes only after another connection's commit and costs no disk read,
    so polling it every ``interval_seconds`` is cheap; the ``channels`` table is read only then, and
    only for the keys this process's readers follow.
    """

    thread_name = "sqlite-tail-watcher"
    interval_seconds = 0.02
    _KEYS_PER_QUERY = 500

    def _follow(self, conn: Any) -> None:
        self._following()
        seen_version = None
        while not self._stopping.wait(self.interval_seconds):
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version == seen_version:
                continue
            seen_version = version
            keys = self._hub.subscribed_keys()
            for first in range(0, len(keys), self._KEYS_PER_QUERY):
                chunk = keys[first : first + self._KEYS_PER_QUERY]
                placeholders = ",".join("?" * len(chunk))
                query = f"SELECT key, next_seq FROM channels WHERE key IN ({placeholders})"
                rows = conn.execute(query, chunk)
                for key, tail in rows.fetchall():
                    self._hub.publish(key, tail)


def start_tail_feed(engine: sa.Engine, hub: WakeupHub) -> TailFeed:
    """Start this process's feed for ``engine``'s database: LISTEN on PostgreSQL, a watcher on SQLite."""
    feed: _BackgroundFeed
    if engine.dialect.name == "postgresql":
        feed = PgTailListener(engine, hub)
    else:
        feed = SqliteTailWatcher(engine, hub)
    feed.start()
    return feed
