"""Readiness checks: can this process reach the stores it answers from? (``/readyz`` runs them.)

Each check answers None when the store is usable, or a short reason for the operator; the driver's
own message goes to the log, never to the (unauthenticated) caller.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from clickhouse_driver.errors import Error as ClickHouseError

from session_core.replication.target import parse_clickhouse_url

logger = logging.getLogger(__name__)

UNAVAILABLE = "unavailable"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def database_problem(engine: sa.Engine) -> str | None:
    """Run ``SELECT 1`` on a pooled connection.

    After a database restart the pool's connections are stale: the first statement fails and
    invalidates them all, so the check tries once more on a fresh connection before it says no.
    """
    for attempt in range(2):
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return None
        except sa.exc.DBAPIError as exc:
            if attempt == 0 and exc.connection_invalidated:
                continue
            logger.warning("readiness database unavailable error=%s", _first_line(exc.orig or exc))
    return UNAVAILABLE


def clickhouse_problem(clickhouse_url: str) -> str | None:
    """Run ``SELECT 1`` on a fresh ClickHouse connection (its URL's timeouts bound the wait)."""
    client = parse_clickhouse_url(clickhouse_url).connect()
    try:
        client.execute("SELECT 1")
    except (ClickHouseError, OSError, EOFError) as exc:
        logger.warning("readiness clickhouse unavailable error=%s", _first_line(exc))
        return UNAVAILABLE
    finally:
        client.disconnect()
    return None
