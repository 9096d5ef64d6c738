"""The replicator end to end: real PostgreSQL (wal_level=logical) to a real ClickHouse server.

The worker runs as ``python -m replicator`` in a subprocess, configured only through its
environment, exactly as the Procfile runs it.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from session_core.db import tables
from tests.integration.replication_helpers import (
    ClickHouseReader,
    ReplicatorProcess,
    close_session,
    crash_clickhouse,
    current_wal_lsn,
    insert_sessions,
    prepare_sessions_table,
    publication_exists,
    restart_clickhouse,
    session_row,
    slot_state,
    start_postgres_without_logical_wal,
    wait_until,
)
from tests.servers import free_port, start_clickhouse

pytestmark = [pytest.mark.postgres, pytest.mark.clickhouse]

PUBLICATION = "sessions_to_clickhouse_v1_publication"


class Setup:
    """One test's world: a PostgreSQL database, a ClickHouse database, a slot, and replicators."""

    def __init__(self, database_url: str, clickhouse_port: int, tmp_path) -> None:
        self.database_url = database_url
        self.engine = prepare_sessions_table(database_url)
        suffix = uuid.uuid4().hex[:10]
        self.slot = f"sessions_test_{suffix}"
        self.ch_database = f"r_{suffix}"
        self.clickhouse = ClickHouseReader(clickhouse_port, self.ch_database)
        self.tmp_path = tmp_path
        self.env = {
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": database_url,
            "CLICKHOUSE_URL": f"clickhouse://127.0.0.1:{clickhouse_port}/{self.ch_database}",
            "SESSION_REPLICATION_SLOT_NAME": self.slot,
            "SESSION_REPLICATION_FLUSH_INTERVAL_MS": "20",
            "SESSION_REPLICATION_FLUSH_BATCH_SIZE": "100",
            "SESSION_REPLICATION_LEADER_RETRY_INTERVAL_MS": "100",
            "SESSION_REPLICATION_INSERT_BASE_DELAY_MS": "20",
            "SESSION_REPLICATION_INSERT_MAX_DELAY_MS": "200",
            "SESSION_REPLICATION_METRICS_PORT": "0",
        }
        self.processes: list[ReplicatorProcess] = []

    def replicator(self, **env: str) -> ReplicatorProcess:
        log = self.tmp_path / f"replicator-{len(self.processes)}.log"
        process = ReplicatorProcess({**self.env, **env}, log)
        self.processes.append(process)
        return process

    def start(self, **env: str) -> ReplicatorProcess:
        process = self.replicator(**env).start()
        process.wait_for_log("replication started")
        return process

    def write(self, rows: list[dict]) -> None:
        with self.engine.begin() as conn:
            insert_sessions(conn, rows)

    def pg_sessions(self) -> dict[str, dict]:
        with self.engine.connect() as conn:
            return {row["id"]: dict(row) for row in conn.execute(sa.select(tables.sessions)).mappings()}

    def wait_for(self, expected: set[str], timeout: float = 20.0) -> dict[str, dict]:
        """Wait until ClickHouse's live sessions are exactly ``expected``."""
        return wait_until(
            lambda: (current := self.clickhouse.current()) and set(current) == expected and current,
            timeout,
            what=f"{len(expected)} sessions in clickhouse",
        )

    def close(self) -> None:
        for process in self.processes:
            process.stop()
        self.engine.dispose()
        self.clickhouse.drop()


@pytest.fixture
def setup(make_pg_database, clickhouse, tmp_path):
    world = Setup(make_pg_database(), clickhouse.port, tmp_path)
    try:
        yield world
    finally:
        world.close()  # make_pg_database then drops the database and its replication slots


def ms(moment: datetime) -> int:
    return (moment.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def test_insert_close_and_delete_reach_sessions_v1_with_the_right_columns(setup):
    setup.start()
    expires = datetime(2027, 1, 2, 3, 4, 5, 678000)
    kept = session_row(external_id="ext-1", tags=["a", "b"], metadata={"k": [1, "two"]}, expires_at=expires)
    doomed = session_row(type="other", task_identifier="t2")
    setup.write([kept, doomed])
    setup.wait_for({kept["id"], doomed["id"]})

    with setup.engine.begin() as conn:
        closed_at = close_session(conn, kept["id"], "test-close")
        conn.execute(tables.sessions.delete().where(tables.sessions.c.id == doomed["id"]))
    current = wait_until(
        lambda: (
            (rows := setup.clickhouse.current())
            and set(rows) == {kept["id"]}
            and rows[kept["id"]]["closed_at"]
            and rows
        ),
        what="the close and the delete",
    )

    row = current[kept["id"]]
    assert {k: v for k, v in row.items() if k not in ("_version",)} == {
        "environment_id": "env",
        "organization_id": "org",
        "project_id": "proj",
        "session_id": kept["id"],
        "environment_type": "DEVELOPMENT",
        "friendly_id": kept["friendly_id"],
        "external_id": "ext-1",
        "type": "chat.agent",
        "task_identifier": "agent",
        "tags": ["a", "b"],
        "metadata": '{"data":{"k":[1,"two"]}}',
        "closed_at": closed_at.replace(microsecond=0, tzinfo=UTC),
        "closed_reason": "test-close",
        "expires_at": expires.replace(microsecond=0, tzinfo=UTC),
        "created_at": kept["created_at"].replace(microsecond=0, tzinfo=UTC),
        "updated_at": closed_at.replace(microsecond=0, tzinfo=UTC),
        "created_at_ms": ms(kept["created_at"]),
        "expires_at_ms": ms(expires),
        "_is_deleted": 0,
    }
    tombstone = setup.clickhouse.final()[doomed["id"]]
    assert (tombstone["_is_deleted"], tombstone["type"], tombstone["task_identifier"]) == (1, "other", "t2")
    assert tombstone["_version"] == row["_version"]  # one transaction, one commit LSN


def test_a_thousand_row_bulk_insert_with_updates_mixed_in(setup):
    setup.start()
    rows = [session_row(tags=[f"n{i % 7}"]) for i in range(1000)]

    with setup.engine.begin() as conn:
        insert_sessions(conn, rows[:600])
        for row in rows[:600:10]:
            close_session(conn, row["id"], "bulk-close")
    with setup.engine.begin() as conn:
        insert_sessions(conn, rows[600:])
        for row in rows[600::25]:
            close_session(conn, row["id"], "late-close")
    for row in rows[1::50]:
        with setup.engine.begin() as conn:
            close_session(conn, row["id"], "own-transaction")
    current = setup.wait_for({row["id"] for row in rows})

    pg = setup.pg_sessions()

    def replicated_exactly() -> bool:
        rows = setup.clickhouse.current()
        return all(
            rows[sid]["closed_reason"] == (pg[sid]["closed_reason"] or "")
            and rows[sid]["tags"] == pg[sid]["tags"]
            for sid in pg
        )

    wait_until(replicated_exactly, what="every close to replicate")
    assert len(current) == 1000
    reasons = {reason for reason in (r["closed_reason"] for r in setup.clickhouse.current().values())}
    assert reasons == {"", "bulk-close", "late-close", "own-transaction"}


def test_a_multi_statement_transaction_lands_whole_with_its_last_state_per_row(setup):
    setup.start()
    a, b, c = session_row(), session_row(), session_row()

    with setup.engine.begin() as conn:
        insert_sessions(conn, [a, b])
        close_session(conn, a["id"], "first")
        conn.execute(
            tables.sessions.update().where(tables.sessions.c.id == a["id"]).values(closed_reason="second")
        )
        conn.execute(tables.sessions.delete().where(tables.sessions.c.id == b["id"]))
        insert_sessions(conn, [c])
    with setup.engine.connect() as conn:
        upper_bound = current_wal_lsn(conn)
    current = setup.wait_for({a["id"], c["id"]})

    assert current[a["id"]]["closed_reason"] == "second"
    assert setup.clickhouse.final()[b["id"]]["_is_deleted"] == 1
    versions = {row["_version"] for row in setup.clickhouse.final().values()}
    assert len(versions) == 1 and 0 < versions.pop() <= upper_bound


UNUSUAL = [
    "😀 emoji, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and 日本語",
    "right-to-left \u202e override \u200f mark",
    "zero\u200bwidth and \ufeff BOM",
    "combining e\u0301 and Z\u0351\u0362",
    "line\u2028separator\u2029paragraph\nnewline\ttab",
    "quotes \" ' and \\ backslashes",
    "{braces},commas,NULL",
]


def test_text_with_unusual_unicode_arrives_byte_for_byte(setup):
    setup.start()
    rows = [
        session_row(
            external_id=text, type=text, tags=[text, "NULL", "", " spaced "], metadata={"text": text, text: 1}
        )
        for text in UNUSUAL
    ]
    setup.write(rows)

    current = setup.wait_for({row["id"] for row in rows})

    for row in rows:
        replicated = current[row["id"]]
        assert replicated["external_id"] == row["external_id"]
        assert replicated["type"] == row["type"]
        assert replicated["tags"] == row["tags"]
        assert json.loads(replicated["metadata"]) == {"data": row["metadata"]}


def test_sessions_written_before_the_first_start_are_backfilled(setup):
    existing = [session_row(tags=["old"], metadata={"n": n}) for n in range(250)]
    setup.write(existing)
    with setup.engine.begin() as conn:
        close_session(conn, existing[0]["id"], "closed-before")
        conn.execute(tables.sessions.delete().where(tables.sessions.c.id == existing[1]["id"]))

    replicator = setup.start()
    with setup.engine.begin() as conn:
        close_session(conn, existing[2]["id"], "closed-after")
    current = setup.wait_for({r["id"] for r in existing[:1] + existing[2:]})

    wait_until(lambda: setup.clickhouse.current()[existing[2]["id"]]["closed_reason"] == "closed-after")
    assert current[existing[0]["id"]]["closed_reason"] == "closed-before"
    assert json.loads(current[existing[3]["id"]]["metadata"]) == {"data": {"n": 3}}
    assert "backfill done rows=249" in replicator.log()
    with setup.engine.connect() as conn:
        comment = conn.exec_driver_sql(
            "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %(p)s",
            {"p": PUBLICATION},
        ).scalar_one()
    assert comment == "sessions-replicator: backfill done"


def test_a_backfill_cut_short_runs_again_on_the_next_start(setup):
    rows = [session_row() for _ in range(30)]
    setup.write(rows)
    with setup.engine.begin() as conn:  # what a crash in the middle of the first backfill leaves behind
        conn.exec_driver_sql(f'CREATE PUBLICATION "{PUBLICATION}" FOR TABLE sessions')
        conn.exec_driver_sql(
            f"COMMENT ON PUBLICATION \"{PUBLICATION}\" IS 'sessions-replicator: backfill pending'"
        )
    with setup.engine.connect() as conn:
        conn.exec_driver_sql(
            "SELECT pg_create_logical_replication_slot(%(s)s, 'pgoutput')", {"s": setup.slot}
        )
        conn.commit()

    replicator = setup.start()
    setup.wait_for({r["id"] for r in rows})

    assert "backfill done rows=30" in replicator.log()
    assert "replication slot created" not in replicator.log()


def test_the_latest_version_wins_after_merges(setup):
    setup.start()
    row = session_row()
    setup.write([row])
    setup.wait_for({row["id"]})
    for n in range(5):
        with setup.engine.begin() as conn:
            conn.execute(
                tables.sessions.update()
                .where(tables.sessions.c.id == row["id"])
                .values(closed_reason=f"v{n}")
            )
        wait_until(lambda n=n: setup.clickhouse.current()[row["id"]]["closed_reason"] == f"v{n}")

    def merged() -> list[dict]:
        # OPTIMIZE is a no-op while a background merge holds the parts; ask again until it merges.
        setup.clickhouse.client.execute(f"OPTIMIZE TABLE {setup.clickhouse.table} FINAL")
        return setup.clickhouse.query("SELECT closed_reason, _version FROM {table}")

    raw = wait_until(lambda: len(rows := merged()) == 1 and rows, what="the final merge")
    assert raw[0]["closed_reason"] == "v4"


def test_restart_resumes_where_it_stopped_and_reprocesses_nothing(setup):
    first = setup.start()
    before = [session_row() for _ in range(10)]
    setup.write(before)
    setup.wait_for({r["id"] for r in before})

    assert first.terminate() == 0
    acked, active = slot_state(setup.engine, setup.slot)
    after = [session_row() for _ in range(10)]
    setup.write(after)
    with setup.engine.begin() as conn:
        for row in before[:5]:
            close_session(conn, row["id"], "while-stopped")
    setup.start()
    everything = {r["id"] for r in before + after}
    setup.wait_for(everything)
    wait_until(
        lambda: sum(r["closed_reason"] == "while-stopped" for r in setup.clickhouse.current().values()) == 5
    )

    assert active is None and acked is not None
    duplicates = setup.clickhouse.query(
        "SELECT session_id, _version, count() AS n FROM {table} GROUP BY session_id, _version HAVING n > 1"
    )
    assert duplicates == []
    versions = setup.clickhouse.query(
        "SELECT count() AS n FROM {table} WHERE _version <= %(acked)s", {"acked": acked}
    )
    assert versions == [{"n": 10}]  # only the first run wrote versions at or before its last ack
    assert "replicator stopped cleanly" in first.log()


def test_sigkill_in_the_middle_of_flushing_loses_nothing(setup):
    replicator = setup.start(
        SESSION_REPLICATION_FLUSH_BATCH_SIZE="20", SESSION_REPLICATION_FLUSH_INTERVAL_MS="5"
    )
    written: list[tuple[list[str], int]] = []
    stop_writing = threading.Event()

    def writer() -> None:
        for _ in range(40):
            if stop_writing.is_set():
                return
            rows = [session_row() for _ in range(100)]
            with setup.engine.begin() as conn:
                insert_sessions(conn, rows)
                for row in rows[::9]:
                    close_session(conn, row["id"], "in-flight")
            with setup.engine.connect() as conn:
                written.append(([r["id"] for r in rows], current_wal_lsn(conn)))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_until(lambda: 500 <= len(setup.clickhouse.current()), what="some rows flushed", interval=0.005)
        replicator.kill()
        acked, _ = slot_state(setup.engine, setup.slot)
        landed = set(setup.clickhouse.current())
    finally:
        stop_writing.set()
        thread.join(60)

    # The invariant: whatever PostgreSQL was told is safe is already in ClickHouse.
    assert acked is not None
    for ids, upper_bound in written:
        if upper_bound <= acked:
            assert set(ids) <= landed
    assert len(landed) < sum(len(ids) for ids, _ in written), "the kill came after everything was flushed"
    setup.start()
    pg = setup.pg_sessions()
    current = setup.wait_for(set(pg), timeout=30)
    assert all(current[sid]["closed_reason"] == (pg[sid]["closed_reason"] or "") for sid in pg)


@pytest.fixture
def private_clickhouse():
    """A ClickHouse server of this test's own, so it can be stopped and started again."""
    server = start_clickhouse()
    try:
        yield server
    finally:
        server.stop()


def test_clickhouse_down_for_a_while_then_back_catches_up_with_nothing_lost(private_clickhouse, setup):
    url = f"clickhouse://127.0.0.1:{private_clickhouse.port}/{setup.ch_database}"
    replicator = setup.start(CLICKHOUSE_URL=url)
    first = [session_row() for _ in range(5)]
    setup.write(first)
    with closing(ClickHouseReader(private_clickhouse.port, setup.ch_database)) as reader:
        wait_until(lambda: len(reader.current()) == 5)

    crash_clickhouse(private_clickhouse)
    with setup.engine.connect() as conn:
        before_outage_writes = current_wal_lsn(conn)
    during = [session_row() for _ in range(50)]
    setup.write(during)
    with setup.engine.begin() as conn:
        close_session(conn, first[0]["id"], "while-down")
    replicator.wait_for_log("clickhouse batch kept for retry")
    time.sleep(1.0)  # several retry rounds while the server is gone
    acked_during, _ = slot_state(setup.engine, setup.slot)
    restart_clickhouse(private_clickhouse)

    expected = {r["id"] for r in first + during}
    with closing(ClickHouseReader(private_clickhouse.port, setup.ch_database)) as reader:
        wait_until(lambda: set(reader.current()) == expected, timeout=30, what="catch-up")
        wait_until(lambda: reader.current()[first[0]["id"]]["closed_reason"] == "while-down")
    assert acked_during <= before_outage_writes  # nothing written during the outage was acknowledged
    wait_until(lambda: slot_state(setup.engine, setup.slot)[0] > before_outage_writes, what="the ack")
    assert "Traceback" not in replicator.log()


def test_two_replicators_one_consumes_and_the_standby_takes_over_within_seconds(setup):
    a = setup.replicator().start()
    b = setup.replicator().start()
    wait_until(lambda: any("replication started" in p.log() for p in (a, b)))
    leader, standby = (a, b) if "replication started" in a.log() else (b, a)
    standby.wait_for_log("standby waiting for the leader lock")
    rows = [session_row() for _ in range(20)]
    setup.write(rows)
    setup.wait_for({r["id"] for r in rows})

    assert slot_state(setup.engine, setup.slot)[1] is not None
    assert "replication started" not in standby.log()
    with setup.engine.connect() as conn:
        senders = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'sessions-replicator'"
        ).scalar_one()
    assert senders == 1

    leader.kill()
    killed_at = time.monotonic()
    standby.wait_for_log("replication started", timeout=15)
    takeover = time.monotonic() - killed_at
    more = [session_row() for _ in range(20)]
    setup.write(more)
    setup.wait_for({r["id"] for r in rows + more})

    assert takeover < 5, f"takeover took {takeover:.1f} s"


def test_metrics_are_served_in_prometheus_format(setup):
    port = free_port()
    setup.start(SESSION_REPLICATION_METRICS_PORT=str(port))
    rows = [session_row() for _ in range(3)]
    setup.write(rows)
    setup.wait_for({r["id"] for r in rows})

    def scrape() -> str:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    body = wait_until(
        lambda: (text := scrape()) and "sessions_replication_sessions_inserted_total 3.0" in text and text
    )
    for line in (
        "sessions_replication_replication_lag_ms_bucket",
        'sessions_replication_batches_flushed_total{success="true"}',
        "sessions_replication_batch_size_count",
        'sessions_replication_events_processed_total{event_type="insert"} 3.0',
        "sessions_replication_flush_duration_ms_count",
        "sessions_replication_insert_retries_total",
    ):
        assert line in body


# --- misconfiguration: one clear line, no traceback loop -------------------------------------------


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line]


def test_an_unreachable_clickhouse_is_retried_with_one_line_per_attempt(setup):
    dead = free_port()
    replicator = setup.replicator(CLICKHOUSE_URL=f"clickhouse://127.0.0.1:{dead}/x").start()

    replicator.wait_for_log("attempt=3")
    assert replicator.terminate() == 0

    log = replicator.log()
    attempts = [line for line in log.splitlines() if "clickhouse unreachable" in line]
    assert len(attempts) >= 3
    assert f"address=127.0.0.1:{dead}" in attempts[0] and "Connection refused" in attempts[0]
    assert "Traceback" not in log


def test_a_publication_with_the_wrong_tables_stops_with_the_alter_publication_fix(setup):
    with setup.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE PUBLICATION "{PUBLICATION}" FOR TABLE environments')
    replicator = setup.replicator().start()

    assert replicator.wait_exit() == 2
    log = replicator.log()
    [line] = error_lines(log)
    assert "publishes public.environments" in line
    assert f'ALTER PUBLICATION "{PUBLICATION}" SET TABLE public.sessions' in line
    assert "Traceback" not in log
    assert slot_state(setup.engine, setup.slot) == (None, None)


def test_a_table_without_replica_identity_full_stops_with_the_fix(setup):
    with setup.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE sessions REPLICA IDENTITY DEFAULT")
    replicator = setup.replicator().start()

    assert replicator.wait_exit() == 2
    [line] = error_lines(replicator.log())
    assert "ALTER TABLE public.sessions REPLICA IDENTITY FULL" in line


def test_missing_wal_level_logical_stops_with_one_clear_line(tmp_path, clickhouse):
    server = start_postgres_without_logical_wal()
    try:
        url = server.database_url(server.create_database("sessions"))
        replicator = ReplicatorProcess(
            {
                "PATH": "/usr/bin:/bin",
                "DATABASE_URL": url,
                "CLICKHOUSE_URL": f"clickhouse://127.0.0.1:{clickhouse.port}/unused",
                "SESSION_REPLICATION_METRICS_PORT": "0",
            },
            tmp_path / "replicator.log",
        ).start()
        try:
            assert replicator.wait_exit() == 2
        finally:
            replicator.stop()
        log = replicator.log()
        [line] = error_lines(log)
        assert "wal_level=replica" in line and "ALTER SYSTEM SET wal_level = logical" in line
        assert "Traceback" not in log
        assert not publication_exists(server.database_dsn("sessions"), PUBLICATION)
    finally:
        server.stop()


def test_a_missing_clickhouse_url_stops_with_one_clear_line(setup):
    env = {k: v for k, v in setup.env.items() if k != "CLICKHOUSE_URL"}
    replicator = ReplicatorProcess(env, setup.tmp_path / "no-ch.log")
    setup.processes.append(replicator)
    replicator.start()

    assert replicator.wait_exit() == 2
    [line] = error_lines(replicator.log())
    assert "CLICKHOUSE_URL is not set" in line


def test_an_idle_replicator_lets_the_slot_release_wal_written_by_other_tables(setup):
    # Channel appends move the WAL on while no session changes; a slot that never confirmed past
    # them would pin all of it. (psycopg2 confirms keepalives once our own acks are up to date.)
    setup.start()
    rows = [session_row()]
    setup.write(rows)
    setup.wait_for({r["id"] for r in rows})
    with setup.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE unrelated (n int)")
        conn.exec_driver_sql("INSERT INTO unrelated SELECT generate_series(1, 1000)")
        written_up_to = current_wal_lsn(conn)

    confirmed = wait_until(
        lambda: (
            (acked := slot_state(setup.engine, setup.slot)[0]) is not None
            and acked >= written_up_to
            and acked
        ),
        timeout=15,
        what="the slot to confirm WAL past the unrelated writes",
    )

    assert confirmed >= written_up_to
