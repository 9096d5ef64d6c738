"""SingleFlight: concurrent identical calls share one computation."""

import threading

import pytest

from session_core.channels.flight import SingleFlight

GENEROUS = 10.0


class CountingKey:
    """A key that counts its lookups, so a test can see callers arrive at the flight."""

    def __init__(self):
        self.lookups = 0
        self.changed = threading.Condition()

    def __hash__(self):
        with self.changed:
            self.lookups += 1
            self.changed.notify_all()
        return 1

    def __eq__(self, other):
        return other is self

    def wait_for_lookups(self, count):
        with self.changed:
            return self.changed.wait_for(lambda: self.lookups >= count, GENEROUS)


def test_callers_during_a_flight_share_its_result():
    flight, key = SingleFlight(), CountingKey()
    calls, results = [], []
    followers = [threading.Thread(target=lambda: results.append(flight.do(key, list))) for _ in range(3)]

    def read_once_the_followers_have_joined():
        calls.append(1)
        for follower in followers:
            follower.start()
        assert key.wait_for_lookups(2 + len(followers))  # the leader's lookup and insert, then theirs
        return ["batch"]

    leader_result = flight.do(key, read_once_the_followers_have_joined)
    for follower in followers:
        follower.join(GENEROUS)

    assert leader_result == ["batch"]
    assert results == [["batch"]] * 3
    assert len(calls) == 1


def test_a_finished_flight_is_not_reused():
    flight = SingleFlight()
    answers = iter(["first", "second"])

    assert flight.do("k", lambda: next(answers)) == "first"
    assert flight.do("k", lambda: next(answers)) == "second"


def test_different_keys_fly_apart():
    flight = SingleFlight()

    assert [flight.do(k, lambda k=k: k * 2) for k in (1, 2)] == [2, 4]


def test_an_error_reaches_the_caller_and_the_next_call_retries():
    flight = SingleFlight()

    def broken():
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        flight.do("k", broken)
    assert flight.do("k", lambda: "ok") == "ok"
