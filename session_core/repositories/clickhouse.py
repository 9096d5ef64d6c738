"""``SessionLister`` over ClickHouse ``sessions_v1``, topped up from PostgreSQL for what has not replicated.

ClickHouse answers the list with the same filters and the same ``(created_at, id)`` keyset order as
the SQL lister (reads use ``FINAL`` and hide tombstones; times compare as exact milliseconds). It
lags PostgreSQL, so every call also asks PostgreSQL for the rows updated since shortly before the
newest change ClickHouse holds for the environment, and merges them in: a session created or closed
a moment ago is listed at once. The list service then hydrates every key from PostgreSQL and
re-checks the filters there, so a lagging value can hide a row for a moment but never show a wrong
one. When ClickHouse cannot be reached the call is answered by the SQL lister instead.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError

from session_core.cursors import SessionKey
from session_core.db.tables import sessions
from session_core.models import SessionStatus
from session_core.replication.target import ClickHouseTarget, parse_clickhouse_url
from session_core.repositories.ports import SessionListQuery
from session_core.repositories.sql import SqlSessionLister, filter_conditions, page_keys
from session_core.text import is_storable

__all__ = ["ClickHouseSessionLister"]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
#: How far before ClickHouse's newest ``updated_at`` PostgreSQL is asked again: covers clock skew
#: between writers and transactions that commit in a different order than they stamped the row.
FRESH_MARGIN = timedelta(seconds=10)
#: Spans of ``created_at`` a page tries, back from its cursor (or from now), before it reads the whole
#: environment. The sort key puts ``created_at`` right after the environment, so a span reads only
#: its own granules; ClickHouse 18.16 can neither stop an ``ORDER BY … LIMIT`` early in key order nor
#: run ``FINAL`` on more than one thread, so a whole environment of 1M rows costs about 0.5 s.
PAGE_SPANS = (timedelta(hours=1), timedelta(hours=8), timedelta(days=3), timedelta(days=21))
#: ``_fresh_since`` first looks only at the sessions created this recently.
RECENT_SPAN = timedelta(days=1)
_DATETIME_MAX_SECONDS = 2**32 - 1
_POOL_SIZE = 16
_T = TypeVar("_T")


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def _key_seconds(ms: int) -> int:
    """Epoch milliseconds as the ``DateTime`` seconds of the sort key, clamped as ``rows.py`` stores them."""
    return min(max(ms // 1000, 0), _DATETIME_MAX_SECONDS)


def _keys(rows: list[tuple[int, str]]) -> list[SessionKey]:
    return [SessionKey(_EPOCH + timedelta(milliseconds=ms), session_id) for ms, session_id in rows]


class _ClientPool:
    """A few idle clients to reuse; a client is used by one caller at a time (it is not thread-safe)."""

    def __init__(self, target: ClickHouseTarget, size: int) -> None:
        self._target = target
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue(size)

    @contextmanager
    def client(self) -> Iterator[Client]:
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = self._target.connect()
        try:
            yield client
        except BaseException:
            client.disconnect()  # its connection may be mid-query: never hand it out again
            raise
        try:
            self._idle.put_nowait(client)
        except queue.Full:
            client.disconnect()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().disconnect()
            except queue.Empty:
                return


class _Where:
    """A ClickHouse WHERE clause with client-side ``%(name)s`` parameters (the 18.16 subset)."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: dict[str, Any] = {}

    def add(self, condition: str, **params: Any) -> None:
        self.conditions.append(condition)
        self.params.update(params)

    def sql(self) -> str:
        return " AND ".join(self.conditions)


def _status_condition(status: SessionStatus) -> str:
    """The ClickHouse twin of ``models.session_status``: expired means ``expires_at < now``."""
    if status is SessionStatus.CLOSED:
        return "closed_at IS NOT NULL"
    if status is SessionStatus.EXPIRED:
        return "(closed_at IS NULL AND expires_at_ms IS NOT NULL AND expires_at_ms < %(now_ms)s)"
    return "(closed_at IS NULL AND (expires_at_ms IS NULL OR expires_at_ms >= %(now_ms)s))"


def _scope(organization_id: str, project_id: str, environment_id: str, *, live_only: bool = True) -> _Where:
    where = _Where()
    where.add(
        "organization_id = %(org)s AND project_id = %(project)s AND environment_id = %(env)s",
        org=organization_id,
        project=project_id,
        env=environment_id,
    )
    if live_only:
        where.add("_is_deleted = 0")
    return where


def _filters(query: SessionListQuery, now: datetime) -> _Where:
    """Tenant scope plus every filter of wire reference §5, as ``filter_conditions`` applies them."""
    f = query.filters
    where = _scope(query.organization_id, query.project_id, query.environment_id)
    for column, values, name in (
        ("type", f.types, "types"),
        ("task_identifier", f.task_identifiers, "tasks"),
        ("external_id", f.external_ids, "external_ids"),
    ):
        # A NULL externalId is stored as '', which no filter value may match.
        wanted = tuple(v for v in values if is_storable(v) and (v or column != "external_id"))
        if values:
            where.add(f"{column} IN %({name})s" if wanted else "0", **{name: wanted})
    if f.tags:
        tags = [tag for tag in f.tags if is_storable(tag)]
        where.add("hasAny(tags, %(tags)s)" if tags else "0", tags=tags)
    if f.statuses:
        where.add("(" + " OR ".join(_status_condition(s) for s in f.statuses) + ")", now_ms=_ms(now))
    if f.created_from is not None:
        where.add("created_at_ms >= %(from_ms)s", from_ms=_ms(f.created_from))
    if f.created_to is not None:
        where.add("created_at_ms <= %(to_ms)s", to_ms=_ms(f.created_to))
    return where


class ClickHouseSessionLister:
    def __init__(self, clickhouse_url: str, engine: sa.Engine) -> None:
        self._target = parse_clickhouse_url(clickhouse_url)
        self._pool = _ClientPool(self._target, _POOL_SIZE)
        self._engine = engine
        self._sql = SqlSessionLister(engine)

    def close(self) -> None:
        """Disconnect the idle ClickHouse clients (the engine belongs to the caller)."""
        self._pool.close()

    def list_keys(self, query: SessionListQuery, now: datetime) -> list[SessionKey]:
        """Up to ``query.limit`` keys past the cursor, from ClickHouse merged with fresh PostgreSQL rows."""
        try:
            with self._pool.client() as client:
                since = self._fresh_since(client, query)
                if since is None:
                    return self._sql.list_keys(query, now)
                replicated = self._clickhouse_keys(client, query, now)
        except (ClickHouseError, OSError, EOFError) as exc:
            return self._fallback("list", exc, lambda: self._sql.list_keys(query, now))
        merged = {key.id: key for key in replicated}
        merged.update((key.id, key) for key in self._fresh_keys(query, now, since))
        return sorted(merged.values(), reverse=query.direction == "forward")[: query.limit]

    def count(self, query: SessionListQuery, now: datetime) -> int:
        """ClickHouse's count of the rows PostgreSQL has not changed lately, plus PostgreSQL's of the rest."""
        try:
            with self._pool.client() as client:
                since = self._fresh_since(client, query)
                if since is None:
                    return self._sql.count(query, now)
                fresh_ids = self._fresh_ids(query, since)
                where = _filters(query, now)
                if fresh_ids:
                    where.add("session_id NOT IN %(fresh_ids)s", fresh_ids=tuple(fresh_ids))
                [(replicated,)] = client.execute(
                    f"SELECT count() FROM {self._target.table} FINAL WHERE {where.sql()}", where.params
                )
        except (ClickHouseError, OSError, EOFError) as exc:
            return self._fallback("count", exc, lambda: self._sql.count(query, now))
        with self._engine.connect() as conn:
            fresh = conn.execute(
                sa.select(sa.func.count())
                .select_from(sessions)
                .where(*filter_conditions(conn, query, now), sessions.c.updated_at >= since)
            ).scalar_one()
        return int(replicated) + int(fresh)

    def list_tags(
        self, organization_id: str, project_id: str, environment_id: str, query: str | None, limit: int
    ) -> list[str]:
        """Distinct tags of live sessions, sorted, optionally those containing ``query`` (any case)."""
        scope = SessionListQuery(organization_id, project_id, environment_id)
        where = _scope(organization_id, project_id, environment_id)
        if query:
            where.add("positionCaseInsensitiveUTF8(tag, %(q)s) > 0", q=query)
        try:
            with self._pool.client() as client:
                since = self._fresh_since(client, scope)
                if since is None:
                    return self._sql.list_tags(organization_id, project_id, environment_id, query, limit)
                rows = client.execute(
                    f"SELECT DISTINCT arrayJoin(tags) AS tag FROM {self._target.table} FINAL"
                    f" WHERE {where.sql()} ORDER BY tag LIMIT %(limit)s",
                    {**where.params, "limit": limit},
                )
        except (ClickHouseError, OSError, EOFError) as exc:
            return self._fallback(
                "tags",
                exc,
                lambda: self._sql.list_tags(organization_id, project_id, environment_id, query, limit),
            )
        tags = {tag for (tag,) in rows}
        with self._engine.connect() as conn:
            recent = conn.execute(
                sa.select(sessions.c.tags).where(
                    *filter_conditions(conn, scope, now=datetime.min), sessions.c.updated_at >= since
                )
            )
            tags.update(
                tag
                for (row_tags,) in recent
                for tag in row_tags or []
                if not query or query.lower() in tag.lower()
            )
        return sorted(tags)[:limit]

    def _fresh_since(self, client: Client, query: SessionListQuery) -> datetime | None:
        """Where PostgreSQL must be asked again: None when ClickHouse holds nothing of the environment.

        Any moment at or before ClickHouse's newest change is a safe answer (an earlier one only
        brings more rows from PostgreSQL), so the newest change among the sessions created lately
        serves; it reads a few granules, where the whole environment costs a scan of every row.
        """
        # Tombstones count: a delete is a change ClickHouse holds.
        scope = _scope(query.organization_id, query.project_id, query.environment_id, live_only=False)
        recent = f"created_at >= now() - {RECENT_SPAN // timedelta(seconds=1)}"
        for where in (f"{scope.sql()} AND {recent}", scope.sql()):
            [(count, newest)] = client.execute(
                f"SELECT count(), max(updated_at) FROM {self._target.table} WHERE {where}", scope.params
            )
            if count:
                since: datetime = newest.replace(tzinfo=None) - FRESH_MARGIN
                return since
        return None

    def _clickhouse_keys(self, client: Client, query: SessionListQuery, now: datetime) -> list[SessionKey]:
        """One page of keys: from the first span of ``PAGE_SPANS`` that holds a full page, else all rows."""
        where = _filters(query, now)
        forward = query.direction == "forward"
        anchor_ms = _ms(now) if forward else None
        if query.cursor is not None:
            anchor_ms = _ms(query.cursor.created_at)
            compare = "<" if forward else ">"
            where.add(
                f"(created_at_ms {compare} %(cursor_ms)s"
                f" OR (created_at_ms = %(cursor_ms)s AND session_id {compare} %(cursor_id)s))",
                cursor_ms=anchor_ms,
                cursor_id=query.cursor.id,
            )
            # The same bound on the key's whole seconds lets ClickHouse skip granules past the cursor;
            # one second of slack keeps it true however the client rounded the stored second.
            where.add(
                f"created_at {compare}= toDateTime(%(cursor_s)s)",
                cursor_s=_key_seconds(anchor_ms + (1000 if forward else -1000)),
            )
        order = "DESC" if forward else "ASC"

        def page(condition: str, **params: Any) -> list[tuple[int, str]]:
            rows: list[tuple[int, str]] = client.execute(
                f"SELECT created_at_ms, session_id FROM {self._target.table} FINAL WHERE {condition}"
                f" ORDER BY created_at_ms {order}, session_id {order} LIMIT %(limit)s",
                {**where.params, **params, "limit": query.limit},
            )
            return rows

        if anchor_ms is not None:
            for span in PAGE_SPANS:
                step = span // _MS if forward else -(span // _MS)
                edge_s = _key_seconds(anchor_ms - step)
                rows = page(
                    f"{where.sql()} AND created_at {'>=' if forward else '<='} toDateTime(%(edge_s)s)",
                    edge_s=edge_s,
                )
                # Every row left out lies before the edge second (after it, going backward), so a
                # full page whose last row is on the inner side of that second is the page of all rows.
                edge_ms = edge_s * 1000
                if len(rows) == query.limit and (
                    rows[-1][0] >= edge_ms if forward else rows[-1][0] < edge_ms
                ):
                    return _keys(rows)
        return _keys(page(where.sql()))

    def _fresh_keys(self, query: SessionListQuery, now: datetime, since: datetime) -> list[SessionKey]:
        return page_keys(self._engine, query, now, sessions.c.updated_at >= since)

    def _fresh_ids(self, query: SessionListQuery, since: datetime) -> list[str]:
        scope = SessionListQuery(query.organization_id, query.project_id, query.environment_id)
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(sessions.c.id).where(
                    *filter_conditions(conn, scope, now=datetime.min), sessions.c.updated_at >= since
                )
            )
            return [row.id for row in rows]

    def _fallback(self, what: str, exc: BaseException, answer: Callable[[], _T]) -> _T:
        logger.warning(
            "clickhouse unavailable, answering from postgres what=%s address=%s error=%s",
            what,
            self._target.address,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return answer()
