"""Delivering launches from the outbox: claim due rows, send each, retry with backoff until a 2xx.

A launch row commits with its run (``runs._start``), so a crash after the commit delays the launch
and never loses it: whichever dispatcher next finds the row due delivers it. Claiming pushes the
row's ``next_attempt_at`` past a hold, so a dispatcher that dies mid-delivery leaves the row to be
claimed again once the hold lapses. Every attempt of one launch carries the same id, so receivers
that see a launch twice (a delivery whose answer was lost) can tell. Delivery is at least once.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from session_core.models import JSONValue, RunStatus, is_run_live, run_status, utcnow
from session_core.repositories.ports import AbstractUnitOfWork, PendingLaunch
from session_core.schemas import SessionItemSchema
from session_core.services.runs import mint_run_token, run_payload

logger = logging.getLogger(__name__)

_SESSION_ITEM = SessionItemSchema()


@dataclass(frozen=True)
class Launch:
    """What a launcher hands the agent: the run, why it started, its session, payload and token."""

    id: str
    run_id: str
    reason: str
    task_identifier: str
    session: dict[str, JSONValue]
    payload: dict[str, JSONValue]
    token: str


class LaunchSender(Protocol):
    """Delivers one launch; returning means the receiver acknowledged it, raising means retry."""

    def send(self, launch: Launch) -> None: ...


def retry_delay(attempts: int, base_seconds: float, max_seconds: float, jitter: float) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: doubling from ``base_seconds``
    up to ``max_seconds``, scaled by ``jitter`` (0..1) into its upper half, so retries spread out."""
    exponential = min(max_seconds, base_seconds * 2.0 ** max(0, attempts - 1))
    return exponential * (0.5 + jitter / 2)


def _prepare(
    uow: AbstractUnitOfWork, pending: PendingLaunch, lease_seconds: int, now: datetime
) -> Launch | None:
    """The launch to send for a claimed row, or None when its run is no longer live (nothing to start)."""
    run = uow.runs.get(pending.run_id)
    if run is None or not is_run_live(run, now):
        return None
    session = uow.sessions.get(run.session_id)
    environment = uow.environments.get(session.environment_id)
    if environment is None:
        return None
    return Launch(
        id=pending.id,
        run_id=run.run_id,
        reason=run.reason.value,
        task_identifier=session.task_identifier,
        session=_SESSION_ITEM.dump(session),
        payload=run_payload(session),
        token=mint_run_token(environment, session, run.run_id, lease_seconds),
    )


@dataclass
class DispatchPolicy:
    """How a dispatcher paces itself; the defaults suit production, tests shorten them."""

    #: Longest sleep between looks at the outbox when nothing wakes the dispatcher.
    poll_seconds: float = 2.0
    #: A claimed row stays hidden this long: longer than one delivery may take.
    hold_seconds: float = 30.0
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 60.0
    batch_size: int = 10
    jitter: Callable[[], float] = field(default=random.random)


class Dispatcher:
    """Delivers due launches from one background thread (a greenlet in a gevent worker).

    ``wake()`` after a commit that added a launch sends it at once; otherwise the thread looks at
    the outbox when the next row falls due, and at least every ``poll_seconds``.
    """

    def __init__(
        self,
        uow_factory: Callable[[], AbstractUnitOfWork],
        sender: LaunchSender,
        lease_seconds: int,
        policy: DispatchPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_delivered: Callable[[Launch], None] | None = None,
    ) -> None:
        """``on_delivered`` is told of each launch a receiver acknowledged (metrics count them)."""
        self._on_delivered = on_delivered
        self._uow_factory = uow_factory
        self._sender = sender
        self._lease_seconds = lease_seconds
        self._policy = policy or DispatchPolicy()
        self._clock = clock
        self._wakeup = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Look at the outbox now (starting the dispatcher thread on first use)."""
        with self._lock:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._loop, name="launch-dispatcher", daemon=True)
                self._thread.start()
        self._wakeup.set()

    def close(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        self._wakeup.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._wakeup.clear()
            try:
                claimed = self.run_due()
                wait = 0.0 if claimed >= self._policy.batch_size else self._until_next_due()
            except Exception:
                logger.exception("launch dispatch failed; retrying")
                wait = self._policy.poll_seconds
            if wait > 0:
                self._wakeup.wait(wait)

    def _until_next_due(self) -> float:
        with self._uow_factory() as uow:
            next_due = uow.launches.next_due()
        if next_due is None:
            return self._policy.poll_seconds
        seconds = (next_due - self._clock()).total_seconds()
        return min(self._policy.poll_seconds, max(0.0, seconds))

    def run_due(self) -> int:
        """Claim the launches due now and deliver each once; returns how many were claimed."""
        policy = self._policy
        now = self._clock()
        uow = self._uow_factory()
        with uow:
            claimed = uow.launches.claim_due(
                now, now + timedelta(seconds=policy.hold_seconds), policy.batch_size
            )
            uow.commit()
        for pending in claimed:
            self._deliver(pending)
        return len(claimed)

    def _deliver(self, pending: PendingLaunch) -> None:
        uow = self._uow_factory()
        with uow:
            launch = _prepare(uow, pending, self._lease_seconds, self._clock())
        if launch is None:
            self._finish(pending, "the run was no longer live; nothing launched")
            return
        try:
            self._sender.send(launch)
        except Exception as error:  # any failure of the receiver or the way to it: retry later
            delay = retry_delay(
                pending.attempts,
                self._policy.base_delay_seconds,
                self._policy.max_delay_seconds,
                self._policy.jitter(),
            )
            logger.warning(
                "launch not delivered id=%s run=%s attempt=%d retry_in=%.1fs error=%s",
                pending.id,
                pending.run_id,
                pending.attempts,
                delay,
                error,
            )
            with self._uow_factory() as uow:
                uow.launches.retry_at(pending.id, self._clock() + timedelta(seconds=delay), str(error))
                uow.commit()
            return
        logger.info("launch delivered id=%s run=%s attempt=%d", pending.id, pending.run_id, pending.attempts)
        self._finish(pending, None)
        if self._on_delivered is not None:
            self._on_delivered(launch)

    def _finish(self, pending: PendingLaunch, note: str | None) -> None:
        """Mark the launch done; a delivered run's lease starts over, so its agent gets a full one."""
        now = self._clock()
        with self._uow_factory() as uow:
            uow.launches.mark_done(pending.id, now, note)
            if note is None:
                run = uow.runs.get(pending.run_id)
                if run is not None and run_status(run, now) is RunStatus.QUEUED:
                    lease = now + timedelta(seconds=self._lease_seconds)
                    uow.runs.update_if_running(pending.run_id, now, lease_expires_at=lease)
            uow.commit()


@dataclass
class OutboxLauncher:
    """A launcher whose runs are started by ``dispatcher`` delivering their outbox rows."""

    lease_seconds: int
    dispatcher: Dispatcher
    delivers: bool = True

    def wake(self) -> None:
        self.dispatcher.wake()
