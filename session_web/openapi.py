"""The service's OpenAPI 3 document, generated from the marshmallow schemas by apispec."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from session_core import schemas

bp = Blueprint("openapi", __name__)

_ERRORS = {
    "400": {"description": "Malformed request", "content": {"application/json": {"schema": "Error"}}},
    "401": {
        "description": "Missing or invalid credentials",
        "content": {"application/json": {"schema": "Error"}},
    },
    "403": {
        "description": "Token lacks the needed scope",
        "content": {"application/json": {"schema": "Error"}},
    },
    "404": {"description": "No such session", "content": {"application/json": {"schema": "Error"}}},
    "413": {"description": "Body too large", "content": {"application/json": {"schema": "Error"}}},
    "422": {"description": "Body breaks the schema", "content": {"application/json": {"schema": "Error"}}},
}
_SESSION_PARAM = {"name": "session_ref", "in": "path", "required": True, "schema": {"type": "string"},
                  "description": "A friendly id (session_…) or the caller's externalId"}  # fmt: skip


_RUN_PARAM = {"name": "runId", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "A run id (run_…)"}  # fmt: skip


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(operation_id: str, responses: dict[str, Any], body: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "security": [{"bearer": []}],
        "responses": {**responses, **_ERRORS},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return operation


def build_spec() -> dict[str, Any]:
    """Describe every control-plane route; schemas come straight from ``session_core.schemas``."""
    spec = APISpec(title="sessions", version="1", openapi_version="3.0.3", plugins=[MarshmallowPlugin()])
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in [
        ("Error", schemas.ErrorSchema),
        ("CreateSession", schemas.CreateSessionSchema),
        ("UpdateSession", schemas.UpdateSessionSchema),
        ("CloseSession", schemas.CloseSessionSchema),
        ("EndAndContinue", schemas.EndAndContinueSchema),
        ("Session", schemas.SessionDetailSchema),
        ("CreatedSession", schemas.CreatedSessionSchema),
        ("SessionList", schemas.SessionListSchema),
        ("EndAndContinueResult", schemas.EndAndContinueResultSchema),
        ("Run", schemas.RunItemSchema),
        ("HeartbeatResult", schemas.HeartbeatResultSchema),
        ("RunList", schemas.RunListSchema),
        ("CompleteRun", schemas.CompleteRunSchema),
        ("FailRun", schemas.FailRunSchema),
        ("JwtClaims", schemas.JwtClaimsSchema),
    ]:
        spec.components.schema(name, schema=schema)
    created = {
        "200": _json("CreatedSession", "An open session with this externalId (isCached)"),
        "201": _json("CreatedSession", "Created"),
        "409": _json("Error", "Closed or expired"),
    }
    listing = _operation("listSessions", {"200": _json("SessionList", "One page, newest first")})
    listing["parameters"] = [{"in": "query", "schema": schemas.ListSessionsQuerySchema}]
    spec.path(
        path="/api/v1/sessions",
        operations={"post": _operation("createSession", created, "CreateSession"), "get": listing},
    )
    spec.path(
        path="/api/v1/sessions/{session_ref}",
        parameters=[_SESSION_PARAM],
        operations={
            "get": _operation("retrieveSession", {"200": _json("Session", "The session")}),
            "patch": _operation(
                "updateSession",
                {"200": _json("Session", "Updated"), "409": _json("Error", "externalId taken")},
                "UpdateSession",
            ),
        },
    )
    spec.path(
        path="/api/v1/sessions/{session_ref}/close",
        parameters=[_SESSION_PARAM],
        operations={
            "post": _operation(
                "closeSession", {"200": _json("Session", "Closed (idempotent)")}, "CloseSession"
            )
        },
    )
    spec.path(
        path="/api/v1/sessions/{session_ref}/end-and-continue",
        parameters=[_SESSION_PARAM],
        operations={
            "post": _operation(
                "endAndContinue", {"200": _json("EndAndContinueResult", "Handed over")}, "EndAndContinue"
            )
        },
    )
    _run_paths(spec)
    return spec.to_dict()


def _run_paths(spec: APISpec) -> None:
    """The agent's run routes, a session's runs and the SDK's JWT claims route."""
    final = _json("Error", "The run already ended or its lease lapsed (code run_final)")
    ended = {"200": _json("Run", "The run, ended"), "409": final}
    run_routes = {
        "": {"get": _operation("retrieveRun", {"200": _json("Run", "The run")})},
        "/heartbeat": {
            "post": _operation(
                "heartbeatRun",
                {"200": _json("HeartbeatResult", "Lease extended; a fresh run token"), "409": final},
            )
        },
        "/complete": {"post": _operation("completeRun", ended, "CompleteRun")},
        "/fail": {"post": _operation("failRun", ended, "FailRun")},
    }
    for suffix, operations in run_routes.items():
        spec.path(path=f"/api/v1/runs/{{runId}}{suffix}", parameters=[_RUN_PARAM], operations=operations)
    spec.path(
        path="/api/v1/sessions/{session_ref}/runs",
        parameters=[_SESSION_PARAM],
        operations={"get": _operation("listSessionRuns", {"200": _json("RunList", "Newest first")})},
    )
    spec.path(
        path="/api/v1/auth/jwt/claims",
        operations={"post": _operation("jwtClaims", {"200": _json("JwtClaims", "Claims to sign with")})},
    )


@bp.get("/api/v1/openapi.json")
def openapi_document() -> ResponseReturnValue:
    return jsonify(build_spec())
