"""Shared fixtures: real PostgreSQL and ClickHouse servers for the whole run, fresh databases per test.

The servers start lazily, only when a collected test asks for them, and are stopped by PID at the
end even after failures. A missing server binary fails the run with the install command.
"""

import signal
from collections.abc import Callable, Iterator

import pytest

from tests.servers import (
    ClickHouseServer,
    MissingServerBinary,
    PostgresServer,
    RedisServer,
    start_clickhouse,
    start_postgres,
    start_redis,
)

pytest.register_assert_rewrite("tests.e2e.api_client")


def pytest_sessionstart(session: pytest.Session) -> None:
    # `timeout` and CI runners cancel with SIGTERM: unwind as for Ctrl-C, so fixtures stop their servers
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _start(starter: Callable[[], PostgresServer | ClickHouseServer | RedisServer]):
    try:
        return starter()
    except MissingServerBinary as exc:
        missing = str(exc)
    pytest.fail(missing, pytrace=False)  # outside `except`: one clear line, no chained traceback


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = _start(start_postgres)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def clickhouse() -> Iterator[ClickHouseServer]:
    server = _start(start_clickhouse)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = _start(start_redis)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_url(postgres: PostgresServer) -> str:
    """URL of database `sessions_test`, shared by the whole run: use unique values, not fixed rows."""
    return postgres.database_url(postgres.create_database("sessions_test"))


@pytest.fixture
def make_pg_database(postgres: PostgresServer) -> Iterator[Callable[[], str]]:
    """Factory: each call creates an empty PostgreSQL database and returns its URL; all dropped after."""
    created: list[str] = []

    def make() -> str:
        created.append(postgres.create_database())
        return postgres.database_url(created[-1])

    yield make
    for name in created:
        postgres.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/sessions.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty, unmigrated database URL; tests using it run once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("make_pg_database")()
