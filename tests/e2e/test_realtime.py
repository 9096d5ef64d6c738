"""The realtime channels over HTTP against gunicorn (two gevent workers), on SQLite and PostgreSQL.

Nothing is timed: live reads are bounded by ``Timeout-Seconds`` and generous client timeouts.
"""

import http.client
import json
import socket
import threading
import time
import urllib.parse
import uuid

import pytest
import requests

from tests.e2e.sse_client import subscribe
from tests.servers import LiveServer


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path_factory):
    """One database per backend for this module; tests stay apart by sessions of their own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('realtime')}/sessions.db"
    postgres = request.getfixturevalue("postgres")
    return postgres.database_url(postgres.create_database())


@pytest.fixture(scope="module")
def server(database_url):
    with LiveServer(database_url, workers=2) as live:
        yield live


@pytest.fixture(scope="module")
def api(server):
    key = server.create_env(f"rt-{uuid.uuid4().hex[:8]}")["apiKey"]
    return Api(server.base_url, key)


class Api:
    def __init__(self, base_url, api_key):
        self.base = base_url
        self.auth = {"Authorization": f"Bearer {api_key}"}
        self.http = requests.Session()

    def create(self, external_id=None):
        body = {"type": "chat.agent", "taskIdentifier": "agent", "triggerConfig": {"basePayload": {}}}
        if external_id:
            body["externalId"] = external_id
        response = self.http.post(f"{self.base}/api/v1/sessions", json=body, headers=self.auth, timeout=10)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def channel(self, ref, io):
        return f"{self.base}/realtime/v1/sessions/{ref}/{io}"

    def append(self, ref, io, body, headers=None):
        return self.http.post(
            self.channel(ref, io) + "/append", data=body, headers={**self.auth, **(headers or {})}, timeout=10
        )

    def records(self, ref, io, after=None, headers=None):
        query = "" if after is None else f"?afterEventId={after}"
        response = self.http.get(
            self.channel(ref, io) + "/records" + query, headers=headers or self.auth, timeout=10
        )
        return response

    def all_records(self, ref, io):
        found, after = [], None
        for _ in range(1000):
            page = self.records(ref, io, after).json()["records"]
            if not page:
                return found
            found += page
            after = page[-1]["seqNum"]
        raise AssertionError("records never ran dry")

    def subscribe(self, ref, io, headers=None, **options):
        headers = {**self.auth, "Timeout-Seconds": "2", **(headers or {})}
        return subscribe(self.channel(ref, io), headers, **options)


def data_of(record):
    return json.loads(record["body"])["data"]


def test_the_seed_round_trip(api):
    created = api.create(external_id=f"chat-{uuid.uuid4()}")
    friendly, external = created["id"], created["externalId"]
    for ref in (friendly, external):
        assert api.http.get(f"{api.base}/api/v1/sessions/{ref}", headers=api.auth).json()["id"] == friendly

    initialized = api.http.put(api.channel(friendly, "out"), headers=api.auth)
    first = api.append(friendly, "out", '{"text":"hello"}')
    second = api.append(external, "out", '{"text":"world"}')
    into = api.append(external, "in", '{"text":"hi agent"}')
    live = api.subscribe(external, "out", stop_after_records=2)
    closed = api.http.post(
        f"{api.base}/api/v1/sessions/{friendly}/close", json={"reason": "done"}, headers=api.auth
    )
    reclosed = api.http.post(f"{api.base}/api/v1/sessions/{friendly}/close", json={}, headers=api.auth)
    refused = api.append(friendly, "out", '{"text":"too late"}')

    assert initialized.status_code == 202 and initialized.json() == {"version": "v2"}
    assert [first.json(), second.json(), into.json()] == [
        {"ok": True, "seq": 0},
        {"ok": True, "seq": 1},
        {"ok": True, "seq": 0},
    ]
    assert live.headers["X-Stream-Version"] == "v2"
    assert [(r["seq_num"], data_of(r)) for r in live.records] == [
        (0, '{"text":"hello"}'),
        (1, '{"text":"world"}'),
    ]
    assert closed.status_code == reclosed.status_code == 200
    assert reclosed.json()["closedAt"] == closed.json()["closedAt"]
    assert refused.status_code == 400
    assert refused.json() == {"ok": False, "error": "Cannot append to a closed session"}
    stored = api.all_records(friendly, "out")
    assert len(stored) == 3 and stored[2]["headers"][0] == ["trigger-control", "session-closed"]


def read_cut_and_resumed(writer_api, first_reader, second_reader, total, cut_after):
    """Append ``total`` records through ``writer_api`` while ``first_reader`` reads the first
    ``cut_after`` of them live; then ``second_reader`` resumes with ``Last-Event-ID``.

    Returns the records each read (the first reader's cut at ``cut_after``).
    """
    ref = writer_api.create()["id"]
    writer = threading.Thread(target=lambda: [writer_api.append(ref, "out", f'"{n}"') for n in range(total)])
    writer.start()
    before = first_reader.subscribe(
        ref, "out", stop_after_records=cut_after, headers={"Timeout-Seconds": "30"}
    )
    last = before.records[cut_after - 1]["seq_num"]
    after = second_reader.subscribe(
        ref,
        "out",
        stop_after_records=total - cut_after,
        headers={"Last-Event-ID": str(last), "Timeout-Seconds": "30"},
    )
    writer.join(30)
    return before.records[:cut_after], after.records[: total - cut_after]


def test_a_resumed_subscriber_gets_every_record_once_while_writers_append(api):
    before, after = read_cut_and_resumed(api, api, api, total=60, cut_after=20)

    assert [r["seq_num"] for r in before + after] == list(range(60))
    assert [data_of(r) for r in after] == [f'"{n}"' for n in range(20, 60)]


def test_a_reader_on_another_server_gets_every_record_once_and_resumes_on_the_first(
    database_url, server, api
):
    """Two servers on one database: records appended through one reach a live reader of the other
    (the wake-up crosses processes: LISTEN/NOTIFY, or SQLite's data_version), and that reader,
    cut and resumed with Last-Event-ID on the first server, misses and repeats nothing."""
    with LiveServer(database_url, workers=1) as other:
        elsewhere = Api(other.base_url, api.auth["Authorization"].removeprefix("Bearer "))
        before, after = read_cut_and_resumed(api, elsewhere, api, total=40, cut_after=15)

    assert [r["seq_num"] for r in before + after] == list(range(40))


def test_a_retried_part_id_is_stored_once(api):
    ref = api.create()["id"]

    first = api.append(ref, "in", "a", headers={"X-Part-Id": "part-1"})
    retry = api.append(ref, "in", "a", headers={"X-Part-Id": "part-1"})

    assert first.json() == retry.json() == {"ok": True, "seq": 0}
    assert [(r["data"], r["id"]) for r in api.all_records(ref, "in")] == [("a", "part-1")]


def test_records_drain_from_after_event_id(api):
    ref = api.create()["id"]
    for n in range(3):
        api.append(ref, "in", str(n))

    page = api.records(ref, "in", after=0).json()

    assert [(r["seqNum"], r["data"]) for r in page["records"]] == [(1, "1"), (2, "2")]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("abc", "Invalid timeout seconds"),
        ("0", "Timeout seconds must be greater than 0"),
        ("601", "Timeout seconds must be less than 600"),
    ],
)
def test_a_bad_timeout_is_a_plain_text_400(api, header, message):
    ref = api.create()["id"]

    response = api.http.get(api.channel(ref, "out"), headers={**api.auth, "Timeout-Seconds": header})

    assert (response.status_code, response.text) == (400, message)


def test_bad_appends_are_refused_and_store_nothing(api):
    ref = api.create()["id"]
    other = api.create()
    other_token = other["publicAccessToken"]

    unknown_io = api.append(ref, "sideways", "x")
    too_big = api.append(ref, "in", "x" * (1024 * 1024 + 1))
    chunked = api.http.post(api.channel(ref, "in") + "/append", data=iter([b"x"]), headers=api.auth)
    foreign = api.append(ref, "in", "x", headers={"Authorization": f"Bearer {other_token}"})
    out_with_token = api.append(other["id"], "out", "x", headers={"Authorization": f"Bearer {other_token}"})
    missing = api.append("session_doesnotexist0000000000", "in", "x")

    assert unknown_io.status_code == 400
    assert too_big.status_code == 413
    assert chunked.status_code == 413
    assert foreign.status_code == 403
    assert out_with_token.status_code == 403
    assert missing.status_code == 404
    assert api.all_records(ref, "in") == [] and api.all_records(other["id"], "out") == []


def test_a_session_token_appends_to_in_and_reads_out(api):
    created = api.create()
    token = {"Authorization": f"Bearer {created['publicAccessToken']}"}

    appended = api.append(created["id"], "in", "from the browser", headers=token)
    read = api.records(created["id"], "in", headers=token)

    assert appended.json() == {"ok": True, "seq": 0}
    assert [r["data"] for r in read.json()["records"]] == ["from the browser"]


def test_an_unwritten_external_id_can_be_read_without_a_row(api):
    live = api.subscribe(f"never-created-{uuid.uuid4()}", "out", headers={"Timeout-Seconds": "1"})

    assert live.status == 200 and live.records == []


def test_a_missing_friendly_id_is_404_even_for_a_token_of_another_session(api):
    token = {"Authorization": f"Bearer {api.create()['publicAccessToken']}"}

    response = api.http.get(api.channel("session_doesnotexist0000000000", "out"), headers=token)

    assert (response.status_code, response.json()) == (404, {"error": "Not found"})


def test_a_token_of_another_session_cannot_read(api):
    ref = api.create()["id"]
    token = {"Authorization": f"Bearer {api.create()['publicAccessToken']}"}

    response = api.http.get(api.channel(ref, "out"), headers=token)

    assert response.status_code == 403


def test_head_answers_the_last_chunk_index(api):
    ref = api.create()["id"]

    response = api.http.head(api.channel(ref, "out"), headers=api.auth)

    assert response.status_code == 200 and response.headers["X-Last-Chunk-Index"] == "0"


def grant(api, ref, io="out"):
    """PUT the channel and return the S2 client's view of it: endpoint, stream URL and auth."""
    response = api.http.put(api.channel(ref, io), headers=api.auth)
    assert response.status_code == 202, response.text
    stream = requests.utils.quote(response.headers["X-S2-Stream-Name"], safe="")
    url = f"{response.headers['X-S2-Endpoint']}/streams/{stream}/records"
    auth = {
        "Authorization": f"Bearer {response.headers['X-S2-Access-Token']}",
        "s2-basin": response.headers["X-S2-Basin"],
    }
    return url, auth


def test_the_s2_endpoint_appends_and_reads_the_same_channel(api):
    ref = api.create()["id"]
    url, auth = grant(api, ref)
    batch = {
        "records": [
            {"body": json.dumps({"data": {"type": "text-delta"}, "id": "abc1234"})},
            {"headers": [["trigger-control", "turn-complete"]]},
        ]
    }

    ack = api.http.post(url, json=batch, headers=auth)
    read = api.http.get(url + "?seq_num=0", headers=auth)
    tail = api.http.get(url + "/tail", headers=auth)
    via_realtime = api.records(ref, "out")

    assert ack.status_code == 200 and ack.headers["Content-Type"] == "application/json"
    assert (ack.json()["start"]["seq_num"], ack.json()["end"]["seq_num"]) == (0, 2)
    assert [r["seq_num"] for r in read.json()["records"]] == [0, 1]
    assert read.json()["records"][1] == {
        "seq_num": 1,
        "timestamp": ack.json()["end"]["timestamp"],
        "headers": [["trigger-control", "turn-complete"]],
    }
    assert tail.json()["tail"]["seq_num"] == 2
    first, last = (r["timestamp"] for r in read.json()["records"])
    assert via_realtime.json()["records"] == [
        {"data": {"type": "text-delta"}, "id": "abc1234", "seqNum": 0, "timestamp": first},
        {
            "data": "",
            "id": "",
            "seqNum": 1,
            "timestamp": last,
            "headers": [["trigger-control", "turn-complete"]],
        },
    ]


def test_the_s2_endpoint_answers_a_lost_match_seq_num_with_412(api):
    url, auth = grant(api, api.create()["id"])
    api.http.post(url, json={"records": [{"body": "a"}], "match_seq_num": 0}, headers=auth)

    lost = api.http.post(url, json={"records": [{"body": "b"}], "match_seq_num": 0}, headers=auth)

    assert (lost.status_code, lost.json()) == (412, {"seq_num_mismatch": 1})


def test_the_s2_endpoint_answers_a_read_past_the_tail_with_416_unless_clamped(api):
    url, auth = grant(api, api.create()["id"])
    api.http.post(url, json={"records": [{"body": "a"}]}, headers=auth)

    past = api.http.get(url + "?seq_num=5", headers=auth)
    clamped = api.http.get(url + "?seq_num=5&clamp=true", headers=auth)

    assert past.status_code == 416 and past.json()["tail"]["seq_num"] == 1
    assert clamped.status_code == 200 and clamped.json()["records"] == []


def test_an_s2_token_is_good_for_its_own_stream_only(api):
    first, second = api.create()["id"], api.create()["id"]
    _, auth = grant(api, first)
    other_url, _ = grant(api, second)

    response = api.http.post(other_url, json={"records": [{"body": "x"}]}, headers=auth)
    control_plane = api.http.get(f"{api.base}/api/v1/sessions/{first}", headers=auth)

    assert response.status_code == 403
    assert control_plane.status_code == 403


def test_the_s2_endpoint_streams_a_read_session(api):
    ref = api.create()["id"]
    url, auth = grant(api, ref)
    api.http.post(url, json={"records": [{"body": "a"}, {"body": "b"}]}, headers=auth)

    live = subscribe(url + "?seq_num=1&wait=1", auth)

    assert [(r["seq_num"], r["body"]) for r in live.records] == [(1, "b")]


def test_a_settled_out_channel_drains_and_closes_at_once(api):
    ref = api.create()["id"]
    url, auth = grant(api, ref)
    api.http.post(
        url,
        json={"records": [{"body": "answer"}, {"headers": [["trigger-control", "turn-complete"]]}]},
        headers=auth,
    )

    live = api.subscribe(ref, "out", headers={"X-Peek-Settled": "1", "Timeout-Seconds": "600"}, timeout=20)

    assert live.headers.get("X-Session-Settled") == "true"
    assert [r["seq_num"] for r in live.records] == [0, 1]


def test_an_unsettled_out_channel_is_not_peeked_as_settled(api):
    ref = api.create()["id"]
    api.append(ref, "out", "still talking")

    live = api.subscribe(ref, "out", headers={"X-Peek-Settled": "1", "Timeout-Seconds": "1"})

    assert "X-Session-Settled" not in live.headers


def test_shutdown_ends_open_streams_with_an_error_event(database_url):
    with LiveServer(database_url, workers=1) as live:
        key = live.create_env(f"shutdown-{uuid.uuid4().hex[:8]}")["apiKey"]
        api = Api(live.base_url, key)
        ref = api.create()["id"]
        events = []
        reader = threading.Thread(
            target=lambda: events.extend(
                api.subscribe(ref, "out", headers={"Timeout-Seconds": "600"}, timeout=60).events
            )
        )
        reader.start()
        api.append(ref, "out", "before shutdown")
        api.subscribe(ref, "out", stop_after_records=1)  # the stream is open and has delivered

        live.stop()
        reader.join(60)

    assert [e.name for e in events][-1] == "error"
    assert "batch" in [e.name for e in events]


def test_no_acknowledged_append_is_lost_when_the_server_is_killed(database_url):
    with LiveServer(database_url, workers=2) as live:
        api = Api(live.base_url, live.create_env(f"crash-{uuid.uuid4().hex[:8]}")["apiKey"])
        ref = api.create()["id"]
        acknowledged, stop = [], threading.Event()

        def write(writer):
            for n in range(10_000):
                if stop.is_set():
                    return
                body = f"{writer}-{n}"
                try:
                    response = api.append(ref, "in", body)
                except requests.RequestException:
                    return
                if response.status_code == 200:
                    acknowledged.append((response.json()["seq"], body))

        writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in writers:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        live.kill()
        stop.set()
        for thread in writers:
            thread.join(30)
        live.start()

        stored = {(r["seqNum"], r["data"]) for r in api.all_records(ref, "in")}

    assert len(acknowledged) >= 200
    assert set(acknowledged) <= stored
    assert sorted(seq for seq, _ in stored) == list(range(len(stored)))


def test_closing_a_session_ends_every_live_reader_after_the_marker(api):
    """Readers of both channels, with a long ``Timeout-Seconds``, end on the close, not on the timeout."""
    ref = api.create()["id"]
    api.append(ref, "in", '"hello"')
    results = {}

    def read(io):
        results[io] = api.subscribe(ref, io, headers={"Timeout-Seconds": "120"}, timeout=60)

    readers = [threading.Thread(target=read, args=(io,)) for io in ("in", "out")]
    for reader in readers:
        reader.start()
    time.sleep(0.5)  # let both readers reach the tail; a later start would replay the marker anyway
    closed = api.http.post(
        f"{api.base}/api/v1/sessions/{ref}/close", json={"reason": "done"}, headers=api.auth, timeout=10
    )
    for reader in readers:
        reader.join(60)

    assert closed.status_code == 200
    for io in ("in", "out"):
        last = results[io].records[-1]
        assert last["headers"] == [["trigger-control", "session-closed"], ["session-closed-reason", "done"]]
        assert "body" not in last
        assert results[io].events[-1].name == "batch"  # the stream ended right after the marker


class RawReader:
    """A live read over a raw connection, started at the tail; with a ``receive_buffer``, a small
    receive window: while it reads nothing, the server's writes to it soon find its socket full."""

    def __init__(self, url: str, headers: dict, receive_buffer: int | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        self.connection.sock = socket.create_connection((parsed.hostname, parsed.port))
        if receive_buffer is not None:
            self.connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.connection.request("GET", parsed.path, headers={"Accept": "text/event-stream", **headers})
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        assert self.response.readline().startswith(b"event: ping")  # at the tail, waiting
        self.records: list[dict] = []

    def read_records(self, count: int) -> list[dict]:
        for _ in range(100_000):
            line = self.response.readline()
            assert line, f"the stream ended after {len(self.records)} of {count} records"
            if line.startswith(b'data: {"records"'):
                self.records += json.loads(line[6:])["records"]
                if len(self.records) >= count:
                    break
        self.connection.close()
        return self.records


BATCHES = 10


def test_a_reader_whose_connection_is_full_still_gets_every_record_once_in_order(tmp_path):
    """One worker, so each append is fanned out by the process that holds the readers and written
    straight to their connections: a connection that takes only part of a batch gets the rest from
    its own reader, before anything else."""
    total = BATCHES * 900
    with LiveServer(f"sqlite:///{tmp_path}/sessions.db", workers=1) as live:
        api = Api(live.base_url, live.create_env("stalled")["apiKey"])
        ref = api.create()["id"]
        url, auth = grant(api, ref)
        headers = {**api.auth, "Timeout-Seconds": "60"}
        stalled = RawReader(api.channel(ref, "out"), headers, receive_buffer=65536)
        flowing = RawReader(api.channel(ref, "out"), headers)
        reader = threading.Thread(target=flowing.read_records, args=(total,))
        reader.start()
        for batch in range(BATCHES):  # more than a socket's largest send buffer (4 MiB by default)
            body = {"records": [{"body": json.dumps({"data": f"{batch:01000}"})} for _ in range(900)]}
            assert api.http.post(url, json=body, headers=auth, timeout=30).status_code == 200
        reader.join(60)
        stalled.read_records(total)

    assert not reader.is_alive()
    assert [r["seq_num"] for r in stalled.records] == list(range(total))
    assert [r["seq_num"] for r in flowing.records] == list(range(total))
