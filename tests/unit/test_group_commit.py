"""GroupCommit with real threads: callers that arrive while a batch runs share the next batch."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from session_core.channels.group_commit import GroupCommit

GENEROUS = 10.0


class Recorder:
    """A batch runner that records its batches; the first batch waits for ``release``."""

    def __init__(self):
        self.batches = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, items):
        self.batches.append(list(items))
        self.started.set()
        assert self.release.wait(GENEROUS)
        return [item * 10 for item in items]


def wait_queued(groups, key, count):
    """Wait until ``count`` callers are queued behind the running batch of ``key``."""
    for _ in range(int(GENEROUS * 1000)):  # bounded: a hang fails the test instead of stalling it
        if len(groups._queues.get(key, [])) >= count:
            return
        time.sleep(0.001)
    pytest.fail(f"{count} callers never queued behind the running batch")


def test_a_lone_caller_runs_its_item_at_once():
    groups = GroupCommit()

    assert groups.submit("k", 4, lambda items: [item + 1 for item in items]) == 5
    assert groups._queues == {}


def test_callers_arriving_during_a_batch_share_the_next_one_and_each_get_their_own_result():
    groups, run = GroupCommit(), Recorder()
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(groups.submit, "k", 0, run)
        assert run.started.wait(GENEROUS)
        rest = [pool.submit(groups.submit, "k", n, run) for n in range(1, 6)]
        wait_queued(groups, "k", 5)
        run.release.set()

        assert first.result(GENEROUS) == 0
        assert [future.result(GENEROUS) for future in rest] == [10, 20, 30, 40, 50]
    assert run.batches == [[0], [1, 2, 3, 4, 5]]
    assert groups._queues == {}


def test_an_item_error_reaches_only_its_caller():
    groups = GroupCommit()

    def run(items):
        return [ValueError(f"bad {item}") if item < 0 else item for item in items]

    with pytest.raises(ValueError, match="bad -1"):
        groups.submit("k", -1, run)
    assert groups.submit("k", 3, run) == 3


def test_a_failed_batch_fails_every_caller_in_it_and_the_next_batch_still_runs():
    groups, started, gate = GroupCommit(), threading.Event(), threading.Event()
    batches = []

    def run(items):
        batches.append(list(items))
        if len(batches) == 1:
            started.set()
            assert gate.wait(GENEROUS)
        if len(batches) == 2:
            raise RuntimeError("database gone")
        return list(items)

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(groups.submit, "k", 0, run)
        assert started.wait(GENEROUS)
        failing = [pool.submit(groups.submit, "k", n, run) for n in (1, 2)]
        wait_queued(groups, "k", 2)
        gate.set()

        assert first.result(GENEROUS) == 0
        for future in failing:
            with pytest.raises(RuntimeError, match="database gone"):
                future.result(GENEROUS)
    assert batches[1] == [1, 2]
    assert groups.submit("k", 7, run) == 7


def test_a_batch_is_bounded_by_items_and_by_size_but_always_takes_one():
    groups, run = GroupCommit(max_items=3, max_size=100), Recorder()
    sizes = {1: 10, 2: 10, 3: 10, 4: 10, 5: 95, 6: 500, 7: 1}
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(groups.submit, "k", 0, run)
        assert run.started.wait(GENEROUS)
        rest = []
        for n in range(1, 8):
            rest.append(pool.submit(groups.submit, "k", n, run, sizes[n]))
            wait_queued(groups, "k", n)  # keeps arrival order
        run.release.set()

        assert [future.result(GENEROUS) for future in [first, *rest]] == [n * 10 for n in range(8)]
    assert run.batches == [[0], [1, 2, 3], [4], [5], [6], [7]]


def test_different_keys_run_side_by_side():
    groups, run = GroupCommit(), Recorder()
    with ThreadPoolExecutor(2) as pool:
        blocked = pool.submit(groups.submit, "a", 1, run)
        assert run.started.wait(GENEROUS)

        assert groups.submit("b", 2, lambda items: items) == 2
        run.release.set()
        assert blocked.result(GENEROUS) == 10
