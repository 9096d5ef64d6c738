"""In-memory repositories and unit of work: the unit tests' fakes (cosmicpython's ``FakeUnitOfWork``).

They hold what the SQL ones hold in plain dicts of a ``MemoryDatabase``, and pass the same contract
tests for what the services rely on. There are no transactions: a write is visible at once, and
``commit`` only records that it was called and runs the after-commit callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any

from session_core.channels.memory import MemoryChannel, MemoryChannelStore
from session_core.channels.port import ChannelStore
from session_core.channels.records import StreamPosition
from session_core.durable.rules import DsStream, ProducerState, StreamPathTaken
from session_core.errors import Conflict, NotFound
from session_core.ids import is_session_friendly_id
from session_core.models import Environment, EnvironmentSummary, Session, SessionRun, is_run_live
from session_core.repositories.ports import (
    EXTERNAL_ID_TAKEN,
    DurableStreamRepository,
    EnvironmentRepository,
    LaunchRepository,
    PendingLaunch,
    RowLock,
    SessionRepository,
    SessionRunRepository,
    SpentTokenRepository,
)


@dataclass
class MemoryLaunch:
    """One outbox row, as ``run_launches`` holds it."""

    run_id: str
    next_attempt_at: datetime
    attempts: int = 0
    delivered_at: datetime | None = None
    last_error: str | None = None


@dataclass
class MemoryDatabase:
    """Everything the fakes store; one per test, shared by every unit of work made on it."""

    sessions: dict[str, Session] = field(default_factory=dict)
    runs: list[SessionRun] = field(default_factory=list)
    #: Each environment with its API key hash and when it was created.
    environments: dict[str, tuple[Environment, str, datetime]] = field(default_factory=dict)
    channels: dict[str, MemoryChannel] = field(default_factory=dict)
    launches: dict[str, MemoryLaunch] = field(default_factory=dict)
    #: Each spent one-time token's hash with when it expires (epoch seconds).
    spent_tokens: dict[str, int] = field(default_factory=dict)
    ds_streams: dict[str, DsStream] = field(default_factory=dict)
    #: Each Durable Stream producer's state, by (stream id, producer id).
    ds_producers: dict[tuple[str, str], ProducerState] = field(default_factory=dict)


class MemorySessionRepository:
    def __init__(self, db: MemoryDatabase) -> None:
        self._sessions = db.sessions

    def get_by_ref(
        self, environment_id: str, session_ref: str, *, lock: RowLock | None = None
    ) -> Session | None:
        """``SqlSessionRepository.get_by_ref``; ``lock`` is accepted and has nothing to lock here."""
        by_friendly_id = is_session_friendly_id(session_ref)
        return next(
            (
                session
                for session in self._sessions.values()
                if session.environment_id == environment_id
                and (session.friendly_id if by_friendly_id else session.external_id) == session_ref
            ),
            None,
        )

    def get(self, session_id: str) -> Session:
        if session_id not in self._sessions:
            raise NotFound("Session not found")
        return self._sessions[session_id]

    def get_many(self, environment_id: str, ids: Sequence[str]) -> list[Session]:
        found = (self._sessions.get(session_id) for session_id in ids)
        return [s for s in found if s is not None and s.environment_id == environment_id]

    def insert_or_get(self, session: Session) -> Session:
        existing = (
            None
            if session.external_id is None
            else self.get_by_ref(session.environment_id, session.external_id)
        )
        if existing is None:
            self._sessions[session.id] = session
            return session
        if existing.closed_at is None:
            existing = replace(existing, trigger_config=session.trigger_config, updated_at=session.updated_at)
            self._sessions[existing.id] = existing
        return existing

    def update_fields(self, session_id: str, changes: dict[str, Any], now: datetime) -> Session:
        session = self.get(session_id)
        external_id = changes.get("external_id")
        if external_id is not None:
            holder = self.get_by_ref(session.environment_id, external_id)
            if holder is not None and holder.id != session_id:
                raise Conflict(EXTERNAL_ID_TAKEN)
        self._sessions[session_id] = replace(session, **changes, updated_at=now)
        return self._sessions[session_id]

    def close_if_open(self, session_id: str, reason: str | None, now: datetime) -> Session:
        return self.close(session_id, reason, now) or self.get(session_id)

    def close(self, session_id: str, reason: str | None, now: datetime) -> Session | None:
        session = self.get(session_id)
        if session.closed_at is not None:
            return None
        self._sessions[session_id] = replace(session, closed_at=now, closed_reason=reason, updated_at=now)
        return self._sessions[session_id]

    def claim_run(
        self, session_id: str, run_id: str, expected_version: int, expected_run_id: str | None = None
    ) -> bool:
        session = self._sessions.get(session_id)
        if (
            session is None
            or session.current_run_version != expected_version
            or (expected_run_id is not None and session.current_run_id != expected_run_id)
        ):
            return False
        self._sessions[session_id] = replace(
            session, current_run_id=run_id, current_run_version=expected_version + 1
        )
        return True


class MemorySessionRunRepository:
    def __init__(self, db: MemoryDatabase) -> None:
        self._db = db

    def add(self, run: SessionRun) -> None:
        self._db.runs.append(run)

    def get(self, run_id: str) -> SessionRun | None:
        return next((run for run in self._db.runs if run.run_id == run_id), None)

    def list_for_session(self, session_id: str, limit: int) -> list[SessionRun]:
        runs = [run for run in self._db.runs if run.session_id == session_id]
        return sorted(runs, key=lambda run: (run.triggered_at, run.id), reverse=True)[:limit]

    def update_if_running(self, run_id: str, now: datetime, **values: Any) -> SessionRun | None:
        run = self.get(run_id)
        if run is None or not is_run_live(run, now):
            return None
        updated = replace(run, **values)
        self._db.runs[self._db.runs.index(run)] = updated
        return updated

    def get_in_environment(self, environment_id: str, run_id: str) -> SessionRun | None:
        sessions = self._db.sessions
        return next(
            (
                run
                for run in self._db.runs
                if run.run_id == run_id and sessions[run.session_id].environment_id == environment_id
            ),
            None,
        )


class MemoryEnvironmentRepository:
    def __init__(self, db: MemoryDatabase) -> None:
        self._environments = db.environments

    def add(self, environment: Environment, api_key_hash: str, now: datetime) -> None:
        if self.get_by_slug(environment.slug) is not None:
            raise Conflict(f"An environment with slug {environment.slug!r} already exists")
        self._environments[environment.id] = (environment, api_key_hash, now)

    def get(self, environment_id: str) -> Environment | None:
        found = self._environments.get(environment_id)
        return None if found is None else found[0]

    def get_by_api_key_hash(self, api_key_hash: str) -> Environment | None:
        return next((env for env, hashed, _ in self._environments.values() if hashed == api_key_hash), None)

    def get_by_slug(self, slug: str) -> Environment | None:
        return next((env for env, _, _ in self._environments.values() if env.slug == slug), None)

    def list_summaries(self) -> list[EnvironmentSummary]:
        found = sorted(self._environments.values(), key=lambda item: (item[2], item[0].id))
        return [EnvironmentSummary(env.id, env.slug, env.type, created_at) for env, _, created_at in found]

    def replace_api_key(self, environment_id: str, api_key: str, api_key_hash: str) -> None:
        environment, _, created_at = self._environments[environment_id]
        self._environments[environment_id] = (replace(environment, api_key=api_key), api_key_hash, created_at)

    def first(self) -> Environment | None:
        found = self.list_summaries()
        return self.get(found[0].id) if found else None


class MemoryLaunchRepository:
    def __init__(self, db: MemoryDatabase) -> None:
        self._launches = db.launches

    def add(self, launch_id: str, run_id: str, now: datetime) -> None:
        self._launches[launch_id] = MemoryLaunch(run_id, now)

    def _undelivered(self) -> list[tuple[str, MemoryLaunch]]:
        pending = [(id_, row) for id_, row in self._launches.items() if row.delivered_at is None]
        return sorted(pending, key=lambda item: item[1].next_attempt_at)

    def claim_due(self, now: datetime, hold_until: datetime, limit: int) -> list[PendingLaunch]:
        claimed = [(id_, row) for id_, row in self._undelivered() if row.next_attempt_at <= now][:limit]
        for _, row in claimed:
            row.next_attempt_at, row.attempts = hold_until, row.attempts + 1
        return [PendingLaunch(id_, row.run_id, row.attempts) for id_, row in claimed]

    def mark_done(self, launch_id: str, now: datetime, note: str | None = None) -> None:
        row = self._launches.get(launch_id)
        if row is not None:
            row.delivered_at, row.last_error = now, note

    def next_due(self) -> datetime | None:
        pending = self._undelivered()
        return pending[0][1].next_attempt_at if pending else None

    def retry_at(self, launch_id: str, when: datetime, error: str) -> None:
        row = self._launches.get(launch_id)
        if row is not None and row.delivered_at is None:
            row.next_attempt_at, row.last_error = when, error[:1000]


class MemorySpentTokenRepository:
    def __init__(self, db: MemoryDatabase) -> None:
        self._spent = db.spent_tokens

    def spend(self, token_hash: str, expires_at: int, now: int) -> bool:
        for expired in [hashed for hashed, expiry in self._spent.items() if expiry < now]:
            del self._spent[expired]
        if token_hash in self._spent:
            return False
        self._spent[token_hash] = expires_at
        return True


class MemoryDurableStreams:
    """``SqlDurableStreams`` over dicts; ``lock`` is accepted and has nothing to lock here."""

    def __init__(self, db: MemoryDatabase) -> None:
        self._db = db

    def get(self, environment_id: str, path: str, *, lock: bool = False) -> DsStream | None:
        found = self._db.ds_streams.values()
        return next((s for s in found if (s.environment_id, s.path) == (environment_id, path)), None)

    def get_by_id(self, stream_id: str, *, lock: bool = False) -> DsStream | None:
        return self._db.ds_streams.get(stream_id)

    def insert(self, stream: DsStream, next_seq: int) -> None:
        if self.get(stream.environment_id, stream.path) is not None:
            raise StreamPathTaken()
        self._db.ds_streams[stream.id] = stream
        self._db.channels[stream.key] = MemoryChannel(tail=StreamPosition(next_seq, 0))

    def save(self, stream: DsStream) -> DsStream:
        self._db.ds_streams[stream.id] = stream
        return stream

    def touch(self, stream: DsStream, now_ms: int) -> DsStream:
        if stream.ttl_seconds is None or stream.last_access_ms >= now_ms:
            return stream
        return self.save(replace(stream, last_access_ms=now_ms))

    def remove(self, stream: DsStream) -> None:
        self._db.channels.pop(stream.key, None)
        for key in [key for key in self._db.ds_producers if key[0] == stream.id]:
            del self._db.ds_producers[key]
        self._db.ds_streams.pop(stream.id, None)

    def producer(self, stream_id: str, producer_id: str) -> ProducerState | None:
        return self._db.ds_producers.get((stream_id, producer_id))

    def save_producer(self, stream_id: str, producer_id: str, state: ProducerState, now_ms: int) -> None:
        self._db.ds_producers[(stream_id, producer_id)] = state


class MemoryUnitOfWork:
    """A unit of work over a ``MemoryDatabase``, with the repositories the SQL one has."""

    def __init__(self, db: MemoryDatabase | None = None) -> None:
        self.db = db or MemoryDatabase()
        # Typed as the ports, so the type checker holds the fakes to them.
        self.sessions: SessionRepository = MemorySessionRepository(self.db)
        self.runs: SessionRunRepository = MemorySessionRunRepository(self.db)
        self.environments: EnvironmentRepository = MemoryEnvironmentRepository(self.db)
        self.launches: LaunchRepository = MemoryLaunchRepository(self.db)
        self.spent_tokens: SpentTokenRepository = MemorySpentTokenRepository(self.db)
        self.ds: DurableStreamRepository = MemoryDurableStreams(self.db)
        #: The channel keys whose live readers a committed change woke (``wake_readers``).
        self.woken: list[str] = []
        self.channels: ChannelStore = MemoryChannelStore(self.db.channels, self.sessions.get_by_ref)
        self.commits = 0
        self._after_commit: list[Callable[[], None]] = []

    def autocommitting(self) -> MemoryUnitOfWork:
        return self

    def __enter__(self) -> MemoryUnitOfWork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._after_commit = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def wake_readers(self, key: str) -> None:
        """Record, once committed, that channel ``key``'s live readers would be woken."""
        self.on_commit(lambda: self.woken.append(key))

    def commit(self) -> None:
        self.commits += 1
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()
