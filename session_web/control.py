"""Blueprint for the control plane: ``/api/v1/sessions`` (wire reference §4, §5)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import Blueprint, request
from marshmallow import Schema

from session_core.models import Session, utcnow
from session_core.schemas import (
    CloseSessionSchema,
    CreatedSessionSchema,
    CreateSessionSchema,
    EndAndContinueResultSchema,
    EndAndContinueSchema,
    SessionDetailSchema,
    SessionListSchema,
    UpdateSessionSchema,
    load_list_query,
)
from session_core.scopes import Principal
from session_core.services import sessions as service
from session_web.routing import KIB, api_route
from session_web.services import services

bp = Blueprint("control", __name__, url_prefix="/api/v1/sessions")

# Built once: a schema instance holds no per-request state for ``dump``, and building one (with its
# nested schemas) costs more than dumping a session with it.
_CREATED = CreatedSessionSchema()
_DETAIL = SessionDetailSchema()
_LIST = SessionListSchema()
_END_AND_CONTINUE_RESULT = EndAndContinueResultSchema()


def _dump(schema: Schema, value: object) -> dict[str, Any]:
    body: dict[str, Any] = schema.dump(value)
    return body


def _dump_detail(session: Session) -> dict[str, Any]:
    return _dump(_DETAIL, session)


@api_route(bp, "", methods=["POST"], body=CreateSessionSchema(), max_bytes=32 * KIB)
def create_session(principal: Principal, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    s = services()
    created = service.create_session(s.uow(), s.launcher, principal, body, utcnow())
    payload = _dump(
        _CREATED,
        {
            **asdict(created.session),
            "run_id": created.run_id,
            "public_access_token": created.public_access_token,
            "is_cached": created.is_cached,
        },
    )
    return payload, 200 if created.is_cached else 201


@api_route(bp, "", methods=["GET"])
def list_sessions(principal: Principal) -> dict[str, Any]:
    s = services()
    now = utcnow()
    filters, page_size, after, before = load_list_query(request.args, now)
    page = service.list_sessions(s.read_uow, s.lister, principal, filters, page_size, after, before, now)
    pagination = {"next": page.next_cursor, "previous": page.previous_cursor}
    return _dump(
        _LIST,
        {"data": page.sessions, "pagination": {k: v for k, v in pagination.items() if v is not None}},
    )


@api_route(bp, "/<session:session_ref>", methods=["GET"])
def retrieve_session(principal: Principal, session_ref: str) -> dict[str, Any]:
    return _dump_detail(service.retrieve_session(services().read_uow(), principal, session_ref))


@api_route(bp, "/<session:session_ref>", methods=["PATCH"], body=UpdateSessionSchema(), max_bytes=32 * KIB)
def update_session(principal: Principal, body: dict[str, Any], session_ref: str) -> dict[str, Any]:
    session = service.update_session(services().uow(), principal, session_ref, body, utcnow())
    return _dump_detail(session)


@api_route(bp, "/<session:session_ref>/close", methods=["POST"], body=CloseSessionSchema(), max_bytes=KIB)
def close_session(principal: Principal, body: dict[str, Any], session_ref: str) -> dict[str, Any]:
    session = service.close_session(services().uow(), principal, session_ref, body.get("reason"), utcnow())
    return _dump_detail(session)


@api_route(
    bp,
    "/<session:session_ref>/end-and-continue",
    methods=["POST"],
    body=EndAndContinueSchema(),
    max_bytes=KIB,
)
def end_and_continue(principal: Principal, body: dict[str, Any], session_ref: str) -> dict[str, Any]:
    s = services()
    run_id, swapped = service.end_and_continue(
        s.uow(), s.launcher, principal, session_ref, body.get("calling_run_id"), body["reason"], utcnow()
    )
    return _dump(_END_AND_CONTINUE_RESULT, {"run_id": run_id, "swapped": swapped})
