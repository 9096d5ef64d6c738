"""The list endpoint served from ClickHouse gives the same pages as the SQL repository.

One migrated PostgreSQL database is replicated into ClickHouse by ``python -m replicator``; two
apps read it, one with ``CLICKHOUSE_URL`` and one without, and every page must match.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from session_core.config import Settings
from session_core.db.migrate import upgrade_database
from session_core.db.tables import sessions
from session_core.db.uow import UnitOfWork
from session_core.models import EnvironmentType, SessionStatus, utcnow
from session_core.repositories.clickhouse import ClickHouseSessionLister
from session_core.repositories.ports import SessionFilters, SessionListQuery
from session_core.repositories.sql import SqlSessionLister
from session_core.services.environments import create_environment
from session_web.app import create_app
from tests.integration.replication_helpers import (
    ClickHouseReader,
    ReplicatorProcess,
    insert_sessions,
    session_row,
    wait_until,
)
from tests.integration.sessions_api import bearer
from tests.servers import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]


class World:
    """A migrated database, a ClickHouse database, a replicator, and an app on each lister."""

    def __init__(self, postgres, clickhouse, log_dir) -> None:
        self.postgres = postgres
        self.pg_database = postgres.create_database()
        self.database_url = postgres.database_url(self.pg_database)
        upgrade_database(self.database_url)
        suffix = uuid.uuid4().hex[:10]
        self.clickhouse_url = f"clickhouse://127.0.0.1:{clickhouse.port}/l_{suffix}"
        self.reader = ClickHouseReader(clickhouse.port, f"l_{suffix}")
        self.slot = f"lister_{suffix}"
        self.sql_app = create_app(Settings(database_url=self.database_url))
        self.ch_app = create_app(Settings(database_url=self.database_url, clickhouse_url=self.clickhouse_url))
        self.engine = self.sql_app.extensions["sessions"].engine
        self.replicator = ReplicatorProcess(
            {
                "PATH": "/usr/bin:/bin",
                "DATABASE_URL": self.database_url,
                "CLICKHOUSE_URL": self.clickhouse_url,
                "SESSION_REPLICATION_SLOT_NAME": self.slot,
                "SESSION_REPLICATION_FLUSH_INTERVAL_MS": "10",
                "SESSION_REPLICATION_METRICS_PORT": "0",
            },
            log_dir / f"replicator-{suffix}.log",
        )
        self.replicator.start().wait_for_log("replication started")

    def environment(self):
        slug = f"env-{uuid.uuid4().hex[:12]}"
        return create_environment(UnitOfWork(self.engine), slug, EnvironmentType.DEVELOPMENT, utcnow())

    def wait_replicated(self, environment) -> None:
        with self.engine.connect() as conn:
            expected = {
                (row.id, row.updated_at.replace(microsecond=0))
                for row in conn.execute(
                    sa.select(sessions.c.id, sessions.c.updated_at).where(
                        sessions.c.environment_id == environment.id
                    )
                )
            }

        def replicated() -> bool:
            rows = self.reader.query(
                "SELECT session_id, updated_at FROM {table} FINAL"
                " WHERE environment_id = %(e)s AND _is_deleted = 0",
                {"e": environment.id},
            )
            return {(r["session_id"], r["updated_at"].replace(tzinfo=None)) for r in rows} == expected

        wait_until(replicated, timeout=30, what="replication of the environment")

    def close(self) -> None:
        self.replicator.stop()
        self.ch_app.extensions["sessions"].lister.close()
        for app in (self.sql_app, self.ch_app):
            app.extensions["sessions"].engine.dispose()
        self.reader.drop()
        self.postgres.drop_database(self.pg_database)


@pytest.fixture(scope="module")
def world(postgres, clickhouse, tmp_path_factory):
    world = World(postgres, clickhouse, tmp_path_factory.mktemp("lister"))
    try:
        yield world
    finally:
        world.close()


def populate(world, environment) -> list[dict]:
    """Sessions that exercise every filter: shared timestamps, tags, types, statuses, expiry."""
    base = utcnow().replace(microsecond=0) - timedelta(hours=3)
    rows = []
    for n in range(120):
        created = base + timedelta(minutes=9 * (n // 6))  # groups of six share a created_at
        status = n % 5
        rows.append(
            session_row(
                organization_id=environment.organization_id,
                project_id=environment.project_id,
                environment_id=environment.id,
                environment_type=environment.type.value,
                external_id=f"ext-{n}" if n % 3 else None,
                type=("chat.agent", "worker", "other")[n % 3],
                task_identifier=("agent", "summarise")[n % 2],
                tags=[f"t{n % 4}", "all"] if n % 7 else [],
                closed_at=created + timedelta(minutes=1) if status == 1 else None,
                closed_reason="done" if status == 1 else None,
                expires_at={2: base - timedelta(minutes=5), 3: utcnow() + timedelta(days=1)}.get(status),
                created_at=created,
                updated_at=created,
            )
        )
    with world.engine.begin() as conn:
        insert_sessions(conn, rows)
    return rows


@pytest.fixture(scope="module")
def populated(world):
    environment = world.environment()
    populate(world, environment)
    world.wait_replicated(environment)
    return environment


def walk(app, environment, size, **params):
    """Every page forward, then every page back from the last one."""
    client = app.test_client()

    def get(**extra):
        response = client.get(
            "/api/v1/sessions",
            query_string={**params, "page[size]": size, **extra},
            headers=bearer(environment.api_key),
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    pages = [get()]
    for _ in range(200):
        if "next" not in pages[-1]["pagination"]:
            break
        pages.append(get(**{"page[after]": pages[-1]["pagination"]["next"]}))
    for _ in range(200):
        if "previous" not in pages[-1]["pagination"]:
            break
        pages.append(get(**{"page[before]": pages[-1]["pagination"]["previous"]}))
    return pages


FILTERS = [
    {},
    {"filter[type]": "worker"},
    {"filter[type]": "worker,other"},
    {"filter[tags]": "t1"},
    {"filter[tags]": "t1,t3"},
    {"filter[taskIdentifier]": "summarise"},
    {"filter[externalId]": "ext-4"},
    {"filter[status]": "ACTIVE"},
    {"filter[status]": "CLOSED"},
    {"filter[status]": "EXPIRED"},
    {"filter[status]": "CLOSED,EXPIRED", "filter[type]": "chat.agent"},
    {"filter[createdAt][period]": "90m"},
    {"filter[tags]": "nope"},
]


@pytest.mark.parametrize(
    "params", FILTERS, ids=[",".join(f"{k}={v}" for k, v in p.items()) or "none" for p in FILTERS]
)
@pytest.mark.parametrize("size", [7, 50])
def test_clickhouse_pages_equal_sql_pages_forward_and_back(world, populated, params, size):
    sql_pages = walk(world.sql_app, populated, size, **params)
    ch_pages = walk(world.ch_app, populated, size, **params)

    assert ch_pages == sql_pages
    assert sum(len(page["data"]) for page in sql_pages) > 0 or params == {"filter[tags]": "nope"}


def test_created_at_bounds_in_epoch_milliseconds_match(world, populated):
    with world.engine.connect() as conn:
        times = sorted(
            conn.execute(
                sa.select(sessions.c.created_at).where(sessions.c.environment_id == populated.id)
            ).scalars()
        )
    epoch = datetime(1970, 1, 1)
    params = {
        "filter[createdAt][from]": str((times[10] - epoch) // timedelta(milliseconds=1)),
        "filter[createdAt][to]": str((times[60] - epoch) // timedelta(milliseconds=1)),
    }

    assert walk(world.ch_app, populated, 9, **params) == walk(world.sql_app, populated, 9, **params)


def test_count_and_tags_equal_the_sql_repository(world, populated):
    clickhouse = ClickHouseSessionLister(world.clickhouse_url, world.engine)
    sql = SqlSessionLister(world.engine)
    now = utcnow()
    scope = (populated.organization_id, populated.project_id, populated.id)

    try:
        for filters in (
            SessionFilters(),
            SessionFilters(statuses=(SessionStatus.ACTIVE,)),
            SessionFilters(types=("worker",), tags=("t2",)),
        ):
            query = SessionListQuery(*scope, filters=filters)
            assert clickhouse.count(query, now) == sql.count(query, now)
        for text in (None, "T1", "all", "zzz"):
            assert clickhouse.list_tags(*scope, text, 10) == sql.list_tags(*scope, text, 10)
        assert clickhouse.list_tags(*scope, None, 2) == ["all", "t0"]
    finally:
        clickhouse.close()


def test_a_session_created_or_closed_a_moment_ago_is_listed_correctly_before_it_replicates(world):
    environment = world.environment()
    populate(world, environment)
    world.wait_replicated(environment)
    world.replicator.stop()  # nothing written from here on reaches ClickHouse
    try:
        client = world.ch_app.test_client()
        created = client.post(
            "/api/v1/sessions",
            json={"type": "chat.agent", "taskIdentifier": "agent", "triggerConfig": {"basePayload": {}}},
            headers=bearer(environment.api_key),
        )
        assert created.status_code == 201, created.get_json()
        with world.engine.connect() as conn:
            active = conn.execute(
                sa.select(sessions.c.friendly_id)
                .where(sessions.c.environment_id == environment.id, sessions.c.closed_at.is_(None))
                .where(sessions.c.expires_at.is_(None))
                .limit(1)
            ).scalar_one()
        closed = client.post(
            f"/api/v1/sessions/{active}/close", json={"reason": "now"}, headers=bearer(environment.api_key)
        )
        assert closed.status_code == 200, closed.get_json()

        for params in ({}, {"filter[status]": "ACTIVE"}, {"filter[status]": "CLOSED"}):
            assert walk(world.ch_app, environment, 10, **params) == walk(
                world.sql_app, environment, 10, **params
            )
        first_page = walk(world.ch_app, environment, 10)[0]["data"]
        assert first_page[0]["id"] == created.get_json()["id"]
        closed_page = walk(world.ch_app, environment, 100, **{"filter[status]": "CLOSED"})[0]["data"]
        assert active in {item["id"] for item in closed_page}
    finally:
        world.replicator.start().wait_for_log("replication started")


def test_an_unreachable_clickhouse_is_answered_from_postgres(world, populated, caplog):
    lister = ClickHouseSessionLister(f"clickhouse://127.0.0.1:{free_port()}/x", world.engine)
    query = SessionListQuery(populated.organization_id, populated.project_id, populated.id)
    now = utcnow()

    with caplog.at_level(logging.WARNING):
        keys = lister.list_keys(query, now)

    assert keys == SqlSessionLister(world.engine).list_keys(query, now)
    assert "clickhouse unavailable, answering from postgres what=list" in caplog.text


def populate_spread(world, environment) -> None:
    """Sessions from a day ahead to about 500 days back, ever further apart, so that a page's span
    of ``created_at`` must widen, and at times read everything, to fill it; some share a
    millisecond and many sit a few milliseconds either side of a whole second."""
    now = utcnow().replace(microsecond=0)
    rows, created = [], now + timedelta(days=1)
    for n in range(150):
        if n % 5:  # every fifth shares the previous one's created_at
            created = now - timedelta(seconds=int(30 * 1.1**n), milliseconds=(1, 999, 500)[n % 3])
        rows.append(
            session_row(
                organization_id=environment.organization_id,
                project_id=environment.project_id,
                environment_id=environment.id,
                environment_type=environment.type.value,
                type=("chat.agent", "worker")[n % 2],
                tags=["sparse"] if n % 17 == 0 else ["dense"],
                closed_at=created if n % 3 == 0 else None,
                created_at=created,
                updated_at=created,
            )
        )
    with world.engine.begin() as conn:
        insert_sessions(conn, rows)


@pytest.mark.parametrize(
    "params",
    [{}, {"filter[tags]": "sparse"}, {"filter[status]": "ACTIVE"}, {"filter[type]": "worker"}],
    ids=["none", "sparse-tag", "active", "type"],
)
def test_pages_equal_sql_pages_when_the_rows_are_spread_over_years(world, params):
    environment = world.environment()
    populate_spread(world, environment)
    world.wait_replicated(environment)

    for size in (4, 25):
        assert walk(world.ch_app, environment, size, **params) == walk(
            world.sql_app, environment, size, **params
        )
