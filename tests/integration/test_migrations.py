"""Alembic migrations: one head, and a migrated database matches ``tables.metadata`` exactly."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from session_core.db.migrate import alembic_config, upgrade_database
from session_core.db.tables import metadata


def test_only_single_head_revision_in_migrations():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))

    assert len(script.get_heads()) == 1


def test_migrated_schema_matches_the_tables_the_code_uses(db_url):
    upgrade_database(db_url)
    engine = sa.create_engine(db_url)

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()

    assert diff == []


def test_migrating_twice_is_harmless(db_url):
    upgrade_database(db_url)
    upgrade_database(db_url)

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert "sessions" in sa.inspect(conn).get_table_names()
    engine.dispose()


def test_sessions_table_has_full_replica_identity_on_postgres(make_pg_database):
    url = make_pg_database()
    upgrade_database(url)
    engine = sa.create_engine(url)

    with engine.connect() as conn:
        identity = conn.execute(
            sa.text("SELECT relreplident FROM pg_class WHERE relname = 'sessions'")
        ).scalar()
    engine.dispose()

    assert identity == "f"
