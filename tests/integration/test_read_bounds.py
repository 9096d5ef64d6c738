"""Reads are bounded by bytes, in the database, and appends by what they store (issue 10 item 3).

Bodies of quotes are the worst case: the envelope stores each `"` as `\\"`, two bytes, so a body
of 600 KB becomes a record of 1.2 MB. Records here are stored at 1,000,000 bytes each.
"""

import json

import pytest

from session_core.channels.records import NewRecord, channel_key
from session_core.channels.store import SqlChannelStore
from session_core.db.uow import UnitOfWork
from session_core.envelopes import MAX_RECORD_BYTES
from session_core.services.channels import MAX_BATCH_BYTES
from session_web.realtime import RECORDS_PAGE_BYTES
from tests.integration.sessions_api import bearer

RECORDS = 8
#: `{"data":"` + 2 bytes per quote + `","id":"` + a 7-character part id + `"}`: 1,000,000 bytes.
QUOTES = (1_000_000 - 26) // 2
STORED = 2 * QUOTES + 26
#: What a page or batch may hold beyond its bound: one record, and the JSON around each record.
SLACK_PER_RECORD = 200


def channel(ref, io):
    return f"/realtime/v1/sessions/{ref}/{io}"


@pytest.fixture
def big_channel(client, env, make_session):
    """A session (by its externalId) whose `.in` holds RECORDS records of STORED bytes each."""
    ref = make_session()["externalId"]
    for n in range(RECORDS):
        response = client.post(
            channel(ref, "in") + "/append",
            data='"' * QUOTES,
            headers={**bearer(env.api_key), "X-Part-Id": f"part-{n}"},
        )
        assert response.status_code == 200, response.get_data(as_text=True)
    return ref


def test_a_records_page_stops_at_its_byte_bound_and_paging_returns_every_record_once(
    client, env, big_channel
):
    pages, after = [], None
    while True:
        query = f"?afterEventId={after}" if after is not None else ""
        response = client.get(channel(big_channel, "in") + "/records" + query, headers=bearer(env.api_key))
        assert response.status_code == 200
        records = response.get_json()["records"]
        if not records:
            break
        pages.append((len(response.get_data()), [r["seqNum"] for r in records]))
        after = records[-1]["seqNum"]

    assert [seq for _, page in pages for seq in page] == list(range(RECORDS))
    assert len(pages) > 1
    for size, page in pages:
        assert size <= RECORDS_PAGE_BYTES + STORED + SLACK_PER_RECORD * len(page)


def test_an_sse_batch_stops_at_its_byte_bound(client, env, big_channel):
    response = client.get(channel(big_channel, "in"), headers={**bearer(env.api_key), "Timeout-Seconds": "1"})
    batches = [
        json.loads(block.split("data: ", 1)[1])["records"]
        for block in response.get_data(as_text=True).split("\n\n")
        if block.startswith("event: batch")
    ]

    assert [r["seq_num"] for batch in batches for r in batch] == list(range(RECORDS))
    for batch in batches:
        assert sum(8 + len(r["body"].encode()) for r in batch) <= MAX_BATCH_BYTES + STORED + 8


def test_an_s2_read_stops_at_its_byte_bound(client, env, big_channel):
    name = f"sessions/{big_channel}/in"
    response = client.get(f"/s2/v1/streams/{name}/records?seq_num=0&count=1000", headers=bearer(env.api_key))

    records = response.get_json()["records"]
    assert [r["seq_num"] for r in records] == [0]  # S2's 1 MiB batch: one record of 1,000,008 metered


def test_the_store_reads_no_more_than_its_byte_bound_plus_one_record(engine, env):
    key = channel_key(env.id, "bounded", "in")
    with UnitOfWork(engine) as uow:
        uow.channels.append(key, [NewRecord("x" * 300_000)] * 20, now_ms=1)
        uow.commit()

    with engine.connect() as conn:
        store = SqlChannelStore(conn)
        bounded = store.read(key, 0, 1000, 1_000_000)
        records, tail = store.read_with_tail(key, 3, 1000, 500_000)
        unbounded = store.read(key, 0, 1000)

    assert [r.seq_num for r in bounded] == [0, 1, 2, 3]  # 1.2 MB: the 4th reaches the bound
    assert [r.seq_num for r in records] == [3, 4]
    assert tail.seq_num == 20
    assert len(unbounded) == 20


def test_an_append_is_limited_by_what_it_stores(client, env, make_session):
    ref = make_session()["id"]
    quotes = MAX_RECORD_BYTES // 2  # 512 KiB of quotes: under 1 MiB raw, over it once stored

    refused = client.post(channel(ref, "in") + "/append", data='"' * quotes, headers=bearer(env.api_key))
    drained = client.get(channel(ref, "in") + "/records", headers=bearer(env.api_key))

    assert refused.status_code == 413
    assert "once stored" in refused.get_json()["error"]
    assert drained.get_json()["records"] == []


def test_a_settled_peek_finds_the_turn_complete_behind_huge_records(client, env, make_session):
    """The peek reads the channel's last records in byte-bounded batches and still finds the end."""
    ref = make_session()["externalId"]
    key = channel_key(env.id, ref, "out")
    with UnitOfWork(client.application.extensions["sessions"].engine) as uow:
        uow.channels.append(key, [NewRecord("x" * 700_000)] * 4, now_ms=1)
        uow.channels.append(key, [NewRecord("", [["trigger-control", "turn-complete"]])], now_ms=1)
        uow.commit()

    peek = client.get(channel(ref, "out"), headers={**bearer(env.api_key), "X-Peek-Settled": "1"})

    assert peek.headers.get("X-Session-Settled") == "true"
    assert [r["seq_num"] for batch in _batches(peek) for r in batch] == [0, 1, 2, 3, 4]


def _batches(response):
    return [
        json.loads(block.split("data: ", 1)[1])["records"]
        for block in response.get_data(as_text=True).split("\n\n")
        if block.startswith("event: batch")
    ]
