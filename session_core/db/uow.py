"""UnitOfWork: one database transaction with the repositories bound to it.

Leaving the ``with`` block without ``commit()`` rolls back, so a use case that raises half way
leaves nothing half-written. Callbacks registered with ``on_commit`` run only after the commit
succeeded (live-tail wake-ups use it: a subscriber must never be woken for a record it cannot read).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import sqlalchemy as sa

from session_core.channels.notices import NOTIFY_CHANNEL, poke_notice
from session_core.channels.records import ReadBatch
from session_core.channels.store import SqlChannelStore
from session_core.channels.wakeups import WakeupHub
from session_core.durable.store import SqlDurableStreams
from session_core.repositories.ports import AbstractUnitOfWork
from session_core.repositories.sql import (
    SqlEnvironmentRepository,
    SqlLaunchRepository,
    SqlSessionRepository,
    SqlSessionRunRepository,
    SqlSpentTokenRepository,
)

_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")


class UnitOfWork(AbstractUnitOfWork):
    """The SQL unit of work; ``repositories.memory.MemoryUnitOfWork`` is the unit tests' stand-in."""

    def __init__(
        self,
        engine: sa.Engine,
        hub: WakeupHub | None = None,
        *,
        read_only: bool = False,
        autocommit: bool = False,
        pg_prepare: bool = True,
    ) -> None:
        """``read_only`` units of work begin a deferred transaction on SQLite, so readers never
        queue behind writers for the write lock; writes through one are a bug, not a feature.

        On PostgreSQL, ``read_only`` and ``autocommit`` ones run without a transaction: each
        statement commits when it ends (a query string of several, as the channel store sends, is
        one implicit transaction), which spares the round trips of BEGIN and COMMIT or ROLLBACK.
        Under READ COMMITTED every statement takes a fresh snapshot either way. ``autocommit`` is
        only for use cases whose every write stands on its own; ``commit()`` then only runs the
        after-commit callbacks. ``pg_prepare`` is ``Settings.pg_prepare``, for the channel store.
        """
        self._engine = engine
        self._hub = hub
        self._read_only = read_only
        self._autocommit = autocommit
        self._pg_prepare = pg_prepare
        self._after_commit: list[Callable[[], None]] = []

    def autocommitting(self) -> UnitOfWork:
        """A unit of work like this one, but ``autocommit`` (see ``__init__``)."""
        return UnitOfWork(self._engine, self._hub, autocommit=True, pg_prepare=self._pg_prepare)

    def __enter__(self) -> UnitOfWork:
        conn = self._engine.connect()
        self._driver_autocommits = conn.dialect.name == "postgresql" and (self._read_only or self._autocommit)
        if self._driver_autocommits:
            # Set on the driver, not through SQLAlchemy's isolation_level: resetting that one on
            # check-in pins READ COMMITTED, after which psycopg2 sends a SET at every switch.
            conn.connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        self._conn = conn.execution_options(read_only=self._read_only)
        self._tx = self._conn.begin()
        self._after_commit = []
        self.sessions = SqlSessionRepository(self._conn)
        self.environments = SqlEnvironmentRepository(self._conn)
        self.runs = SqlSessionRunRepository(self._conn)
        self.spent_tokens = SqlSpentTokenRepository(self._conn)
        self.launches = SqlLaunchRepository(self._conn)
        self.channels = SqlChannelStore(
            self._conn, on_appended=self._wake_readers_after_commit, prepare=self._pg_prepare
        )
        self.ds = SqlDurableStreams(self._conn)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._tx.is_active:
                self._tx.rollback()
            if self._driver_autocommits:
                self._leave_autocommit()
        finally:
            self._conn.close()

    def _leave_autocommit(self) -> None:
        """Hand the connection back to the pool as it was lent: outside autocommit."""
        if self._conn.invalidated:
            return
        try:
            self._conn.connection.dbapi_connection.autocommit = False  # type: ignore[union-attr]
        except self._conn.dialect.loaded_dbapi.Error:  # it broke meanwhile: drop it, never pool it
            self._conn.invalidate()

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed."""
        self._after_commit.append(callback)

    def _wake_readers_after_commit(self, key: str, written: ReadBatch) -> None:
        hub = self._hub
        if hub is not None:
            self.on_commit(lambda: hub.publish(key, written.tail.seq_num, written))

    def wake_readers(self, key: str) -> None:
        """Once committed, make the live readers of channel ``key`` read again (a state change that
        writes no record, such as closing a Durable Stream): this process's at once, and on
        PostgreSQL every other process's through the NOTIFY their tail feeds listen to."""
        if self._conn.dialect.name == "postgresql":
            self._conn.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL, "payload": poke_notice(key)})
        hub = self._hub
        if hub is not None:
            self.on_commit(lambda: hub.poke(key))

    def commit(self) -> None:
        self._tx.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()
