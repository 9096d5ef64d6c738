"""Rows waiting for ClickHouse, and which LSN is safe to acknowledge while they wait.

Pure bookkeeping, no I/O. The invariant the replicator relies on: a commit LSN is acknowledged
only when no row from that transaction, or any earlier one, is still outside ClickHouse.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

__all__ = ["AckTracker", "PendingRow", "PendingRows"]


@dataclass(frozen=True)
class PendingRow:
    """One ClickHouse row and the oldest commit it stands for.

    When a newer version replaces an older one before either is flushed, the survivor inherits the
    older ``oldest_lsn``: writing it is what makes the older transaction durable too.
    """

    session_id: str
    row: dict[str, object]
    version: int
    oldest_lsn: int
    commit_time: datetime


class PendingRows:
    """At most one row per session: a newer (or equal, later-arriving) version replaces an older one.

    Keyed by session id rather than Trigger.dev's ``(event, id)``: an insert and a later update of
    the same session need only the update's row, and ReplacingMergeTree would fold them anyway.
    """

    def __init__(self) -> None:
        self._rows: dict[str, PendingRow] = {}
        self._oldest: int | None = None  # rows only leave all at once, so a running minimum is exact

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, entry: PendingRow) -> None:
        if self._oldest is None or entry.oldest_lsn < self._oldest:
            self._oldest = entry.oldest_lsn
        current = self._rows.get(entry.session_id)
        if current is None:
            self._rows[entry.session_id] = entry
            return
        winner = entry if entry.version >= current.version else current
        self._rows[entry.session_id] = replace(winner, oldest_lsn=min(entry.oldest_lsn, current.oldest_lsn))

    def add_all(self, entries: Iterable[PendingRow]) -> None:
        for entry in entries:
            self.add(entry)

    def take(self) -> list[PendingRow]:
        """Remove and return every row, oldest first."""
        rows = sorted(self._rows.values(), key=lambda entry: entry.oldest_lsn)
        self._rows.clear()
        self._oldest = None
        return rows

    def oldest_lsn(self) -> int | None:
        return self._oldest


class AckTracker:
    """Commit LSNs seen but not yet acknowledged, in stream order."""

    def __init__(self) -> None:
        self._commits: deque[int] = deque()

    def committed(self, lsn: int) -> None:
        if not self._commits or lsn > self._commits[-1]:
            self._commits.append(lsn)

    def advance(self, oldest_outstanding: int | None) -> int | None:
        """Return the newest commit LSN older than every outstanding row, if that moved forward.

        ``oldest_outstanding`` is the smallest ``oldest_lsn`` of rows pending or in flight (None
        when there are none). A row stamped with commit ``L`` holds back ``L`` itself.
        """
        newest = None
        while self._commits and (oldest_outstanding is None or self._commits[0] < oldest_outstanding):
            newest = self._commits.popleft()
        return newest
