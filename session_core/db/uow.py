"""UnitOfWork: one database transaction with the repositories bound to it.

Leaving the ``with`` block without ``commit()`` rolls back, so a use case that raises half way
leaves nothing half-written. Callbacks registered with ``on_commit`` run only after the commit
succeeded (live-tail wake-ups use it: a subscriber must never be woken for a record it cannot read).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import sqlalchemy as sa

from session_core.repositories.sql import (
    SqlEnvironmentRepository,
    SqlSessionRepository,
    SqlSessionRunRepository,
)
from session_core.streams.store import SqlChannelStore
from session_core.streams.wakeups import WakeupHub


class UnitOfWork:
    sessions: SqlSessionRepository
    environments: SqlEnvironmentRepository
    runs: SqlSessionRunRepository
    channels: SqlChannelStore

    def __init__(self, engine: sa.Engine, hub: WakeupHub | None = None, *, read_only: bool = False) -> None:
        """``read_only`` units of work begin a deferred transaction on SQLite, so readers never
        queue behind writers for the write lock; writes through one are a bug, not a feature."""
        self._engine = engine
        self._hub = hub
        self._read_only = read_only
        self._after_commit: list[Callable[[], None]] = []

    def __enter__(self) -> UnitOfWork:
        self._conn = self._engine.connect().execution_options(read_only=self._read_only)
        self._tx = self._conn.begin()
        self._after_commit = []
        self.sessions = SqlSessionRepository(self._conn)
        self.environments = SqlEnvironmentRepository(self._conn)
        self.runs = SqlSessionRunRepository(self._conn)
        self.channels = SqlChannelStore(self._conn, on_appended=self._wake_readers_after_commit)
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
        finally:
            self._conn.close()

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed."""
        self._after_commit.append(callback)

    def _wake_readers_after_commit(self, key: str, tail: int) -> None:
        hub = self._hub
        if hub is not None:
            self.on_commit(lambda: hub.publish(key, tail))

    def commit(self) -> None:
        self._tx.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()


UnitOfWorkFactory = Callable[[], UnitOfWork]
