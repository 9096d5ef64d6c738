"""Smoke tests: the session fixtures start real, correctly configured servers."""

from contextlib import closing

import psycopg2
import pytest
import sqlalchemy
from clickhouse_driver import Client

pytestmark = pytest.mark.postgres


def test_postgres_runs_with_logical_wal_level(postgres):
    with closing(psycopg2.connect(postgres.dsn)) as conn, conn.cursor() as cur:
        cur.execute("SHOW wal_level")

        assert cur.fetchone() == ("logical",)


def test_pg_url_points_at_the_shared_test_database(pg_url):
    engine = sqlalchemy.create_engine(pg_url)

    with engine.connect() as conn:
        name = conn.execute(sqlalchemy.text("SELECT current_database()")).scalar()
    engine.dispose()

    assert name == "sessions_test"


def test_make_pg_database_gives_distinct_empty_databases(make_pg_database):
    first, second = make_pg_database(), make_pg_database()
    engine = sqlalchemy.create_engine(first)

    with engine.connect() as conn:
        tables = conn.execute(sqlalchemy.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
        count = tables.scalar()
    engine.dispose()

    assert first != second
    assert count == 0


def test_db_url_opens_an_empty_database(db_url):
    engine = sqlalchemy.create_engine(db_url)

    with engine.connect() as conn:
        names = sqlalchemy.inspect(conn).get_table_names()
    engine.dispose()

    assert names == []


@pytest.mark.clickhouse
def test_clickhouse_answers_select_1(clickhouse):
    client = Client(host="127.0.0.1", port=clickhouse.port)

    try:
        rows = client.execute("SELECT 1")
        low_cardinality = client.execute("SELECT toLowCardinality('x')")
    finally:
        client.disconnect()

    assert rows == [(1,)]
    assert low_cardinality == [("x",)]
