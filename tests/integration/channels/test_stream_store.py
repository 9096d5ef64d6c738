"""SqlChannelStore on real SQLite and PostgreSQL: seq_num order, de-duplication, reads, trims, rollback."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from session_core.channels.records import Append, NewRecord, SeqNumMismatch, StreamPosition
from session_core.channels.store import SqlChannelStore
from session_core.db.tables import channel_parts
from session_core.errors import InvalidInput

NOW = 1_800_000_000_000


def append(engine, key, *bodies, now_ms=NOW, **options):
    with engine.begin() as conn:
        records = [NewRecord(body) for body in bodies]
        return SqlChannelStore(conn).append(key, records, now_ms=now_ms, **options)


def read(engine, key, start_seq=0, limit=1000):
    with engine.begin() as conn:
        return SqlChannelStore(conn).read(key, start_seq, limit)


def append_group(engine, key, *appends, now_ms=NOW):
    """Append a group given as ``(body, part_id)`` pairs, one record per append."""
    with engine.begin() as conn:
        items = [Append([NewRecord(body)], part) for body, part in appends]
        return SqlChannelStore(conn).append_group(key, items, now_ms=now_ms)


def tail(engine, key):
    with engine.begin() as conn:
        return SqlChannelStore(conn).tail(key)


def test_seq_nums_start_at_zero_and_follow_on_across_appends(engine, key):
    first = append(engine, key, "a", "b")
    second = append(engine, key, "c")

    assert (first.start.seq_num, first.end.seq_num) == (0, 2)
    assert (second.start.seq_num, second.end.seq_num) == (2, 3)
    assert second.tail == StreamPosition(3, NOW)
    assert [(r.seq_num, r.body) for r in read(engine, key)] == [(0, "a"), (1, "b"), (2, "c")]


def test_concurrent_appenders_get_unique_gap_free_seq_nums(engine, key):
    writers, appends_each, batch = 8, 15, 2
    barrier = threading.Barrier(writers, timeout=30)

    def write(writer):
        barrier.wait()
        return [
            append(engine, key, *(f"{writer}-{n}-{i}" for i in range(batch))).start.seq_num
            for n in range(appends_each)
        ]

    with ThreadPoolExecutor(writers) as pool:
        starts = [seq for result in pool.map(write, range(writers)) for seq in result]

    total = writers * appends_each * batch
    assert sorted(starts) == list(range(0, total, batch))
    records = read(engine, key)
    assert [r.seq_num for r in records] == list(range(total))
    assert len({r.body for r in records}) == total
    assert tail(engine, key).seq_num == total


def test_channels_count_independently(engine, key):
    other = key.replace("/out", "/in")

    append(engine, key, "a", "b")
    ack = append(engine, other, "x")

    assert ack.start.seq_num == 0
    assert [r.body for r in read(engine, other)] == ["x"]


def test_read_starts_at_any_seq_num_and_honours_the_limit(engine, key):
    append(engine, key, *(str(n) for n in range(10)))

    assert [r.seq_num for r in read(engine, key, start_seq=4, limit=3)] == [4, 5, 6]
    assert [r.seq_num for r in read(engine, key, start_seq=8)] == [8, 9]
    assert read(engine, key, start_seq=10) == []
    assert read(engine, "env/sessions/never-written/out") == []


def test_records_keep_headers_and_timestamps(engine, key):
    records = [
        NewRecord("", headers=[["trigger-control", "turn-complete"], ["last-event-id", "7"]]),
        NewRecord('{"data":"x"}', timestamp=NOW - 5_000),
        NewRecord("late", timestamp=NOW + 60_000),
    ]
    with engine.begin() as conn:
        SqlChannelStore(conn).append(key, records, now_ms=NOW)

    stored = read(engine, key)

    assert stored[0].headers == [["trigger-control", "turn-complete"], ["last-event-id", "7"]]
    assert stored[1].headers == []
    # client timestamps are capped at arrival time and never go backwards
    assert [r.timestamp for r in stored] == [NOW, NOW, NOW]


def test_timestamps_never_decrease_even_if_the_clock_does(engine, key):
    append(engine, key, "a", now_ms=NOW)

    ack = append(engine, key, "b", now_ms=NOW - 1_000)

    assert ack.start.timestamp == NOW
    assert [r.timestamp for r in read(engine, key)] == [NOW, NOW]


def test_a_retried_part_id_returns_the_first_position_without_writing(engine, key):
    first = append(engine, key, "a", part_id="part-1")
    append(engine, key, "b")

    retry = append(engine, key, "a", part_id="part-1", now_ms=NOW + 1_000)

    assert retry.is_duplicate
    assert retry.start.seq_num == first.start.seq_num == 0
    assert retry.tail.seq_num == 2
    assert [r.body for r in read(engine, key)] == ["a", "b"]


def test_concurrent_retries_of_one_part_id_write_once(engine, key):
    with ThreadPoolExecutor(6) as pool:
        acks = list(pool.map(lambda _: append(engine, key, "once", part_id="same"), range(6)))

    assert {ack.start.seq_num for ack in acks} == {0}
    assert sum(not ack.is_duplicate for ack in acks) == 1
    assert [r.body for r in read(engine, key)] == ["once"]


def test_a_part_id_is_forgotten_after_its_ttl(engine, key):
    append(engine, key, "a", part_id="part-1", part_id_ttl_ms=1_000)

    again = append(engine, key, "a", part_id="part-1", part_id_ttl_ms=1_000, now_ms=NOW + 1_000)

    assert not again.is_duplicate
    assert again.start.seq_num == 1
    assert append(engine, key, "a", part_id="part-1", part_id_ttl_ms=1_000, now_ms=NOW + 1_500).is_duplicate


def test_expired_part_ids_are_swept(engine, key):
    for n in range(5):
        append(engine, key, "x", part_id=f"old-{n}", part_id_ttl_ms=1_000)

    append(engine, key, "y", part_id="new", part_id_ttl_ms=1_000, now_ms=NOW + 2_000)

    with engine.begin() as conn:
        remaining = conn.execute(channel_parts.select().where(channel_parts.c.channel_key == key)).all()
    assert [row.part_id for row in remaining] == ["new"]


def test_a_group_lands_in_order_with_one_ack_per_append(engine, key):
    append(engine, key, "before")

    with engine.begin() as conn:
        acks = SqlChannelStore(conn).append_group(
            key, [Append([NewRecord("a"), NewRecord("b")]), Append([NewRecord("c")])], now_ms=NOW
        )

    assert [(a.start.seq_num, a.end.seq_num, a.tail.seq_num) for a in acks] == [(1, 3, 4), (3, 4, 4)]
    assert not any(ack.is_duplicate for ack in acks)
    assert [r.body for r in read(engine, key)] == ["before", "a", "b", "c"]


def test_a_group_answers_part_ids_seen_on_the_channel_or_earlier_in_the_group(engine, key):
    append(engine, key, "first", part_id="p1")

    acks = append_group(engine, key, ("retry", "p1"), ("y", "p2"), ("z", "p2"), ("w", None), ("v", "p3"))

    assert [(a.start.seq_num, a.is_duplicate) for a in acks] == [
        (0, True),
        (1, False),
        (1, True),
        (2, False),
        (3, False),
    ]
    assert {ack.tail.seq_num for ack in acks} == {4}
    assert [r.body for r in read(engine, key)] == ["first", "y", "w", "v"]
    assert append(engine, key, "again", part_id="p3").start.seq_num == 3


def test_a_group_of_retries_only_writes_nothing(engine, key):
    append(engine, key, "a", part_id="p1")
    append(engine, key, "b", part_id="p2")

    acks = append_group(engine, key, ("a", "p1"), ("b", "p2"), ("b", "p2"))

    assert [(a.start.seq_num, a.is_duplicate) for a in acks] == [(0, True), (1, True), (1, True)]
    assert {ack.tail for ack in acks} == {StreamPosition(2, NOW)}
    assert len(read(engine, key)) == 2


def test_concurrent_groups_with_overlapping_part_ids_write_each_part_once(engine, key):
    writers, groups_each, parts = 6, 10, 40
    barrier = threading.Barrier(writers, timeout=30)

    def write(writer):
        barrier.wait()
        acks = []
        for n in range(groups_each):
            chosen = [f"part-{(writer * 7 + n * 3 + i) % parts}" for i in range(3)]
            acks.extend(
                zip(chosen, append_group(engine, key, *((part, part) for part in chosen)), strict=True)
            )
        return acks

    with ThreadPoolExecutor(writers) as pool:
        acks = [ack for result in pool.map(write, range(writers)) for ack in result]

    records = read(engine, key)
    written = {r.body: r.seq_num for r in records}
    assert [r.seq_num for r in records] == list(range(len(records)))
    assert len(written) == len(records)  # no part id was written twice
    assert all(ack.start.seq_num == written[part] for part, ack in acks)
    assert sum(not ack.is_duplicate for _, ack in acks) == len(records)


def test_the_same_part_id_on_another_channel_is_a_new_append(engine, key):
    append(engine, key, "a", part_id="part-1")

    ack = append(engine, key.replace("/out", "/in"), "a", part_id="part-1")

    assert not ack.is_duplicate


def test_match_seq_num_appends_only_at_the_tail(engine, key):
    append(engine, key, "a")

    assert append(engine, key, "b", match_seq_num=1).start.seq_num == 1
    with pytest.raises(SeqNumMismatch) as mismatch:
        append(engine, key, "c", match_seq_num=1)

    assert mismatch.value.tail == 2
    assert [r.body for r in read(engine, key)] == ["a", "b"]


def test_match_seq_num_zero_creates_a_channel_only_once(engine, key):
    append(engine, key, "a", match_seq_num=0)

    with pytest.raises(SeqNumMismatch):
        append(engine, key, "b", match_seq_num=0)


def test_trim_deletes_below_a_seq_num_and_never_reuses_it(engine, key):
    append(engine, key, "a", "b", "c", "d")

    with engine.begin() as conn:
        SqlChannelStore(conn).trim(key, 3)
    ack = append(engine, key, "e")

    assert ack.start.seq_num == 4
    assert [r.seq_num for r in read(engine, key)] == [3, 4]
    assert [r.seq_num for r in read(engine, key, start_seq=1)] == [3, 4]
    assert [r.seq_num for r in read(engine, key, start_seq=0, limit=1)] == [3]


def test_trim_past_the_tail_empties_the_channel_but_keeps_its_counter(engine, key):
    append(engine, key, "a", "b")

    with engine.begin() as conn:
        SqlChannelStore(conn).trim(key, 100)

    assert read(engine, key) == []
    assert tail(engine, key).seq_num == 2


def test_a_rolled_back_append_leaves_nothing(engine, key):
    announced = []
    with engine.connect() as conn:
        with conn.begin() as tx:
            SqlChannelStore(conn, on_appended=lambda *args: announced.append(args)).append(
                key, [NewRecord("a")], now_ms=NOW, part_id="p"
            )
            tx.rollback()

    assert tail(engine, key) == StreamPosition(0, 0)
    assert read(engine, key) == []
    assert not append(engine, key, "b", part_id="p").is_duplicate
    assert [(k, batch.tail.seq_num) for k, batch in announced] == [(key, 1)]  # acting on it waits for commit


def test_the_records_announced_are_the_records_a_read_returns(engine, key):
    announced = []
    append(engine, key, "a")
    with engine.begin() as conn:
        store = SqlChannelStore(conn, on_appended=lambda _key, batch: announced.append(batch))
        store.append(
            key,
            [NewRecord("b", [["trigger-control", "turn-complete"]], timestamp=NOW - 5), NewRecord("c")],
            now_ms=NOW + 7,
        )
    with engine.begin() as conn:
        records, tail_now = SqlChannelStore(conn).read_with_tail(key, 1, 10)

    assert announced[0].records == records
    assert announced[0].tail == tail_now == StreamPosition(3, NOW + 7)


def test_the_tail_of_a_new_channel_is_zero(engine):
    assert tail(engine, "env/sessions/nobody/in") == StreamPosition(0, 0)


@pytest.mark.parametrize("body", ["nul \x00 inside", "lone \ud800 surrogate"])
def test_text_that_cannot_be_stored_is_refused_on_every_backend(engine, key, body):
    with pytest.raises(InvalidInput):
        append(engine, key, body)

    assert tail(engine, key).seq_num == 0


def test_unicode_bodies_round_trip(engine, key):
    append(engine, key, "héllo ✓ 🚀")

    assert read(engine, key)[0].body == "héllo ✓ 🚀"
