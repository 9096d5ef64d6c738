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
    return spec.to_dict()


@bp.get("/api/v1/openapi.json")
def openapi_document() -> ResponseReturnValue:
    return jsonify(build_spec())
