"""The in-process wake-up hub and the NOTIFY payload: pure, no database."""

import gc
import threading

from session_core.channels.notices import parse_tail_notice, poke_notice, tail_notice
from session_core.channels.wakeups import WakeupHub

GENEROUS = 10.0


def test_a_tail_published_before_waiting_is_not_lost():
    hub = WakeupHub()
    with hub.subscribe("k") as subscription:
        hub.publish("k", 5)

        assert subscription.wait(4, timeout=0) is True


def test_a_tail_the_reader_already_has_does_not_wake_it():
    hub = WakeupHub()
    with hub.subscribe("k") as subscription:
        hub.publish("k", 5)

        assert subscription.wait(5, timeout=0) is False


def test_another_channels_tail_does_not_wake_it():
    hub = WakeupHub()
    with hub.subscribe("k") as subscription:
        hub.publish("other", 9)

        assert subscription.wait(0, timeout=0) is False


def test_a_waiter_in_another_thread_is_woken_by_publish():
    hub = WakeupHub()
    woke = []
    with hub.subscribe("k") as subscription:
        waiter = threading.Thread(target=lambda: woke.append(subscription.wait(0, GENEROUS)))
        waiter.start()

        hub.publish("k", 1)
        waiter.join(GENEROUS + 5)

    assert woke == [True]


def test_every_subscriber_of_a_channel_is_woken():
    hub = WakeupHub()
    subscriptions = [hub.subscribe("k") for _ in range(3)]

    hub.publish("k", 1)

    assert [s.wait(0, timeout=0) for s in subscriptions] == [True, True, True]


def test_a_poke_wakes_each_reader_once():
    hub = WakeupHub()
    with hub.subscribe("k") as subscription:
        hub.poke_all()

        assert subscription.wait(0, timeout=0) is True
        assert subscription.wait(0, timeout=0) is False


def test_closing_the_hub_wakes_readers_for_good():
    hub = WakeupHub()
    with hub.subscribe("k") as subscription:
        hub.close()

        assert hub.is_closed
        assert subscription.wait(0, timeout=0) is True
        assert subscription.wait(0, timeout=0) is True


def test_the_hub_forgets_closed_subscriptions():
    hub = WakeupHub()
    first, second = hub.subscribe("k"), hub.subscribe("k")

    first.close()
    assert hub.subscribed_keys() == ["k"]
    second.close()

    assert hub.subscribed_keys() == []


def test_a_tail_notice_round_trips_keys_with_spaces_and_slashes():
    key = "env1/sessions/chat 42/in"

    assert parse_tail_notice(tail_notice(key, 17)) == (key, 17)


def test_a_malformed_notice_is_ignored():
    assert parse_tail_notice("") is None
    assert parse_tail_notice("nonsense") is None
    assert parse_tail_notice("-1 key") is None
    assert parse_tail_notice("12") is None


def test_a_poke_notice_names_its_channel_and_no_tail():
    assert parse_tail_notice(poke_notice("env/ds/a b")) == ("env/ds/a b", None)
    assert parse_tail_notice("* ") is None


def test_a_fan_out_holds_the_collector_off_and_turns_it_back_on():
    hub = WakeupHub()
    seen = []
    with hub.subscribe("k") as subscription:
        subscription._event.set = lambda: seen.append(gc.isenabled())  # type: ignore[method-assign]
        assert gc.isenabled()
        hub.publish("k", 1)
        hub.poke("k")
    assert seen == [False, False]
    assert gc.isenabled()


def test_a_fan_out_leaves_a_collector_that_was_off_off():
    hub = WakeupHub()
    gc.disable()
    try:
        with hub.subscribe("k"):
            hub.publish("k", 1)
        assert not gc.isenabled()
    finally:
        gc.enable()
