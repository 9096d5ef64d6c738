"""Session runs: the launcher seam and the optimistic ``current_run_version`` claim.

Starting the agent's actual work is someone else's job; a ``RunLauncher`` is the seam. The
default ``RecordingLauncher`` only names runs, so every run it starts stays live.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from session_core.db.uow import UnitOfWork
from session_core.errors import Conflict
from session_core.ids import generate_cuid, run_friendly_id
from session_core.models import JSONValue, RunReason, Session, SessionRun

logger = logging.getLogger(__name__)
MAX_CLAIM_ATTEMPTS = 3


class RunLauncher(Protocol):
    def trigger(self, session: Session, payload: dict[str, JSONValue], reason: RunReason) -> str:
        """Start a run for ``session`` and return its ``run_…`` id."""
        ...

    def is_live(self, run_id: str) -> bool:
        """False once the run reached a final state (completed, failed, cancelled…)."""
        ...

    def cancel(self, run_id: str, reason: str) -> None: ...


class RecordingLauncher:
    """Names runs and starts nothing: the default until a real task runner is plugged in."""

    def trigger(self, session: Session, payload: dict[str, JSONValue], reason: RunReason) -> str:
        return run_friendly_id(generate_cuid())

    def is_live(self, run_id: str) -> bool:
        return True

    def cancel(self, run_id: str, reason: str) -> None:
        logger.info("run cancelled run_id=%s reason=%s", run_id, reason)


@dataclass(frozen=True)
class RunClaim:
    run_id: str
    triggered: bool


def run_payload(session: Session) -> dict[str, JSONValue]:
    """The payload a session's run starts with: ``basePayload`` plus the idle timeout."""
    config = session.trigger_config
    payload = dict(config.get("base_payload") or {})
    if "idle_timeout_in_seconds" in config:
        payload["idleTimeoutInSeconds"] = config["idle_timeout_in_seconds"]
    return payload


def _record(uow: UnitOfWork, session: Session, run_id: str, reason: RunReason, now: datetime) -> None:
    uow.runs.add(SessionRun(generate_cuid(), session.id, run_id, reason, now))


def ensure_run(
    uow: UnitOfWork, launcher: RunLauncher, session: Session, reason: RunReason, now: datetime
) -> RunClaim:
    """Return the session's live run, starting and claiming a new one if it has none.

    No lock is held while the launcher runs: the claim is a conditional update on the version we
    read. A lost race cancels our run and re-reads, reusing the winner's run when it is live.
    """
    for _ in range(MAX_CLAIM_ATTEMPTS):
        if session.current_run_id is not None and launcher.is_live(session.current_run_id):
            return RunClaim(session.current_run_id, triggered=False)
        run_id = launcher.trigger(session, run_payload(session), reason)
        if uow.sessions.claim_run(session.id, run_id, session.current_run_version):
            _record(uow, session, run_id, reason, now)
            return RunClaim(run_id, triggered=True)
        launcher.cancel(run_id, "Lost session-run claim race")
        session = uow.sessions.get(session.id)
    raise Conflict("Could not claim a run for this session; try again")


def swap_run(
    uow: UnitOfWork,
    launcher: RunLauncher,
    session: Session,
    calling_run_id: str | None,
    reason: RunReason,
    now: datetime,
) -> tuple[str, bool]:
    """Hand the session from ``calling_run_id`` to a fresh run; ``(run_id, swapped)``.

    Only the run that is still current may hand over: losing the claim cancels the fresh run and
    answers with whichever run is current now.
    """
    run_id = launcher.trigger(session, run_payload(session), reason)
    if uow.sessions.claim_run(session.id, run_id, session.current_run_version, calling_run_id):
        _record(uow, session, run_id, reason, now)
        return run_id, True
    launcher.cancel(run_id, "Lost session-run swap race")
    current = uow.sessions.get(session.id).current_run_id
    return current or calling_run_id or run_id, False
