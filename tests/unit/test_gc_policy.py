import gc
import weakref
from collections.abc import Iterator

import pytest

from session_web.gc_policy import YOUNG_THRESHOLD, GcPolicy


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_installing_spaces_young_passes_out_and_stops_automatic_full_ones():
    _, middle, _ = gc.get_threshold()
    GcPolicy().install()
    assert gc.get_threshold()[:2] == (YOUNG_THRESHOLD, middle)
    assert gc.get_threshold()[2] >= 1_000_000


def test_a_tick_collects_young_cycles_and_freezes_the_survivors():
    policy = GcPolicy(min_deep_objects=10**12, checks_every=1)
    garbage, kept = Node(), Node()
    dead = weakref.ref(garbage)
    del garbage
    policy.tick()
    assert dead() is None
    assert gc.get_freeze_count() > 0
    assert not any(obj is kept for obj in gc.get_objects())  # frozen: out of every pass


def test_a_cycle_that_dies_frozen_waits_for_the_deep_pass():
    policy = GcPolicy(min_deep_objects=10**12, checks_every=1)
    node = Node()
    dead = weakref.ref(node)
    policy.tick()
    del node
    policy.tick()
    assert dead() is not None  # frozen: no shallow pass sees it
    GcPolicy(deep_growth=1.0, min_deep_objects=0, checks_every=1).tick()  # a deep pass on its first tick
    assert dead() is None


def test_the_deep_pass_comes_once_the_frozen_set_has_grown_enough():
    gc.freeze()
    policy = GcPolicy(deep_growth=2.0, min_deep_objects=0, checks_every=1)
    node = Node()
    dead = weakref.ref(node)
    policy.tick()
    del node
    policy.tick()  # the frozen set has not doubled: no deep pass yet
    assert dead() is not None
    growth = [Node() for _ in range(gc.get_freeze_count())]
    policy.tick()  # now it has
    assert dead() is None
    del growth


def test_the_frozen_set_is_counted_only_every_few_ticks():
    policy = GcPolicy(deep_growth=1.0, min_deep_objects=0, checks_every=2)
    node = Node()
    dead = weakref.ref(node)
    policy.tick()
    del node
    policy.tick()  # the second tick looks, and the deep pass finds the cycle
    assert dead() is None
