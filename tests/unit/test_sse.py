"""SSE frames and the live-tail generator, driven by an in-memory channel: no I/O, no sleeps."""

import json
import threading

from session_core.channels.records import ReadBatch, StreamPosition
from session_core.channels.wakeups import Subscription, WakeupHub
from session_core.models import ChannelRecord
from session_core.s2 import ReadLimits, clip_records, metered_bytes
from session_web import sse
from session_web.sse import TailOptions, event, record_json, tail_events


class Channel:
    """Records in memory, read in batches of ``batch_size`` like the store."""

    def __init__(self, *bodies, batch_size=2, first_seq=0):
        self.records = [ChannelRecord(first_seq + n, 1000 + n, body) for n, body in enumerate(bodies)]
        self.next_seq = first_seq + len(bodies)
        self.batch_size = batch_size
        self.reads = []

    def add(self, body):
        self.records.append(ChannelRecord(self.next_seq, 2000, body))
        self.next_seq += 1

    def fetch(self, start):
        self.reads.append(start)
        found = [r for r in self.records if r.seq_num >= start][: self.batch_size]
        last = self.records[-1].timestamp if self.records else 0
        return ReadBatch(found, StreamPosition(self.next_seq, last))


def names(events):
    return [e.decode().split("\n")[0].removeprefix("event: ") for e in events]


def batch_seqs(events):
    return [
        [r["seq_num"] for r in json.loads(e.decode().split("data: ", 1)[1])["records"]]
        for e in events
        if e.startswith(b"event: batch")
    ]


def test_an_event_splits_multi_line_data():
    assert event("error", "one\ntwo", "7") == "event: error\nid: 7\ndata: one\ndata: two\n\n"


def test_a_record_leaves_out_empty_headers_and_body():
    assert record_json(ChannelRecord(3, 9, "")) == {"seq_num": 3, "timestamp": 9}
    assert record_json(ChannelRecord(3, 9, "hi", [["a", "b"]]), is_base64=True) == {
        "seq_num": 3,
        "timestamp": 9,
        "headers": [["YQ==", "Yg=="]],
        "body": "aGk=",
    }


def test_metered_bytes_follow_s2():
    assert metered_bytes(ChannelRecord(0, 0, "héllo", [["ab", "c"]])) == 8 + 2 + 3 + 6


def test_clip_stops_at_count_bytes_and_until():
    records = [ChannelRecord(n, 10 * n, "x" * 10) for n in range(5)]

    assert clip_records(records, ReadLimits(count=2)) == (records[:2], True)
    assert clip_records(records, ReadLimits(count=3), counted=2) == (records[:1], True)
    assert clip_records(records, ReadLimits(bytes=40)) == (records[:2], True)
    assert clip_records(records, ReadLimits(until=30)) == (records[:3], True)
    assert clip_records(records, ReadLimits()) == (records, False)


def test_a_record_over_the_byte_limit_still_goes_out_first():
    big = ChannelRecord(0, 0, "x" * 100)

    assert clip_records([big], ReadLimits(bytes=10)) == ([big], False)


def test_a_read_pings_first_then_drains_in_batches_and_ends_at_the_tail():
    channel = Channel("a", "b", "c")

    events = list(tail_events(channel.fetch, WakeupHub(), "k", 0, TailOptions(0, 15)))

    assert names(events) == ["ping", "batch", "batch"]
    assert batch_seqs(events) == [[0, 1], [2]]
    assert channel.reads == [0, 2]


def test_a_batch_carries_the_resume_position_and_the_tail():
    events = list(tail_events(Channel("a").fetch, WakeupHub(), "k", 0, TailOptions(0, 15)))

    assert b"id: 1,1,9\n" in events[1]
    assert json.loads(events[1].decode().split("data: ", 1)[1])["tail"] == {"seq_num": 1, "timestamp": 1000}


def test_a_read_resumes_from_its_start():
    events = list(tail_events(Channel("a", "b", "c").fetch, WakeupHub(), "k", 2, TailOptions(0, 15)))

    assert batch_seqs(events) == [[2]]


def test_a_start_past_the_tail_starts_at_the_tail():
    channel, hub = Channel("a"), WakeupHub()

    def fetch_while_another_writer_appends(start):
        batch = channel.fetch(start)
        if len(channel.reads) == 1:
            channel.add("b")
            hub.publish("k", channel.next_seq)
        return batch

    events = tail_events(fetch_while_another_writer_appends, hub, "k", 50, TailOptions(60, 15))
    next(events)

    assert batch_seqs([next(events)]) == [[1]]
    assert channel.reads == [50, 1]


def test_trimmed_records_are_skipped():
    channel = Channel("d", first_seq=3)

    events = list(tail_events(channel.fetch, WakeupHub(), "k", 0, TailOptions(0, 15)))

    assert batch_seqs(events) == [[3]]


def test_a_published_append_is_delivered_live():
    channel, hub = Channel("a"), WakeupHub()
    events = tail_events(channel.fetch, hub, "k", 0, TailOptions(60, 15))
    assert names([next(events), next(events)]) == ["ping", "batch"]

    channel.add("b")
    hub.publish("k", channel.next_seq)

    assert batch_seqs([next(events)]) == [[1]]


def written_batch(channel):
    """What the store hands the hub for the channel's last record: that record and the tail."""
    return ReadBatch([channel.records[-1]], StreamPosition(channel.next_seq, channel.records[-1].timestamp))


def test_records_appended_in_this_process_are_delivered_without_a_read():
    channel, hub = Channel("a"), WakeupHub()
    events = tail_events(channel.fetch, hub, "k", 0, TailOptions(60, 15))
    assert names([next(events), next(events)]) == ["ping", "batch"]

    channel.add("b")
    hub.publish("k", channel.next_seq, written_batch(channel))

    assert batch_seqs([next(events)]) == [[1]]
    assert channel.reads == [0]


def test_written_records_that_do_not_follow_on_are_read_instead():
    channel, hub = Channel("a"), WakeupHub()
    events = tail_events(channel.fetch, hub, "k", 0, TailOptions(60, 15))
    assert names([next(events), next(events)]) == ["ping", "batch"]

    channel.add("b")  # appended elsewhere: only its tail is announced
    hub.publish("k", channel.next_seq)
    channel.add("c")
    hub.publish("k", channel.next_seq, written_batch(channel))

    assert batch_seqs([next(events)]) == [[1, 2]]
    assert channel.reads == [0, 1]


def test_written_records_behind_a_newer_tail_are_read_instead():
    channel, hub = Channel("a"), WakeupHub()
    events = tail_events(channel.fetch, hub, "k", 0, TailOptions(60, 15))
    assert names([next(events), next(events)]) == ["ping", "batch"]

    channel.add("b")
    written = written_batch(channel)
    channel.add("c")  # appended elsewhere, announced before this process's own wake-up
    hub.publish("k", channel.next_seq)
    hub.publish("k", written.tail.seq_num, written)

    assert batch_seqs([next(events)]) == [[1, 2]]
    assert channel.reads == [0, 1]


def test_a_count_limit_ends_the_read():
    channel = Channel("a", "b", "c")

    events = list(tail_events(channel.fetch, WakeupHub(), "k", 0, TailOptions(60, 15, ReadLimits(count=1))))

    assert batch_seqs(events) == [[0]]


def test_closing_the_hub_ends_the_read_with_an_error_event():
    channel, hub = Channel(), WakeupHub()
    events = tail_events(channel.fetch, hub, "k", 0, TailOptions(600, 15))
    next(events)

    hub.close()

    assert names(list(events)) == ["error"]


def test_a_reader_that_goes_away_unsubscribes():
    hub = WakeupHub()
    events = tail_events(Channel().fetch, hub, "k", 0, TailOptions(600, 15))
    next(events)
    assert hub.subscribed_keys() == ["k"]

    events.close()

    assert hub.subscribed_keys() == []


def test_readers_of_one_shared_batch_encode_it_once_and_a_limited_reader_encodes_its_own(monkeypatch):
    shared = ReadBatch([ChannelRecord(0, 1, "a"), ChannelRecord(1, 2, "b")], StreamPosition(2, 2))
    options = TailOptions(0, 15)
    encoded = []
    monkeypatch.setattr(sse, "_json", lambda value: encoded.append(value) or json.dumps(value))

    first = list(tail_events(lambda seq: shared, WakeupHub(), "k", 0, options))
    second = list(tail_events(lambda seq: shared, WakeupHub(), "k", 0, options))
    limited = list(
        tail_events(lambda seq: shared, WakeupHub(), "k", 0, TailOptions(0, 15, ReadLimits(count=1)))
    )

    batches = [value for value in encoded if "records" in value]
    assert first[1:] == second[1:]  # after the ping: the same batch event
    assert [[r["seq_num"] for r in value["records"]] for value in batches] == [[0, 1], [0]]
    assert batch_seqs(first) == [[0, 1]]
    assert batch_seqs(limited) == [[0]]


def test_a_large_written_batch_goes_out_in_events_of_about_a_mebibyte():
    """Records an append wrote reach readers without a read; an event still holds at most
    ``MAX_BATCH_BYTES`` of them plus one record, and the rest are read after it."""
    channel, hub = Channel("a", batch_size=1000), WakeupHub()
    events = tail_events(channel.fetch, hub, "k", 0, TailOptions(60, 15))
    assert names([next(events), next(events)]) == ["ping", "batch"]

    for _ in range(5):
        channel.add("x" * 400_000)
    written = ReadBatch(channel.records[1:], StreamPosition(channel.next_seq, 2000))
    hub.publish("k", channel.next_seq, written)

    assert batch_seqs([next(events), next(events)]) == [[1, 2, 3], [4, 5]]
    assert channel.reads == [0, 4]


def test_readers_at_one_position_share_one_event_and_others_get_their_own_id():
    shared = ReadBatch([ChannelRecord(5, 1, "a"), ChannelRecord(6, 2, "b")], StreamPosition(7, 2))
    options = TailOptions(0, 15)

    first = list(tail_events(lambda seq: shared, WakeupHub(), "k", 5, options))
    second = list(tail_events(lambda seq: shared, WakeupHub(), "k", 5, TailOptions(0, 5)))
    from_six = list(
        tail_events(
            lambda seq: shared if seq == 5 else ReadBatch(shared.records[1:], shared.tail),
            WakeupHub(),
            "k",
            6,
            options,
        )
    )

    assert first[1] is second[1]  # one event text for both
    assert b"id: 7,2," in first[1]
    assert batch_seqs(from_six) == [[6]]
    assert b"id: 7,1," in from_six[1]


class Sink:
    """A connection that takes at most ``room`` bytes without waiting (None: all), or raises ``error``."""

    def __init__(self, room=None, error=None, chunked=True):
        self.room, self.error, self.chunked = room, error, chunked
        self.wire = b""
        self.sent = 0

    def try_send(self, data):
        if self.error is not None:
            raise self.error
        taken = data if self.room is None else data[: self.room]
        self.wire += taken
        self.sent += len(taken)
        return len(taken)

    def send_all(self, data):
        self.wire += data
        self.sent += len(data)


def read_while_parked(monkeypatch, sink, publish, wakes=False, close_at_once=False):
    """Run a live read of a one-record channel on a thread; once it waits at the tail, ``publish``,
    let it wait again if the append ``wakes`` it, then close the hub. Return the generator's events.

    With ``close_at_once`` the hub closes right after ``publish``, before the reader runs again."""
    channel, hub = Channel("a"), WakeupHub()
    parked, resume = threading.Event(), threading.Event()
    wait = Subscription.wait

    def signalling_wait(self, tail, timeout):
        parked.set()
        woke = wait(self, tail, timeout)
        assert resume.wait(10)
        return woke

    monkeypatch.setattr(Subscription, "wait", signalling_wait)
    events = []
    reader = threading.Thread(
        target=lambda: events.extend(tail_events(channel.fetch, hub, "k", 0, TailOptions(60, 15), sink=sink))
    )
    reader.start()
    assert parked.wait(10)
    parked.clear()
    publish(channel, hub)
    if not close_at_once:
        resume.set()
        assert parked.wait(10) if wakes else not parked.is_set()
    hub.close()
    resume.set()
    reader.join(10)
    assert not reader.is_alive()
    return events


def append_b(channel, hub):
    channel.add("b")
    hub.publish("k", channel.next_seq, written_batch(channel))


def unchunk(wire):
    """The one HTTP/1.1 chunk ``wire`` holds, checked and unwrapped."""
    size, rest = wire.split(b"\r\n", 1)
    assert rest.endswith(b"\r\n") and int(size, 16) == len(rest) - 2
    return rest[:-2]


def test_a_reader_waiting_at_the_tail_gets_this_process_appends_written_to_its_connection(monkeypatch):
    sink = Sink()

    events = read_while_parked(monkeypatch, sink, append_b)

    assert names(events) == ["ping", "batch", "error"] and batch_seqs(events) == [[0]]
    delivered = unchunk(sink.wire)
    assert delivered.startswith(b"event: batch\nid: 2,2,") and batch_seqs([delivered]) == [[1]]


def test_an_event_a_full_connection_took_in_part_is_finished_by_the_reader_before_anything_else(
    monkeypatch,
):
    whole, part = Sink(), Sink(room=10)
    read_while_parked(monkeypatch, whole, append_b)

    events = read_while_parked(monkeypatch, part, append_b, wakes=True)

    assert part.wire == whole.wire and batch_seqs([unchunk(part.wire)]) == [[1]]
    assert batch_seqs(events) == [[0]]  # the generator sent nothing of it again


def test_a_connection_that_takes_nothing_or_is_gone_leaves_the_records_to_the_reader(monkeypatch):
    for sink in (Sink(room=0), Sink(error=BrokenPipeError())):
        events = read_while_parked(monkeypatch, sink, append_b, wakes=True)

        assert sink.wire == b"" and batch_seqs(events) == [[0], [1]]


def test_an_http_1_0_connection_gets_the_event_unframed(monkeypatch):
    sink = Sink(chunked=False)

    read_while_parked(monkeypatch, sink, append_b)

    assert sink.wire.startswith(b"event: batch\nid: 2,2,") and batch_seqs([sink.wire]) == [[1]]


def test_the_rest_of_an_event_goes_out_before_the_shutdown_event(monkeypatch):
    """The hub closes after a fan-out took part of an event and before its reader ran again."""
    sink = Sink(room=10)

    events = read_while_parked(monkeypatch, sink, append_b, close_at_once=True)

    assert names(events) == ["ping", "batch", "error"]
    assert batch_seqs([unchunk(sink.wire)]) == [[1]]  # whole, and before the error event was yielded


def test_a_failing_direct_delivery_leaves_the_records_to_the_reader(monkeypatch):
    events = read_while_parked(monkeypatch, Sink(error=RuntimeError("a bug")), append_b, wakes=True)

    assert batch_seqs(events) == [[0], [1]]
