"""DATABASE_URL (a SQLAlchemy URL) to the libpq DSN the replication connection needs."""

import pytest
from psycopg2.extensions import parse_dsn

from replicator.postgres import SetupError, libpq_dsn


def test_a_sqlalchemy_url_becomes_a_libpq_dsn_with_its_query_options():
    dsn = libpq_dsn("postgresql+psycopg2://app:p%40ss@db.internal:6543/sessions?sslmode=require")

    assert parse_dsn(dsn) == {
        "host": "db.internal",
        "port": "6543",
        "user": "app",
        "password": "p@ss",
        "dbname": "sessions",
        "sslmode": "require",
    }


def test_a_url_without_host_or_port_leaves_them_to_libpq_defaults():
    assert parse_dsn(libpq_dsn("postgresql://postgres@/sessions")) == {
        "user": "postgres",
        "dbname": "sessions",
    }


@pytest.mark.parametrize("url", ["sqlite:///sessions.db", "not a url"])
def test_anything_but_postgresql_is_a_setup_error(url):
    with pytest.raises(SetupError, match="DATABASE_URL"):
        libpq_dsn(url)
