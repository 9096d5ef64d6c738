"""Session runs: claiming a session's run, the lease that keeps it live, and the agent's run API.

A run is a ``session_runs`` row. ``ensure_run`` reuses the session's current run while it is live
(QUEUED or EXECUTING with its lease not lapsed, ``models.run_status``) and otherwise claims a new
one with the optimistic ``current_run_version`` update. A launcher that delivers launches (webhook,
Celery) gets an outbox row in the same transaction, so a launch commits with its run or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from session_core.auth import mint_token
from session_core.channels.records import stream_name
from session_core.errors import Conflict, NotFound
from session_core.ids import generate_cuid, run_friendly_id
from session_core.models import (
    Environment,
    JSONValue,
    RunReason,
    RunStatus,
    Session,
    SessionRun,
    is_run_live,
    run_status,
)
from session_core.repositories.ports import AbstractUnitOfWork
from session_core.scopes import STREAM_SCOPE_PREFIX, Principal, authorize_run, session_token_scopes

logger = logging.getLogger(__name__)
MAX_CLAIM_ATTEMPTS = 3
DEFAULT_LEASE_SECONDS = 30
#: A run token outlives its lease by this much, so a heartbeat sent late in the lease still passes.
RUN_TOKEN_MARGIN_SECONDS = 60
MAX_RUNS_LISTED = 100


class RunLauncher(Protocol):
    """How new runs get started: the lease they start with, and whether launches are delivered."""

    @property
    def lease_seconds(self) -> int: ...

    @property
    def delivers(self) -> bool:
        """True when each new run gets an outbox row for a dispatcher to deliver."""
        ...

    def wake(self) -> None:
        """A launch was just committed: deliver it now rather than at the next poll."""
        ...


@dataclass(frozen=True)
class RecordingLauncher:
    """Records runs and starts nothing: the embedded default, for agents that poll or are run by hand."""

    lease_seconds: int = DEFAULT_LEASE_SECONDS
    delivers: bool = False

    def wake(self) -> None:
        """Nothing to deliver."""


@dataclass(frozen=True)
class RunClaim:
    run_id: str
    triggered: bool


class RunFinal(Conflict):
    """Raised when a heartbeat, complete or fail reaches a run that already ended (or expired)."""

    code = "run_final"

    def __init__(self, status: RunStatus) -> None:
        super().__init__(f"Run is {status.value}")
        self.status = status


def run_payload(session: Session) -> dict[str, JSONValue]:
    """The payload a session's run starts with: ``basePayload`` plus the idle timeout."""
    config = session.trigger_config
    payload = dict(config.get("base_payload") or {})
    if "idle_timeout_in_seconds" in config:
        payload["idleTimeoutInSeconds"] = config["idle_timeout_in_seconds"]
    return payload


def launch_id(run_id: str) -> str:
    """The stable id of a run's launch (``webhook-id``, Celery task id): receivers de-duplicate on it."""
    return "msg_" + run_id.removeprefix("run_")


def run_token_scopes(session: Session) -> list[str]:
    """A run token's scopes: the session token's under both of its names (routes that check only the
    URL's name then pass either way), plus direct (S2) access to both channels."""
    key = session.addressing_key
    names = dict.fromkeys([key, session.friendly_id])
    return [
        *(scope for name in names for scope in session_token_scopes(name)),
        *(STREAM_SCOPE_PREFIX + stream_name(key, io) for io in ("in", "out")),
    ]


def mint_run_token(environment: Environment, session: Session, run_id: str, lease_seconds: int) -> str:
    """A JWT for one run's agent: its session's channels and its own run, for the lease plus a margin."""
    return mint_token(
        environment,
        run_token_scopes(session),
        ttl_seconds=lease_seconds + RUN_TOKEN_MARGIN_SECONDS,
        extra_claims={"runId": run_id, "sessionId": session.friendly_id},
    )


def _start(
    uow: AbstractUnitOfWork,
    launcher: RunLauncher,
    session: Session,
    run_id: str,
    reason: RunReason,
    now: datetime,
) -> None:
    """Record a claimed run, and its launch when the launcher delivers; wake it after the commit."""
    lease = now + timedelta(seconds=launcher.lease_seconds)
    uow.runs.add(SessionRun(generate_cuid(), session.id, run_id, reason, now, lease_expires_at=lease))
    if launcher.delivers:
        uow.launches.add(launch_id(run_id), run_id, now)
        uow.on_commit(launcher.wake)


def current_run_is_live(uow: AbstractUnitOfWork, session: Session, now: datetime) -> bool:
    """Whether the session's current run exists and is QUEUED or EXECUTING within its lease."""
    if session.current_run_id is None:
        return False
    return is_run_live(uow.runs.get(session.current_run_id), now)


def ensure_run(
    uow: AbstractUnitOfWork, launcher: RunLauncher, session: Session, reason: RunReason, now: datetime
) -> RunClaim:
    """Return the session's live run, claiming a new one if it has none.

    The claim is a conditional update on the version we read: of racing callers one wins, and the
    others re-read the session (its row now names the winner's run, committed or locked until
    then) and reuse that run. Nothing is launched for a lost claim: the run row and its outbox row
    are written only by the winner.
    """
    for _ in range(MAX_CLAIM_ATTEMPTS):
        if current_run_is_live(uow, session, now):
            assert session.current_run_id is not None
            return RunClaim(session.current_run_id, triggered=False)
        run_id = run_friendly_id(generate_cuid())
        if uow.sessions.claim_run(session.id, run_id, session.current_run_version):
            _start(uow, launcher, session, run_id, reason, now)
            return RunClaim(run_id, triggered=True)
        session = uow.sessions.get(session.id)
    raise Conflict("Could not claim a run for this session; try again")


def swap_run(
    uow: AbstractUnitOfWork,
    launcher: RunLauncher,
    session: Session,
    calling_run_id: str | None,
    reason: RunReason,
    now: datetime,
) -> tuple[str, bool]:
    """Hand the session from ``calling_run_id`` to a fresh run; ``(run_id, swapped)``.

    Only the run that is still current may hand over: losing the claim answers with whichever run
    is current now.
    """
    run_id = run_friendly_id(generate_cuid())
    if uow.sessions.claim_run(session.id, run_id, session.current_run_version, calling_run_id):
        _start(uow, launcher, session, run_id, reason, now)
        return run_id, True
    current = uow.sessions.get(session.id).current_run_id
    return current or calling_run_id or run_id, False


# --- the agent's run API ------------------------------------------------------------------------


@dataclass(frozen=True)
class RunView:
    """A run as the wire shows it: the row, its derived status and its session's friendly id."""

    run: SessionRun
    session_id: str
    status: RunStatus


@dataclass(frozen=True)
class Heartbeat:
    view: RunView
    token: str
    lease_seconds: int


def _load(uow: AbstractUnitOfWork, principal: Principal, run_id: str) -> tuple[SessionRun, Session]:
    run = uow.runs.get_in_environment(principal.environment.id, run_id)
    if run is None:
        raise NotFound("Run not found")
    authorize_run(principal, run.run_id)
    return run, uow.sessions.get(run.session_id)


def _view(run: SessionRun, session: Session, now: datetime) -> RunView:
    return RunView(run, session.friendly_id, run_status(run, now))


def retrieve_run(uow: AbstractUnitOfWork, principal: Principal, run_id: str, now: datetime) -> RunView:
    """:raise NotFound: no such run in the caller's environment. :raise Forbidden: another run's token."""
    with uow:
        run, session = _load(uow, principal, run_id)
    return _view(run, session, now)


def _update_running(
    uow: AbstractUnitOfWork,
    principal: Principal,
    run_id: str,
    now: datetime,
    values: Callable[[SessionRun], dict[str, object]],
) -> tuple[SessionRun, Session]:
    """Apply ``values(run)`` to a running run in one conditional update; a final run raises ``RunFinal``."""
    run, session = _load(uow, principal, run_id)
    status = run_status(run, now)
    if status is not RunStatus.QUEUED and status is not RunStatus.EXECUTING:
        raise RunFinal(status)
    updated = uow.runs.update_if_running(run.run_id, now, **values(run))
    if updated is None:
        current = uow.runs.get(run.run_id)
        raise RunFinal(run_status(current, now) if current else RunStatus.CANCELLED)
    return updated, session


def heartbeat_run(
    uow: AbstractUnitOfWork, principal: Principal, run_id: str, lease_seconds: int, now: datetime
) -> Heartbeat:
    """Extend the run's lease (moving QUEUED to EXECUTING) and hand out a fresh run token.

    :raise RunFinal: the run completed, failed, was cancelled, or its lease lapsed.
    """

    def values(run: SessionRun) -> dict[str, object]:
        return {
            "status": RunStatus.EXECUTING,
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
            "started_at": run.started_at or now,
        }

    with uow:
        run, session = _update_running(uow, principal, run_id, now, values)
        uow.commit()
    token = mint_run_token(principal.environment, session, run.run_id, lease_seconds)
    return Heartbeat(_view(run, session, now), token, lease_seconds)


def end_run(
    uow: AbstractUnitOfWork,
    principal: Principal,
    run_id: str,
    status: RunStatus,
    now: datetime,
    *,
    output: JSONValue | None = None,
    error: JSONValue | None = None,
) -> RunView:
    """Complete or fail a running run, keeping its output or error.

    :raise RunFinal: the run already ended or its lease lapsed.
    """
    with uow:
        ended = {"status": status, "ended_at": now, "output": output, "error": error}
        run, session = _update_running(uow, principal, run_id, now, lambda _: ended)
        uow.commit()
    return _view(run, session, now)


def list_runs(uow: AbstractUnitOfWork, session: Session, now: datetime) -> list[RunView]:
    """The session's runs, newest first (at most ``MAX_RUNS_LISTED``)."""
    with uow:
        runs = uow.runs.list_for_session(session.id, MAX_RUNS_LISTED)
    return [_view(run, session, now) for run in runs]
