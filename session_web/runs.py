"""Blueprint for runs: ``/api/v1/runs/<run>`` (retrieve, heartbeat, complete, fail) and a session's runs.

The agent holds a run token (or a secret key) and keeps its run live with heartbeats; each answer
carries a fresh run token and the lease length.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from marshmallow import Schema

from session_core.models import RunStatus, utcnow
from session_core.schemas import (
    CompleteRunSchema,
    FailRunSchema,
    HeartbeatResultSchema,
    HeartbeatSchema,
    RunItemSchema,
    RunListSchema,
    load_body,
)
from session_core.scopes import Principal
from session_core.services import runs as service
from session_core.services.sessions import retrieve_session
from session_web.routing import KIB, api_route, parse_json, read_body
from session_web.services import services

bp = Blueprint("runs", __name__, url_prefix="/api/v1")

_RUN = RunItemSchema()
_HEARTBEAT = HeartbeatResultSchema()
_LIST = RunListSchema()
#: Output and error bodies are JSON of the agent's choosing, bounded like a channel record.
MAX_RESULT_BYTES = 1024 * KIB


def _optional_body(schema: Schema, max_bytes: int) -> dict[str, Any]:
    """A JSON object body checked by ``schema``; an empty body counts as ``{}`` (agents often send none)."""
    if not request.content_length:
        return load_body(schema, {})
    return load_body(schema, parse_json(read_body(max_bytes)))


@api_route(bp, "/runs/<run_id>", methods=["GET"])
def retrieve_run(principal: Principal, run_id: str) -> dict[str, Any]:
    view = service.retrieve_run(services().read_uow(), principal, run_id, utcnow())
    result: dict[str, Any] = _RUN.dump(view)
    return result


@api_route(bp, "/runs/<run_id>/heartbeat", methods=["POST"])
def heartbeat_run(principal: Principal, run_id: str) -> dict[str, Any]:
    s = services()
    _optional_body(HeartbeatSchema(), KIB)
    beat = service.heartbeat_run(s.uow(), principal, run_id, s.settings.run_lease_seconds, utcnow())
    result: dict[str, Any] = _HEARTBEAT.dump(
        {**vars(beat.view), "token": beat.token, "lease_seconds": beat.lease_seconds}
    )
    return result


@api_route(bp, "/runs/<run_id>/complete", methods=["POST"])
def complete_run(principal: Principal, run_id: str) -> dict[str, Any]:
    body = _optional_body(CompleteRunSchema(), MAX_RESULT_BYTES)
    view = service.end_run(
        services().uow(), principal, run_id, RunStatus.COMPLETED, utcnow(), output=body.get("output")
    )
    result: dict[str, Any] = _RUN.dump(view)
    return result


@api_route(bp, "/runs/<run_id>/fail", methods=["POST"], body=FailRunSchema(), max_bytes=MAX_RESULT_BYTES)
def fail_run(principal: Principal, body: dict[str, Any], run_id: str) -> dict[str, Any]:
    view = service.end_run(
        services().uow(), principal, run_id, RunStatus.FAILED, utcnow(), error=body["error"]
    )
    result: dict[str, Any] = _RUN.dump(view)
    return result


@api_route(bp, "/sessions/<session:session_ref>/runs", methods=["GET"])
def list_session_runs(principal: Principal, session_ref: str) -> dict[str, Any]:
    s = services()
    session = retrieve_session(s.read_uow(), principal, session_ref)
    result: dict[str, Any] = _LIST.dump({"data": service.list_runs(s.read_uow(), session, utcnow())})
    return result
