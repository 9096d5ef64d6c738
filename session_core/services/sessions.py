"""Session use cases: create, retrieve, update, close, list, end-and-continue.

Each takes its dependencies first and domain values after, owns its transaction, checks scopes
through ``scopes.can`` and raises domain errors; none of them knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from session_core.auth import mint_token
from session_core.cursors import SessionKey, decode_cursor, encode_cursor
from session_core.errors import BadRequest, Conflict, NotFound
from session_core.ids import generate_cuid, session_friendly_id
from session_core.models import RunReason, Session, refuse_if_not_active, session_status
from session_core.repositories.ports import (
    AbstractUnitOfWork,
    SessionFilters,
    SessionLister,
    SessionListQuery,
    UnitOfWorkFactory,
)
from session_core.scopes import Principal, authorize, authorize_list, session_token_scopes
from session_core.services.markers import write_session_closed
from session_core.services.runs import RunLauncher, ensure_run, swap_run

#: Create's answer to an externalId whose session ended: its channels refuse writes for good.
REUSE_REFUSED = "Session is {state}; use a different externalId to create a new session"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
#: How many extra key batches a list may fetch to refill a page the status re-check shortened.
MAX_REFILLS = 5


def existing_session_resources(session: Session) -> dict[str, Iterable[str | None]]:
    """What a token must hold write on to get an existing session back from create: the session
    under either of its names, or the task it already belongs to (not the one the body names)."""
    return {"sessions": [session.friendly_id, session.external_id], "tasks": [session.task_identifier]}


@dataclass(frozen=True)
class CreatedSession:
    session: Session
    run_id: str
    public_access_token: str
    is_cached: bool


def create_session(
    uow: AbstractUnitOfWork, launcher: RunLauncher, principal: Principal, data: dict[str, Any], now: datetime
) -> CreatedSession:
    """Create a session, or return the open one that already has this ``externalId``.

    ``is_cached`` comes from the upsert itself (the returned row is not the one we generated),
    never from a read before it, so racing creates agree on a single row. A closed or expired
    session under the same externalId is a ``Conflict``: its channels refuse writes for good.

    A token (not a secret key) that meets an existing session must also hold write on it
    (``existing_session_resources``); else nothing is changed and nothing minted. The check runs
    on the row the upsert locked, inside its transaction, so a racing create cannot slip past it.

    :raise Forbidden: the token may not write the task, or may not write the existing session.
    """
    authorize(principal, "write", {"tasks": [data["task_identifier"]]})
    environment = principal.environment
    cuid = generate_cuid()
    candidate = Session(
        id=cuid,
        friendly_id=session_friendly_id(cuid),
        external_id=data.get("external_id"),
        type=data["type"],
        task_identifier=data["task_identifier"],
        trigger_config=data["trigger_config"],
        tags=list(data.get("tags") or []),
        metadata=data.get("metadata"),
        organization_id=environment.organization_id,
        project_id=environment.project_id,
        environment_id=environment.id,
        environment_type=environment.type.value,
        current_run_id=None,
        current_run_version=0,
        closed_at=None,
        closed_reason=None,
        expires_at=data.get("expires_at"),
        created_at=now,
        updated_at=now,
    )
    with uow:
        session = uow.sessions.insert_or_get(candidate)
        is_cached = session.id != candidate.id
        if is_cached:  # leaving without commit rolls back the upsert's triggerConfig refresh
            authorize(principal, "write", existing_session_resources(session))
        refuse_if_not_active(session, now, "reuse", Conflict, REUSE_REFUSED)
        reason = RunReason.CONTINUATION if is_cached else RunReason.INITIAL
        claim = ensure_run(uow, launcher, session, reason, now)
        session = replace(session, current_run_id=claim.run_id)
        uow.commit()
    token = mint_token(environment, session_token_scopes(session.addressing_key))
    return CreatedSession(session, claim.run_id, token, is_cached)


def retrieve_session(uow: AbstractUnitOfWork, principal: Principal, session_ref: str) -> Session:
    """Find a session by either id form; a token for either form may read it.

    :raise NotFound: before any scope check, as Trigger.dev's loaders do.
    :raise Forbidden: when the token names neither of the session's ids.
    """
    with uow:
        session = uow.sessions.get_by_ref(principal.environment.id, session_ref)
    if session is None:
        raise NotFound("Not found")
    authorize(principal, "read", {"sessions": [session.friendly_id, session.external_id]})
    return session


def _get_for_admin(uow: AbstractUnitOfWork, principal: Principal, session_ref: str) -> Session:
    # Admin routes match the URL form only, and check scopes before existence (no 404 leak).
    authorize(principal, "admin", {"sessions": [session_ref]})
    session = uow.sessions.get_by_ref(principal.environment.id, session_ref)
    if session is None:
        raise NotFound("Session not found")
    return session


def update_session(
    uow: AbstractUnitOfWork, principal: Principal, session_ref: str, changes: dict[str, Any], now: datetime
) -> Session:
    """Write the given ``tags``, ``metadata`` and ``external_id``; others stay as they are.

    :raise Conflict: when another session in the environment holds the new externalId.
    """
    with uow:
        session = _get_for_admin(uow, principal, session_ref)
        if changes:
            session = uow.sessions.update_fields(session.id, changes, now)
        uow.commit()
    return session


def close_session(
    uow: AbstractUnitOfWork, principal: Principal, session_ref: str, reason: str | None, now: datetime
) -> Session:
    """Close a session; closing again returns it unchanged, with its first ``closed_at`` and reason.

    The close that wins also appends the end-of-session marker to both channels, in its own
    transaction: readers learn of the close exactly once, and never of a close that rolled back.
    """
    with uow:
        session = _get_for_admin(uow, principal, session_ref)
        if session.closed_at is None:
            closed = uow.sessions.close(session.id, reason, now)
            if closed is not None:
                write_session_closed(uow, closed, now)
            session = closed or uow.sessions.get(session.id)
        uow.commit()
    return session


def end_and_continue(
    uow: AbstractUnitOfWork,
    launcher: RunLauncher,
    principal: Principal,
    session_ref: str,
    calling_run_id: str | None,
    reason: str,
    now: datetime,
) -> tuple[str, bool]:
    """Hand a session from the calling run to a new one; returns ``(run_id, swapped)``."""
    with uow:
        session = uow.sessions.get_by_ref(principal.environment.id, session_ref)
        if session is None:
            raise NotFound("Session not found")
        authorize(principal, "write", {"sessions": [session_ref, session.friendly_id, session.external_id]})
        refuse_if_not_active(session, now, "end-and-continue")
        if (
            calling_run_id is not None
            and uow.runs.get_in_environment(principal.environment.id, calling_run_id) is None
        ):
            raise NotFound("callingRunId not found in this environment")
        run_reason = RunReason(reason) if reason in RunReason._value2member_map_ else RunReason.MANUAL
        result = swap_run(uow, launcher, session, calling_run_id, run_reason, now)
        uow.commit()
    return result


@dataclass(frozen=True)
class SessionPage:
    sessions: list[Session]
    next_cursor: str | None
    previous_cursor: str | None


def list_sessions(
    uow_factory: UnitOfWorkFactory,
    lister: SessionLister,
    principal: Principal,
    filters: SessionFilters,
    page_size: int,
    after: str | None,
    before: str | None,
    now: datetime,
) -> SessionPage:
    """One page of sessions, newest first, with opaque keyset cursors.

    Rows come back hydrated from the primary store and their status is re-checked there, so a
    lister that lags (ClickHouse) never shows a stale status; shortened pages are refilled.
    """
    authorize_list(principal, filters.task_identifiers)
    if after is not None and before is not None:
        raise BadRequest("Cannot pass both page[after] and page[before] on the same request")
    cursor_token = after if after is not None else before
    environment = principal.environment
    query = SessionListQuery(
        organization_id=environment.organization_id,
        project_id=environment.project_id,
        environment_id=environment.id,
        filters=filters,
        direction="backward" if before is not None else "forward",
        cursor=decode_cursor(cursor_token) if cursor_token is not None else None,
        limit=page_size + 1,
    )
    rows = _collect(uow_factory, lister, query, filters, page_size + 1, now)
    has_more = len(rows) > page_size
    page = rows[:page_size]
    if query.direction == "backward":
        page.reverse()
        previous = _cursor(page[0]) if has_more and page else None
        next_ = _cursor(page[-1]) if page else None
    else:
        previous = _cursor(page[0]) if cursor_token is not None and page else None
        next_ = _cursor(page[-1]) if has_more else None
    return SessionPage(page, next_, previous)


def _cursor(session: Session) -> str:
    return encode_cursor(SessionKey(session.created_at, session.id))


def _collect(
    uow_factory: UnitOfWorkFactory,
    lister: SessionLister,
    query: SessionListQuery,
    filters: SessionFilters,
    wanted: int,
    now: datetime,
) -> list[Session]:
    """Fetch keys, hydrate and re-check them until ``wanted`` rows or the lister runs dry."""
    found: list[Session] = []
    for _ in range(MAX_REFILLS + 1):
        keys = lister.list_keys(query, now)
        with uow_factory() as uow:
            by_id = {s.id: s for s in uow.sessions.get_many(query.environment_id, [k.id for k in keys])}
        for key in keys:
            session = by_id.get(key.id)
            if session is not None and _matches(session, filters, now):
                found.append(session)
        if len(found) >= wanted or len(keys) < query.limit:
            break
        query = replace(query, cursor=keys[-1])
    return found[:wanted]


def _matches(session: Session, filters: SessionFilters, now: datetime) -> bool:
    """Re-check the filters a lagging copy may have judged on old values."""
    if filters.statuses and session_status(session, now) not in filters.statuses:
        return False
    if filters.tags and not set(filters.tags).intersection(session.tags):
        return False
    return not (filters.external_ids and session.external_id not in filters.external_ids)
