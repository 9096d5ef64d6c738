"""The control plane in-process (Flask's test client), once on SQLite and once on PostgreSQL.

Each backend gets one migrated database and one app for the whole run: creating a PostgreSQL
database costs more than most tests do. Tests stay apart by working in environments of their own
(every lookup and every list is scoped to the caller's environment) and by unique externalIds.
"""

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from session_core.config import Settings
from session_core.db.engine import make_engine
from session_core.db.migrate import upgrade_database
from session_core.db.tables import metadata
from session_core.db.uow import UnitOfWork
from session_core.models import Environment, EnvironmentType, Session, utcnow
from session_core.repositories.memory import MemoryDatabase, MemoryUnitOfWork
from session_core.services.environments import create_environment
from session_web.app import create_app
from tests.integration.sessions_api import bearer, session_body
from tests.unit import factories


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database per backend, shared by the run: use your own environment in it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('control-plane')}/sessions.db"
    else:
        url = request.getfixturevalue("pg_url")
    upgrade_database(url)
    return url


@pytest.fixture(scope="session")
def app(app_database_url: str) -> Iterator[Flask]:
    app = create_app(Settings(database_url=app_database_url))
    yield app
    services = app.extensions["sessions"]
    services.hub.close()  # stops the tail feed before its database goes away
    services.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(
    scope="module", params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def make_uow(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], Any]]:
    """Factory: a unit of work on this module's store of each kind: the in-memory fakes, SQLite and
    PostgreSQL, for the contract tests (tests keep apart by ids)."""
    if request.param == "memory":
        database = MemoryDatabase()
        yield lambda: MemoryUnitOfWork(database)
        return
    if request.param == "sqlite":
        url, name = f"sqlite:///{tmp_path_factory.mktemp('contract')}/contract.db", None
    else:
        postgres = request.getfixturevalue("postgres")
        name = postgres.create_database()
        url = postgres.database_url(name)
    engine = make_engine(url)
    metadata.create_all(engine)
    yield lambda: UnitOfWork(engine)
    engine.dispose()
    if name is not None:
        postgres.drop_database(name)


@pytest.fixture
def engine(app: Flask) -> sa.Engine:
    return app.extensions["sessions"].engine


@pytest.fixture
def make_environment(engine: sa.Engine) -> Callable[[], Environment]:
    """Factory: a new environment (own secret key, no sessions) in the app's database."""

    def make() -> Environment:
        slug = f"env-{uuid.uuid4().hex[:12]}"
        return create_environment(UnitOfWork(engine), slug, EnvironmentType.DEVELOPMENT, utcnow())

    return make


@pytest.fixture
def env(make_environment: Callable[[], Environment]) -> Environment:
    return make_environment()


@pytest.fixture
def make_session(client: FlaskClient, env: Environment) -> Callable[..., dict[str, Any]]:
    """Factory: create a session in ``env`` through the API; overrides are wire (camelCase) fields.

    Each session gets a unique externalId unless ``externalId`` is given (``None`` sends null).
    Returns the 201 body.
    """

    def make(**overrides: Any) -> dict[str, Any]:
        response = client.post(
            "/api/v1/sessions", json=session_body(**overrides), headers=bearer(env.api_key)
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return make


@pytest.fixture
def insert_session(engine: sa.Engine, env: Environment) -> Callable[..., Session]:
    """Factory: store a session row directly, for states the API cannot make on demand.

    Equal ``created_at`` values, creation in the past and an already-passed ``expires_at`` are the
    uses; overrides are ``Session`` fields, and ``environment`` picks another environment.
    """

    def insert(environment: Environment = env, **overrides: Any) -> Session:
        now = utcnow()
        in_environment = {
            "organization_id": environment.organization_id,
            "project_id": environment.project_id,
            "environment_id": environment.id,
            "environment_type": environment.type.value,
            "created_at": now,
            "updated_at": now,
        }
        session = factories.make_session(**{**in_environment, **overrides})
        uow = UnitOfWork(engine)
        with uow:
            uow.sessions.insert_or_get(session)
            uow.commit()
        return session

    return insert
