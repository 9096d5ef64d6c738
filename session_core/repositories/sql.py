"""SQLAlchemy Core repositories for SQLite and PostgreSQL.

Where the dialects differ (upsert, array overlap, row locks) the difference sits in one small
private function. Integrity errors become domain ``Conflict``s: no database message reaches a client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from session_core.cursors import SessionKey
from session_core.db.tables import environments, run_launches, session_runs, sessions, spent_tokens
from session_core.errors import Conflict, NotFound
from session_core.ids import is_session_friendly_id
from session_core.models import (
    Environment,
    EnvironmentSummary,
    EnvironmentType,
    RunReason,
    RunStatus,
    Session,
    SessionRun,
    SessionStatus,
)
from session_core.repositories.ports import (
    EXTERNAL_ID_TAKEN,
    PendingLaunch,
    RowLock,
    SessionFilters,
    SessionListQuery,
)
from session_core.text import is_storable


def _is_postgres(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _in(column: sa.ColumnElement[str], values: tuple[str, ...]) -> sa.ColumnElement[bool]:
    """``column IN values``, leaving out values no row can hold (an empty IN matches nothing)."""
    return column.in_([value for value in values if is_storable(value)])


#: The ``sessions`` columns, in order: ``session_from_columns`` reads these out of any row holding them.
SESSION_COLUMNS = tuple(sessions.c.keys())


def session_from_columns(values: Mapping[Any, Any]) -> Session:
    """The session in a row's ``sessions`` columns; other columns of the row are left alone."""
    fields = {name: values[name] for name in SESSION_COLUMNS}
    fields["tags"] = list(fields["tags"] or [])
    return Session(**fields)


_TIMESTAMP_COLUMNS = tuple(column.name for column in sessions.c if isinstance(column.type, sa.DateTime))


def session_from_json(values: Mapping[str, Any]) -> Session:
    """The session in PostgreSQL's ``to_jsonb`` of a ``sessions`` row: the same fields as
    ``session_from_columns``, its timestamps read back from their ISO text."""
    fields = {name: values[name] for name in SESSION_COLUMNS}
    for name in _TIMESTAMP_COLUMNS:
        if fields[name] is not None:
            fields[name] = datetime.fromisoformat(fields[name])
    fields["tags"] = list(fields["tags"] or [])
    return Session(**fields)


def _to_session(row: sa.Row[Any]) -> Session:
    return session_from_columns(row._mapping)


def _by_ref(column: sa.ColumnElement[str], *, lock: RowLock | None) -> sa.Select[Any]:
    query = sa.select(sessions).where(
        sessions.c.environment_id == sa.bindparam("environment_id"), column == sa.bindparam("ref")
    )
    # SQLite renders neither lock: its writers already hold the database's write lock.
    if lock == "share":
        return query.with_for_update(read=True)
    # FOR NO KEY UPDATE: what the UPDATE that follows takes anyway, and no more (inserts of rows
    # that reference the session, which take FOR KEY SHARE, still go ahead).
    return query.with_for_update(key_share=True) if lock == "update" else query


# Every append and read looks a session up: built once, not per call (keyed by friendly id, lock).
_BY_REF: dict[tuple[bool, RowLock | None], sa.Select[Any]] = {
    (is_friendly, lock): _by_ref(sessions.c.friendly_id if is_friendly else sessions.c.external_id, lock=lock)
    for is_friendly in (True, False)
    for lock in ("share", "update", None)
}


class SqlSessionRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def get_by_ref(
        self, environment_id: str, session_ref: str, *, lock: RowLock | None = None
    ) -> Session | None:
        """Find a session by friendly id or externalId within one environment.

        ``lock="share"`` takes a shared row lock on PostgreSQL so a concurrent close waits for this
        transaction (an append that saw the session open commits before the close does). A
        transaction holding it must not write the row: two that both did would each wait for the
        other's shared lock, a deadlock. One that will write the row takes ``lock="update"`` first,
        so writers queue on the lock instead.
        """
        if not is_storable(session_ref):
            return None
        query = _BY_REF[is_session_friendly_id(session_ref), lock]
        row = self._conn.execute(query, {"environment_id": environment_id, "ref": session_ref}).first()
        return _to_session(row) if row else None

    def get(self, session_id: str) -> Session:
        row = self._conn.execute(sa.select(sessions).where(sessions.c.id == session_id)).first()
        if row is None:
            raise NotFound("Session not found")
        return _to_session(row)

    def get_many(self, environment_id: str, ids: Sequence[str]) -> list[Session]:
        if not ids:
            return []
        query = sa.select(sessions).where(
            sessions.c.environment_id == environment_id, sessions.c.id.in_(list(ids))
        )
        return [_to_session(row) for row in self._conn.execute(query)]

    def insert_or_get(self, session: Session) -> Session:
        """Insert ``session``; with an externalId already taken, return the existing row instead.

        The existing row's ``trigger_config`` is refreshed while it is open. The database decides
        in one statement which row wins, so two racing creates can never both insert.
        """
        values = asdict(session)
        if session.external_id is None:
            self._conn.execute(sa.insert(sessions).values(values))
            return session
        insert = (postgresql.insert if _is_postgres(self._conn) else sqlite.insert)(sessions).values(values)
        upsert = insert.on_conflict_do_update(
            index_elements=[sessions.c.environment_id, sessions.c.external_id],
            set_={"trigger_config": insert.excluded.trigger_config, "updated_at": insert.excluded.updated_at},
            where=sessions.c.closed_at.is_(None),
        ).returning(*sessions.c)
        row = self._conn.execute(upsert).first()
        if row is not None:
            return _to_session(row)
        existing = self.get_by_ref(session.environment_id, session.external_id)
        if existing is None:  # pragma: no cover - the conflicting row cannot vanish inside our statement
            raise Conflict(EXTERNAL_ID_TAKEN)
        return existing

    def update_fields(self, session_id: str, changes: dict[str, Any], now: datetime) -> Session:
        """Write only the given columns; a taken externalId raises ``Conflict``."""
        statement = (
            sa.update(sessions)
            .where(sessions.c.id == session_id)
            .values(**changes, updated_at=now)
            .returning(*sessions.c)
        )
        try:
            with self._conn.begin_nested():
                row = self._conn.execute(statement).first()
        except sa.exc.IntegrityError:
            raise Conflict(EXTERNAL_ID_TAKEN) from None
        if row is None:
            raise NotFound("Session not found")
        return _to_session(row)

    def close_if_open(self, session_id: str, reason: str | None, now: datetime) -> Session:
        """Close once: the condition on ``closed_at IS NULL`` makes racing closes land on one row."""
        closed = self.close(session_id, reason, now)
        return closed if closed is not None else self.get(session_id)

    def close(self, session_id: str, reason: str | None, now: datetime) -> Session | None:
        """Close the session and return it, or None when it was closed already (by us or a racer)."""
        statement = (
            sa.update(sessions)
            .where(sessions.c.id == session_id, sessions.c.closed_at.is_(None))
            .values(closed_at=now, closed_reason=reason, updated_at=now)
            .returning(*sessions.c)
        )
        row = self._conn.execute(statement).first()
        return _to_session(row) if row else None

    def claim_run(
        self, session_id: str, run_id: str, expected_version: int, expected_run_id: str | None = None
    ) -> bool:
        """Point the session at ``run_id`` if nobody moved it since we read ``expected_version``."""
        condition = [sessions.c.id == session_id, sessions.c.current_run_version == expected_version]
        if expected_run_id is not None:
            condition.append(sessions.c.current_run_id == expected_run_id)
        result = self._conn.execute(
            sa.update(sessions)
            .where(*condition)
            .values(current_run_id=run_id, current_run_version=sessions.c.current_run_version + 1)
        )
        return result.rowcount == 1


def _to_run(row: sa.Row[Any]) -> SessionRun:
    values = {name: row._mapping[name] for name in session_runs.c.keys()}
    return SessionRun(
        **{**values, "reason": RunReason(values["reason"]), "status": RunStatus(values["status"])}
    )


#: The run states a heartbeat, complete or fail may leave (EXPIRED is checked on the lease).
_RUNNING = (RunStatus.QUEUED.value, RunStatus.EXECUTING.value)


class SqlSessionRunRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def add(self, run: SessionRun) -> None:
        self._conn.execute(sa.insert(session_runs).values(asdict(run)))

    def get(self, run_id: str) -> SessionRun | None:
        """A run by its ``run_…`` id, in any environment (callers hold it from a session row)."""
        row = self._conn.execute(sa.select(session_runs).where(session_runs.c.run_id == run_id)).first()
        return _to_run(row) if row else None

    def get_in_environment(self, environment_id: str, run_id: str) -> SessionRun | None:
        if not is_storable(run_id):
            return None
        query = (
            sa.select(session_runs)
            .join(sessions, sessions.c.id == session_runs.c.session_id)
            .where(session_runs.c.run_id == run_id, sessions.c.environment_id == environment_id)
        )
        row = self._conn.execute(query).first()
        return _to_run(row) if row else None

    def list_for_session(self, session_id: str, limit: int) -> list[SessionRun]:
        """A session's runs, newest first."""
        query = (
            sa.select(session_runs)
            .where(session_runs.c.session_id == session_id)
            .order_by(session_runs.c.triggered_at.desc(), session_runs.c.id.desc())
            .limit(limit)
        )
        return [_to_run(row) for row in self._conn.execute(query)]

    def update_if_running(self, run_id: str, now: datetime, **values: Any) -> SessionRun | None:
        """Write ``values`` if the run is still QUEUED or EXECUTING with its lease not lapsed at ``now``.

        One conditional statement, so a heartbeat racing a complete (or an expiry) lands on one
        outcome; None means the run was final (the caller re-reads it to say which state).
        """
        if "status" in values:
            values["status"] = RunStatus(values["status"]).value
        lease = session_runs.c.lease_expires_at
        statement = (
            sa.update(session_runs)
            .where(
                session_runs.c.run_id == run_id,
                session_runs.c.status.in_(_RUNNING),
                sa.or_(lease.is_(None), lease >= now),
            )
            .values(**values)
            .returning(*session_runs.c)
        )
        row = self._conn.execute(statement).first()
        return _to_run(row) if row else None


class SqlLaunchRepository:
    """The launch outbox (``run_launches``): rows are added with their run and claimed by dispatchers."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def add(self, launch_id: str, run_id: str, now: datetime) -> None:
        self._conn.execute(
            sa.insert(run_launches).values(id=launch_id, run_id=run_id, next_attempt_at=now, created_at=now)
        )

    def claim_due(self, now: datetime, hold_until: datetime, limit: int) -> list[PendingLaunch]:
        """Take up to ``limit`` undelivered launches due at ``now``, hiding them until ``hold_until``.

        Claimed rows are pushed past ``hold_until`` in the same statement, so another dispatcher
        (or this one, after a crash) takes them again only once the hold lapses. On PostgreSQL rows
        another claimer holds are skipped (``FOR UPDATE SKIP LOCKED``); SQLite writers are serialised.
        """
        due = (
            sa.select(run_launches.c.id)
            .where(run_launches.c.delivered_at.is_(None), run_launches.c.next_attempt_at <= now)
            .order_by(run_launches.c.next_attempt_at)
            .limit(limit)
        )
        if _is_postgres(self._conn):
            due = due.with_for_update(skip_locked=True)
        statement = (
            sa.update(run_launches)
            .where(run_launches.c.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=hold_until, attempts=run_launches.c.attempts + 1)
            .returning(run_launches.c.id, run_launches.c.run_id, run_launches.c.attempts)
        )
        return [PendingLaunch(row.id, row.run_id, row.attempts) for row in self._conn.execute(statement)]

    def mark_done(self, launch_id: str, now: datetime, note: str | None = None) -> None:
        """Take the launch off the outbox: delivered, or (with ``note``) given up as pointless."""
        self._conn.execute(
            sa.update(run_launches)
            .where(run_launches.c.id == launch_id)
            .values(delivered_at=now, last_error=note)
        )

    def next_due(self) -> datetime | None:
        """When the earliest undelivered launch falls due (None: the outbox is empty)."""
        query = sa.select(sa.func.min(run_launches.c.next_attempt_at)).where(
            run_launches.c.delivered_at.is_(None)
        )
        found: datetime | None = self._conn.execute(query).scalar()
        return found

    def retry_at(self, launch_id: str, when: datetime, error: str) -> None:
        self._conn.execute(
            sa.update(run_launches)
            .where(run_launches.c.id == launch_id, run_launches.c.delivered_at.is_(None))
            .values(next_attempt_at=when, last_error=error[:1000])
        )


class SqlSpentTokenRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def spend(self, token_hash: str, expires_at: int, now: int) -> bool:
        """Mark a one-time token used; True only for the first use, however many race.

        The insert does nothing on a hash already there: on PostgreSQL a racing insert waits for
        the first to commit and then inserts nothing; SQLite's writers take turns. Rows of tokens
        expired by ``now`` (epoch seconds) are swept first, a short range scan of their index.
        """
        self._conn.execute(sa.delete(spent_tokens).where(spent_tokens.c.expires_at < now))
        insert = (postgresql.insert if _is_postgres(self._conn) else sqlite.insert)(spent_tokens)
        result = self._conn.execute(
            insert.values(token_hash=token_hash, expires_at=expires_at).on_conflict_do_nothing(
                index_elements=[spent_tokens.c.token_hash]
            )
        )
        return result.rowcount == 1


class SqlEnvironmentRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def add(self, environment: Environment, api_key_hash: str, now: datetime) -> None:
        values = {**asdict(environment), "api_key_hash": api_key_hash, "created_at": now}
        try:
            with self._conn.begin_nested():
                self._conn.execute(sa.insert(environments).values(values))
        except sa.exc.IntegrityError:
            raise Conflict(f"An environment with slug {environment.slug!r} already exists") from None

    def _one(self, condition: sa.ColumnElement[bool]) -> Environment | None:
        row = self._conn.execute(sa.select(environments).where(condition)).first()
        if row is None:
            return None
        return Environment(
            id=row.id,
            slug=row.slug,
            type=EnvironmentType(row.type),
            organization_id=row.organization_id,
            project_id=row.project_id,
            api_key=row.api_key,
        )

    def get(self, environment_id: str) -> Environment | None:
        if not is_storable(environment_id):
            return None
        return self._one(environments.c.id == environment_id)

    def get_by_api_key_hash(self, api_key_hash: str) -> Environment | None:
        return self._one(environments.c.api_key_hash == api_key_hash)

    def get_by_slug(self, slug: str) -> Environment | None:
        if not is_storable(slug):
            return None
        return self._one(environments.c.slug == slug)

    def list_summaries(self) -> list[EnvironmentSummary]:
        """Every environment, oldest first."""
        rows = self._conn.execute(
            sa.select(
                environments.c.id, environments.c.slug, environments.c.type, environments.c.created_at
            ).order_by(environments.c.created_at, environments.c.id)
        )
        return [EnvironmentSummary(r.id, r.slug, EnvironmentType(r.type), r.created_at) for r in rows]

    def replace_api_key(self, environment_id: str, api_key: str, api_key_hash: str) -> None:
        self._conn.execute(
            sa.update(environments)
            .where(environments.c.id == environment_id)
            .values(api_key=api_key, api_key_hash=api_key_hash)
        )

    def first(self) -> Environment | None:
        """The oldest environment: it fixes the installation's organisation and project."""
        row = self._conn.execute(
            sa.select(environments.c.id).order_by(environments.c.created_at, environments.c.id).limit(1)
        ).first()
        return self.get(row.id) if row else None


def _status_condition(status: SessionStatus, now: datetime) -> sa.ColumnElement[bool]:
    """The SQL twin of ``models.session_status``: expired means ``expires_at < now``."""
    open_ = sessions.c.closed_at.is_(None)
    if status is SessionStatus.CLOSED:
        return sessions.c.closed_at.is_not(None)
    if status is SessionStatus.EXPIRED:
        return sa.and_(open_, sessions.c.expires_at.is_not(None), sessions.c.expires_at < now)
    return sa.and_(open_, sa.or_(sessions.c.expires_at.is_(None), sessions.c.expires_at >= now))


def _tags_overlap(conn: sa.Connection, tags: tuple[str, ...]) -> sa.ColumnElement[bool]:
    if _is_postgres(conn):
        return sessions.c.tags.op("&&")(sa.cast(postgresql.array(tags), postgresql.ARRAY(sa.Text)))
    each = sa.func.json_each(sessions.c.tags).table_valued("value")
    return sa.exists(sa.select(1).select_from(each).where(each.c.value.in_(tags)))


def filter_conditions(
    conn: sa.Connection, query: SessionListQuery, now: datetime
) -> list[sa.ColumnElement[bool]]:
    """The WHERE clause of a list: tenant scope plus every filter of wire reference §5."""
    f: SessionFilters = query.filters
    where = [
        sessions.c.organization_id == query.organization_id,
        sessions.c.project_id == query.project_id,
        sessions.c.environment_id == query.environment_id,
    ]
    if f.types:
        where.append(_in(sessions.c.type, f.types))
    if f.task_identifiers:
        where.append(_in(sessions.c.task_identifier, f.task_identifiers))
    if f.external_ids:
        where.append(_in(sessions.c.external_id, f.external_ids))
    if f.tags:
        tags = tuple(tag for tag in f.tags if is_storable(tag))
        where.append(_tags_overlap(conn, tags) if tags else sa.false())
    if f.statuses:
        where.append(sa.or_(*(_status_condition(s, now) for s in f.statuses)))
    if f.created_from is not None:
        where.append(sessions.c.created_at >= f.created_from)
    if f.created_to is not None:
        where.append(sessions.c.created_at <= f.created_to)
    return where


def page_keys(
    engine: sa.Engine, query: SessionListQuery, now: datetime, *extra: sa.ColumnElement[bool]
) -> list[SessionKey]:
    """The keys of one page: strictly past the cursor in ``query.direction``, at most ``query.limit``."""
    key = sa.tuple_(sessions.c.created_at, sessions.c.id)
    with engine.connect().execution_options(read_only=True) as conn:
        where = [*filter_conditions(conn, query, now), *extra]
        if query.cursor is not None:
            cursor = sa.tuple_(sa.literal(query.cursor.created_at), sa.literal(query.cursor.id))
            where.append(key < cursor if query.direction == "forward" else key > cursor)
        order = (
            (sessions.c.created_at.desc(), sessions.c.id.desc())
            if query.direction == "forward"
            else (sessions.c.created_at.asc(), sessions.c.id.asc())
        )
        rows = conn.execute(
            sa.select(sessions.c.created_at, sessions.c.id).where(*where).order_by(*order).limit(query.limit)
        )
        return [SessionKey(row.created_at, row.id) for row in rows]


class SqlSessionLister:
    """Lists straight from the sessions table: the embedded default, and the reference semantics."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def list_keys(self, query: SessionListQuery, now: datetime) -> list[SessionKey]:
        return page_keys(self._engine, query, now)

    def count(self, query: SessionListQuery, now: datetime) -> int:
        with self._engine.connect() as conn:
            statement = (
                sa.select(sa.func.count()).select_from(sessions).where(*filter_conditions(conn, query, now))
            )
            return int(conn.execute(statement).scalar_one())

    def list_tags(
        self, organization_id: str, project_id: str, environment_id: str, query: str | None, limit: int
    ) -> list[str]:
        scope = SessionListQuery(organization_id, project_id, environment_id)
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(sessions.c.tags).where(*filter_conditions(conn, scope, datetime.min))
            )
            tags = {tag for row in rows for tag in (row.tags or [])}
        if query:
            tags = {tag for tag in tags if query.lower() in tag.lower()}
        return sorted(tags)[:limit]
