"""A self-pipe that wakes the replication loop: on SIGTERM/SIGINT and when a flush finishes.

The loop sleeps in ``select`` on the replication socket and this pipe, so a finished insert is
acknowledged at once and a stop request is seen at once, without polling.
"""

from __future__ import annotations

import os
import select
import signal
from types import FrameType


class Wakeup:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.stopping = False

    def fileno(self) -> int:
        return self._read

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT request a graceful stop (flush, acknowledge, exit 0)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        self.wake()

    def wake(self) -> None:
        """Callable from any thread or a signal handler."""
        try:
            os.write(self._write, b"x")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is already pending

    def clear(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, returning early on a wake-up."""
        select.select([self._read], [], [], max(0.0, seconds))
        self.clear()
