"""A lost database connection is a 503 the client retries, then service resumes; never a 500."""

import sqlalchemy as sa

from session_core.config import Settings
from session_core.db.migrate import upgrade_database
from session_core.db.uow import UnitOfWork
from session_core.models import EnvironmentType, utcnow
from session_core.services.environments import create_environment
from session_web.app import create_app
from tests.integration.sessions_api import bearer, session_body


def test_requests_on_connections_the_server_dropped_get_503_then_service_resumes(make_pg_database):
    url = make_pg_database()
    upgrade_database(url)
    app = create_app(Settings(database_url=url))
    engine = app.extensions["sessions"].engine
    env = create_environment(UnitOfWork(engine), "outage", EnvironmentType.DEVELOPMENT, utcnow())
    client = app.test_client()
    assert (
        client.post("/api/v1/sessions", json=session_body(), headers=bearer(env.api_key)).status_code == 201
    )
    admin = sa.create_engine(url)
    with admin.connect() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    admin.dispose()

    dropped = client.post("/api/v1/sessions", json=session_body(), headers=bearer(env.api_key))
    resumed = client.post("/api/v1/sessions", json=session_body(), headers=bearer(env.api_key))

    assert dropped.status_code == 503
    assert dropped.get_json() == {"error": "Database unavailable; retry shortly"}
    assert resumed.status_code == 201
    app.extensions["sessions"].hub.close()
    engine.dispose()
