"""Repository ports: what the services need from storage, named for the use, not for CRUD.

``repositories/sql.py`` implements them for SQLite and PostgreSQL, ``repositories/memory.py`` for
the unit tests; the unit of work exposes them (``uow.sessions``, ``uow.runs``, ``uow.environments``,
``uow.launches``, ``uow.spent_tokens``, ``uow.ds``) typed as these protocols, so a use case can only call what
every implementation has. ``tests/integration/test_repository_contract.py`` holds them to one contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Protocol

from session_core.channels.port import ChannelStore
from session_core.cursors import SessionKey
from session_core.durable.rules import DsStream, ProducerState
from session_core.models import Environment, EnvironmentSummary, Session, SessionRun, SessionStatus

Direction = Literal["forward", "backward"]
#: The ``Conflict`` message of every ``SessionRepository`` when an externalId is taken.
EXTERNAL_ID_TAKEN = "A session with this externalId already exists in this environment"
#: A row lock a read may take: ``share`` for a transaction that only reads the row and must keep it
#: as read until it commits, ``update`` for one that will write it (see ``get_by_ref``).
RowLock = Literal["share", "update"]


@dataclass(frozen=True)
class SessionFilters:
    """The list filters of wire reference §5; empty tuples mean "no filter"."""

    types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    task_identifiers: tuple[str, ...] = ()
    external_ids: tuple[str, ...] = ()
    statuses: tuple[SessionStatus, ...] = ()
    created_from: datetime | None = None
    created_to: datetime | None = None


@dataclass(frozen=True)
class SessionListQuery:
    """One page request: keys strictly past ``cursor`` in ``direction``, at most ``limit`` of them.

    ``forward`` walks newest to oldest (``created_at DESC, id DESC``); ``backward`` walks oldest
    to newest from the cursor and the service reverses the page.
    """

    organization_id: str
    project_id: str
    environment_id: str
    filters: SessionFilters = field(default_factory=SessionFilters)
    direction: Direction = "forward"
    cursor: SessionKey | None = None
    limit: int = 21


class SessionLister(Protocol):
    """List, count and tag queries; backed by SQL or by ClickHouse with identical semantics."""

    def list_keys(self, query: SessionListQuery, now: datetime) -> list[SessionKey]: ...

    def count(self, query: SessionListQuery, now: datetime) -> int: ...

    def list_tags(
        self, organization_id: str, project_id: str, environment_id: str, query: str | None, limit: int
    ) -> list[str]: ...


class SessionRepository(Protocol):
    def get_by_ref(
        self, environment_id: str, session_ref: str, *, lock: RowLock | None = None
    ) -> Session | None: ...

    def get(self, session_id: str) -> Session: ...

    def get_many(self, environment_id: str, ids: Sequence[str]) -> list[Session]: ...

    def insert_or_get(self, session: Session) -> Session: ...

    def update_fields(self, session_id: str, changes: dict[str, Any], now: datetime) -> Session: ...

    def close_if_open(self, session_id: str, reason: str | None, now: datetime) -> Session: ...

    def close(self, session_id: str, reason: str | None, now: datetime) -> Session | None: ...

    def claim_run(
        self, session_id: str, run_id: str, expected_version: int, expected_run_id: str | None = None
    ) -> bool: ...


class SessionRunRepository(Protocol):
    def add(self, run: SessionRun) -> None: ...

    def get(self, run_id: str) -> SessionRun | None: ...

    def list_for_session(self, session_id: str, limit: int) -> list[SessionRun]: ...

    def update_if_running(self, run_id: str, now: datetime, **values: Any) -> SessionRun | None: ...

    def get_in_environment(self, environment_id: str, run_id: str) -> SessionRun | None: ...


class EnvironmentRepository(Protocol):
    def add(self, environment: Environment, api_key_hash: str, now: datetime) -> None: ...

    def get(self, environment_id: str) -> Environment | None: ...

    def get_by_api_key_hash(self, api_key_hash: str) -> Environment | None: ...

    def get_by_slug(self, slug: str) -> Environment | None: ...

    def list_summaries(self) -> list[EnvironmentSummary]: ...

    def replace_api_key(self, environment_id: str, api_key: str, api_key_hash: str) -> None: ...

    def first(self) -> Environment | None: ...


@dataclass(frozen=True)
class PendingLaunch:
    """An outbox row due for delivery: the launch's stable id, its run, and its attempts so far."""

    id: str
    run_id: str
    attempts: int


class LaunchRepository(Protocol):
    """The launch outbox (``run_launches``): a row is added with its run and claimed by dispatchers."""

    def add(self, launch_id: str, run_id: str, now: datetime) -> None: ...

    def claim_due(self, now: datetime, hold_until: datetime, limit: int) -> list[PendingLaunch]:
        """Take up to ``limit`` undelivered launches due at ``now``, hiding them until ``hold_until``."""
        ...

    def mark_done(self, launch_id: str, now: datetime, note: str | None = None) -> None:
        """Take the launch off the outbox: delivered, or (with ``note``) given up as pointless."""
        ...

    def next_due(self) -> datetime | None:
        """When the earliest undelivered launch falls due (None: the outbox is empty)."""
        ...

    def retry_at(self, launch_id: str, when: datetime, error: str) -> None:
        """Make an undelivered launch due again at ``when``, keeping ``error`` as its last."""
        ...


class SpentTokenRepository(Protocol):
    def spend(self, token_hash: str, expires_at: int, now: int) -> bool:
        """Mark a one-time token used; True only for the first use, however many race."""
        ...


class DurableStreamRepository(Protocol):
    """Durable Streams' configuration and producer state; a stream's records are channel records
    under ``DsStream.key``. ``lock=True`` reads hold the stream's row until the transaction ends."""

    def get(self, environment_id: str, path: str, *, lock: bool = False) -> DsStream | None: ...

    def get_by_id(self, stream_id: str, *, lock: bool = False) -> DsStream | None: ...

    def insert(self, stream: DsStream, next_seq: int) -> None:
        """Add ``stream`` and its channel, whose first record will get seq_num ``next_seq``.

        :raise StreamPathTaken: a stream already holds the path.
        """
        ...

    def save(self, stream: DsStream) -> DsStream:
        """Write ``stream``'s state over what is stored, and return it."""
        ...

    def touch(self, stream: DsStream, now_ms: int) -> DsStream:
        """Restart a sliding TTL; streams without one are not written to."""
        ...

    def remove(self, stream: DsStream) -> None:
        """Delete the stream, its records, its channel and its producers' state."""
        ...

    def producer(self, stream_id: str, producer_id: str) -> ProducerState | None: ...

    def save_producer(self, stream_id: str, producer_id: str, state: ProducerState, now_ms: int) -> None: ...


class AbstractUnitOfWork(Protocol):
    """One transaction over the repositories and the channel store: what every use case takes.

    ``db.uow.UnitOfWork`` is the SQL one, ``repositories.memory.MemoryUnitOfWork`` the unit tests'
    (cosmicpython's fake unit of work). Use it as a context manager; nothing is kept unless
    ``commit`` is called inside it.
    """

    sessions: SessionRepository
    environments: EnvironmentRepository
    runs: SessionRunRepository
    launches: LaunchRepository
    channels: ChannelStore
    spent_tokens: SpentTokenRepository
    ds: DurableStreamRepository

    def __enter__(self) -> AbstractUnitOfWork: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def autocommitting(self) -> AbstractUnitOfWork:
        """A unit of work like this one whose every statement commits on its own."""

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed."""

    def wake_readers(self, key: str) -> None:
        """Once committed, make the live readers of channel ``key`` read again."""

    def commit(self) -> None: ...


UnitOfWorkFactory = Callable[[], AbstractUnitOfWork]
