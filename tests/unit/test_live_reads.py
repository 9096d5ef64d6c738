"""Live reads are admitted against their own limit and released when their response closes."""

import pytest
from flask import Response

from session_web.live_reads import LiveReads, TooManyLiveReads


def stream():
    return Response(iter(["event: ping\n\n"]), mimetype="text/event-stream")


def test_past_the_limit_a_live_read_is_refused_until_one_closes():
    live = LiveReads(2)
    first, _ = live.hold(stream()), live.hold(stream())

    with pytest.raises(TooManyLiveReads) as refused:
        live.check()
    with pytest.raises(TooManyLiveReads):
        live.hold(stream())
    first.close()
    live.hold(stream())

    assert refused.value.retry_after_seconds > 0
    assert live.open == 2
