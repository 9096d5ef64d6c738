"""ClickHouse insert retries: backoff with jitter, and which errors are never retried."""

import pytest
from clickhouse_driver.errors import NetworkError, ServerException

from session_core.replication.metrics import ReplicationMetrics
from session_core.replication.sink import (
    ClickHouseSink,
    PermanentInsertError,
    TransientInsertError,
    backoff_delay,
    describe_error,
    is_permanent,
)
from session_core.replication.target import parse_clickhouse_url


def test_backoff_doubles_from_the_base_up_to_the_cap_plus_jitter():
    delays = [backoff_delay(attempt, 100, 2000, jitter=0.0) for attempt in range(1, 7)]

    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert backoff_delay(1, 100, 2000, jitter=1.0) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "exc",
    [
        ServerException("DB::Exception: Table sessions.sessions_v1 doesn't exist.", code=60),
        ServerException("DB::Exception: Database sessions doesn't exist", code=81),
        ServerException("DB::Exception: No such column foo in table sessions_v1", code=16),
        ServerException("DB::Exception: Wrong password for user default", code=193),
        ServerException("DB::Exception: Syntax error: failed at position 1", code=62),
        ServerException("Authentication failed: password is incorrect", code=516),
        ServerException("something about a schema mismatch", code=1000),
        TypeError("unsupported operand type(s)"),
    ],
    ids=lambda exc: type(exc).__name__ + str(getattr(exc, "code", "")),
)
def test_errors_no_retry_can_fix_are_permanent(exc):
    assert is_permanent(exc)


@pytest.mark.parametrize(
    "exc",
    [
        NetworkError("Code: 210. Connection refused (127.0.0.1:9000)"),
        ConnectionResetError("reset by peer"),
        EOFError("Unexpected EOF while reading bytes"),
        ServerException(
            "DB::Exception: Too many parts (300). Merges are processing significantly slower", code=252
        ),
        ServerException("DB::Exception: Memory limit (total) exceeded", code=241),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_network_and_load_errors_are_retried(exc):
    assert not is_permanent(exc)


def test_errors_are_described_on_one_line_without_the_server_stack_trace():
    exc = ServerException(
        "DB::Exception: Table x doesn't exist.. Stack trace:\n\n0. clickhouse-server(...)", code=60
    )

    assert describe_error(exc) == "ClickHouse code 60: DB::Exception: Table x doesn't exist."
    refused = NetworkError("Connection refused (127.0.0.1:1)")
    assert describe_error(refused) == "NetworkError: Code: 210. Connection refused (127.0.0.1:1)"


class FakeClient:
    def __init__(self, script):
        self.script = script
        self.executed = []
        self.disconnected = False

    def execute(self, statement, rows):
        outcome = self.script.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        self.executed.append((statement, rows))

    def disconnect(self):
        self.disconnected = True


class FakeTarget:
    """A ClickHouseTarget whose clients follow a script of outcomes, one per insert attempt."""

    def __init__(self, script):
        self.script = script
        self.clients = []
        self.table = parse_clickhouse_url("clickhouse://h:9000/db").table

    def connect(self):
        self.clients.append(FakeClient(self.script))
        return self.clients[-1]


def make_sink(target, sleeps, max_retries=3):
    return ClickHouseSink(
        target,
        ReplicationMetrics(),
        max_retries=max_retries,
        base_delay_ms=100,
        max_delay_ms=2000,
        sleep=sleeps.append,
    )


def test_a_failed_insert_is_retried_on_a_fresh_connection_after_a_growing_delay():
    target = FakeTarget([NetworkError("refused"), NetworkError("refused"), None])
    sleeps = []

    make_sink(target, sleeps).insert([{"session_id": "a"}])

    assert len(target.clients) == 3
    assert all(client.disconnected for client in target.clients[:2])
    statement, rows = target.clients[-1].executed[0]
    assert statement.startswith("INSERT INTO db.sessions_v1 (environment_id, organization_id,")
    assert rows == [{"session_id": "a"}]
    assert 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.3


def test_an_insert_that_keeps_failing_raises_transient_after_max_retries():
    target = FakeTarget([NetworkError("refused")] * 4)
    sleeps = []

    with pytest.raises(TransientInsertError, match="refused"):
        make_sink(target, sleeps).insert([{"session_id": "a"}])
    assert len(sleeps) == 3


def test_a_permanent_error_is_raised_at_once():
    target = FakeTarget([ServerException("DB::Exception: Table db.sessions_v1 doesn't exist.", code=60)])
    sleeps = []

    with pytest.raises(PermanentInsertError, match="code 60"):
        make_sink(target, sleeps).insert([{"session_id": "a"}])
    assert sleeps == []
