"""The PostgreSQL append with and without prepared statements (``SESSIONS_PG_PREPARE``).

Behind a pooler in transaction mode (PgBouncer) a statement prepared on one server connection may
be missing on the next, so the append can run unprepared. Both ways must behave alike, and the
unprepared way must leave nothing prepared on the server.
"""

import uuid
from datetime import datetime

import pytest
import sqlalchemy as sa

from session_core.channels.records import Append, NewRecord, OpenSession, SeqNumMismatch, channel_key
from session_core.channels.store import SqlChannelStore
from session_core.config import Settings
from session_core.db.engine import make_engine
from session_core.db.tables import metadata
from session_core.repositories.sql import SqlSessionRepository
from session_web.app import create_app
from tests.unit.factories import make_session

pytestmark = pytest.mark.postgres

NOW = 1_800_000_000_000
ACTIVE_AT = datetime(2027, 1, 15)


@pytest.fixture
def database_url(make_pg_database):
    """A fresh PostgreSQL database holding the tables."""
    url = make_pg_database()
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    return url


def prepared_statements(conn: sa.Connection) -> int:
    """How many statements this connection's server session holds prepared."""
    return conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar_one()


def run_every_append_path(url: str, prepare: bool):
    """Append through each path of the PostgreSQL append, on a connection of its own; return what
    a caller sees of each, and how many statements the connection then holds prepared."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            store = SqlChannelStore(conn, prepare=prepare)
            session = make_session(environment_id="env", external_id=f"chat-{uuid.uuid4().hex[:8]}")
            SqlSessionRepository(conn).insert_or_get(session)
            key = channel_key("env", session.external_id, "in")
            first = store.append(
                key,
                [NewRecord("a", [["h", "v"]]), NewRecord("b", timestamp=NOW - 5)],
                now_ms=NOW,
                part_id="p",
            )
            retried = store.append(key, [NewRecord("a"), NewRecord("b")], now_ms=NOW + 1, part_id="p")
            with pytest.raises(SeqNumMismatch) as mismatch:
                store.append(key, [NewRecord("c")], now_ms=NOW, match_seq_num=0)
            matched = store.append(key, [NewRecord("c")], now_ms=NOW + 2, match_seq_num=2)
            group = store.append_while_open(
                OpenSession("env", session.external_id, ACTIVE_AT),
                "in",
                [Append([NewRecord("d")], "q"), Append([NewRecord("e")], "q"), Append([NewRecord("f")])],
                now_ms=NOW + 3,
            )
            by_other_name = store.append_while_open(
                OpenSession("env", session.friendly_id, ACTIVE_AT),
                "in",
                [Append([NewRecord("x")])],
                now_ms=NOW,
            )
            records = [(r.seq_num, r.timestamp, r.body, r.headers) for r in store.read(key, 0, 100)]
            seen = {
                "first": first,
                "retried": retried,
                "mismatch_tail": mismatch.value.tail,
                "matched": matched,
                "group": group.acks,
                "group_session": group.session == session,
                "by_other_name": by_other_name.acks,
                "records": records,
            }
            return seen, prepared_statements(conn)
    finally:
        engine.dispose()


def test_the_append_behaves_alike_prepared_or_not(database_url):
    prepared, _ = run_every_append_path(database_url, prepare=True)

    unprepared, _ = run_every_append_path(database_url, prepare=False)

    assert unprepared == prepared
    assert unprepared["retried"].is_duplicate and unprepared["retried"].start == unprepared["first"].start
    assert unprepared["mismatch_tail"] == 2
    assert [ack.start.seq_num for ack in unprepared["group"]] == [3, 3, 4]
    assert unprepared["group_session"] is True
    assert [ack.start.seq_num for ack in unprepared["by_other_name"]] == [5]  # the same channel
    assert unprepared["records"] == [
        (0, NOW, "a", [["h", "v"]]),
        (1, NOW, "b", []),
        (2, NOW + 2, "c", []),
        (3, NOW + 3, "d", []),
        (4, NOW + 3, "f", []),
        (5, NOW + 3, "x", []),
    ]


def test_an_unprepared_append_leaves_no_prepared_statement_on_the_server(database_url):
    _, with_prepare = run_every_append_path(database_url, prepare=True)

    _, without_prepare = run_every_append_path(database_url, prepare=False)

    assert with_prepare > 0  # the check can tell
    assert without_prepare == 0


def test_sessions_pg_prepare_0_reaches_the_apps_appends(database_url):
    app = create_app(Settings.from_env({"DATABASE_URL": database_url, "SESSIONS_PG_PREPARE": "0"}))
    services = app.extensions["sessions"]
    try:
        uow = services.uow()
        with uow:
            uow.channels.append("env/sessions/s/in", [NewRecord("a")], now_ms=NOW)
            uow.commit()
            left_prepared = prepared_statements(uow._conn)
        writer = services.uow().autocommitting()
        with writer:
            writer.channels.append("env/sessions/s/in", [NewRecord("b")], now_ms=NOW)
            left_prepared += prepared_statements(writer._conn)
    finally:
        services.hub.close()
        services.engine.dispose()

    assert left_prepared == 0
