"""Admission of live reads (SSE) in one worker, so a full worker refuses them instead of hanging.

Every idle SSE subscriber holds one of gunicorn's ``worker_connections``; once they are all taken,
the worker accepts nothing more, and an append or a control-plane request waits behind them for as
long as they stay open. Live reads are therefore admitted against their own, lower limit
(``SESSIONS_MAX_LIVE_READS``): past it a new one is answered 503 with ``Retry-After`` (clients
reconnect with backoff, elsewhere if a balancer spreads them), and the connections between the two
limits stay free for short requests.
"""

from __future__ import annotations

from flask import Response

from session_core.errors import Unavailable

#: Seconds a refused live read is told to wait before it tries again.
RETRY_AFTER_SECONDS = 5


class TooManyLiveReads(Unavailable):
    """Raised when this worker already holds as many live reads as it admits."""

    retry_after_seconds = RETRY_AFTER_SECONDS

    def __init__(self) -> None:
        super().__init__("This server holds as many live reads as it admits; retry shortly")


class LiveReads:
    """The live reads a worker holds, against its limit.

    A plain counter is safe under gevent: nothing between the check and the increment yields, and
    the release runs when the server closes the response (also when the client went away).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def check(self) -> None:
        """Refuse early, before a live read does any work, when the worker is full.

        :raise TooManyLiveReads: as many live reads are open as the limit admits.
        """
        if self.open >= self.limit:
            raise TooManyLiveReads()

    def hold(self, response: Response) -> Response:
        """Count ``response`` (a live read's stream) as open until the server closes it.

        :raise TooManyLiveReads: the worker filled up meanwhile; the stream is not started.
        """
        self.check()
        self.open += 1
        response.call_on_close(self._release)
        return response

    def _release(self) -> None:
        self.open -= 1
