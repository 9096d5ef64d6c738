"""UnitOfWork: one database transaction with the repositories bound to it.

Leaving the ``with`` block without ``commit()`` rolls back, so a use case that raises half way
leaves nothing half-written. Callbacks registered with ``on_commit`` run only after the commit
succeeded (live-tail wake-ups use it: a subscriber must never be woken for a record it cannot read).

On PostgreSQL the transaction is run by hand, to spare round trips: every one costs a wake-up of
the server and of this worker, which on a busy machine is more than the statement itself. psycopg2
would send ``BEGIN`` on its own, and a pool would send ``ROLLBACK`` after a read. Instead the
connection is in autocommit mode; a writing unit of work sends ``BEGIN`` in the same query string
as its first statement and ends with ``COMMIT`` or ``ROLLBACK``, and a read-only one sends no
transaction control at all (under READ COMMITTED every statement takes a fresh snapshot either way,
and readers take no locks).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from session_core.repositories.sql import (
    SqlEnvironmentRepository,
    SqlSessionRepository,
    SqlSessionRunRepository,
)
from session_core.streams.store import SqlChannelStore
from session_core.streams.wakeups import WakeupHub

#: ``Connection.info`` flags: ``BEGIN`` is still to be sent / a transaction is open on the server.
_BEGIN_PENDING = "sessions_begin_pending"
_IN_TRANSACTION = "sessions_in_transaction"
_engines_sending_begin: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_engines_lock = threading.Lock()


def _send_begin_with_first_statement(
    conn: sa.Connection, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    """Put a pending ``BEGIN`` in front of the transaction's first statement: one round trip, not two."""
    if not conn.info.pop(_BEGIN_PENDING, False):
        return statement, parameters
    conn.info[_IN_TRANSACTION] = True  # before running it: even a failed statement needs the ROLLBACK
    if executemany:
        cursor.execute("BEGIN")
        return statement, parameters
    return "BEGIN; " + statement, parameters


def _send_begin_on(engine: sa.Engine) -> None:
    with _engines_lock:
        if engine not in _engines_sending_begin:
            sa.event.listen(engine, "before_cursor_execute", _send_begin_with_first_statement, retval=True)
            _engines_sending_begin.add(engine)


class UnitOfWork:
    sessions: SqlSessionRepository
    environments: SqlEnvironmentRepository
    runs: SqlSessionRunRepository
    channels: SqlChannelStore

    def __init__(
        self,
        engine: sa.Engine,
        hub: WakeupHub | None = None,
        *,
        read_only: bool = False,
        autocommit: bool = False,
    ) -> None:
        """``read_only`` units of work begin a deferred transaction on SQLite, so readers never
        queue behind writers for the write lock; writes through one are a bug, not a feature.

        ``autocommit`` ones begin no transaction on PostgreSQL: each statement commits when it
        ends (a query string of several, as the channel store sends, is one implicit transaction),
        which spares the round trip of a COMMIT. Only for use cases whose every write stands on
        its own; ``commit()`` then only runs the after-commit callbacks. SQLite ignores it.
        """
        self._engine = engine
        self._hub = hub
        self._read_only = read_only
        self._autocommit = autocommit
        self._after_commit: list[Callable[[], None]] = []

    def autocommitting(self) -> UnitOfWork:
        """A unit of work like this one, but ``autocommit`` (see ``__init__``)."""
        return UnitOfWork(self._engine, self._hub, autocommit=True)

    def __enter__(self) -> UnitOfWork:
        conn = self._engine.connect()
        self._by_hand = conn.dialect.name == "postgresql"
        if self._by_hand:
            _send_begin_on(self._engine)
            # Set on the driver, not through SQLAlchemy's isolation_level: resetting that one on
            # check-in pins READ COMMITTED, after which psycopg2 sends a SET at every switch.
            conn.connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            conn.info[_BEGIN_PENDING] = not (self._read_only or self._autocommit)
        self._conn = conn.execution_options(read_only=self._read_only)
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
            if self._by_hand:
                self._end_by_hand("ROLLBACK")
                self._leave_autocommit()
            if self._tx.is_active:
                self._tx.rollback()
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

    def _end_by_hand(self, command: str) -> None:
        """Send ``COMMIT`` or ``ROLLBACK`` if a transaction was begun; a failed ROLLBACK drops the
        connection, which must never go back to the pool inside an unknown transaction."""
        if self._conn.invalidated:  # the server's side of the transaction went with the connection
            return
        info = self._conn.info
        info.pop(_BEGIN_PENDING, None)
        if not info.pop(_IN_TRANSACTION, False):
            return
        if command == "COMMIT":
            self._conn.exec_driver_sql(command)
            return
        try:
            self._conn.exec_driver_sql(command)
        except sa.exc.SQLAlchemyError:
            self._conn.invalidate()

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed."""
        self._after_commit.append(callback)

    def _wake_readers_after_commit(self, key: str, tail: int) -> None:
        hub = self._hub
        if hub is not None:
            self.on_commit(lambda: hub.publish(key, tail))

    def commit(self) -> None:
        if self._by_hand:
            self._end_by_hand("COMMIT")
        self._tx.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()


UnitOfWorkFactory = Callable[[], UnitOfWork]
