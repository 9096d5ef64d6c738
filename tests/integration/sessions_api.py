"""Small helpers for calling the control plane: headers, request bodies and the wire's fixed shapes."""

import uuid
from typing import Any

#: Keys the published client requires on every SessionItem, even when their value is null.
SESSION_ITEM_KEYS = {
    "id", "externalId", "type", "taskIdentifier", "tags", "metadata",
    "closedAt", "closedReason", "expiresAt", "createdAt", "updatedAt",
}  # fmt: skip


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique_external_id() -> str:
    return f"chat-{uuid.uuid4().hex}"


def session_body(**overrides: Any) -> dict[str, Any]:
    """A valid create body with a unique externalId; overrides replace wire fields."""
    body: dict[str, Any] = {
        "type": "chat.agent",
        "externalId": unique_external_id(),
        "taskIdentifier": "agent",
        "triggerConfig": {"basePayload": {"chatId": "c1"}},
    }
    body.update(overrides)
    return body


def forbidden_body(scopes: str) -> dict[str, str]:
    """The exact 403 body of wire reference §3 for a token holding ``scopes`` (comma-joined)."""
    return {
        "error": "Unauthorized: Public Access Token is missing required permissions. Token has the "
        f"following permissions: '{scopes}'. See https://trigger.dev/docs/frontend/overview#authentication"
        " for more information.",
        "code": "unauthorized",
        "param": "access_token",
        "type": "authorization",
    }


def route_parameters(app: Any) -> list[tuple[Any, str, str]]:
    """``(rule, method, argument)`` for every path parameter of every route the app serves.

    Read from the app's URL map, so a route added later is covered without touching the tests.
    """
    return [
        (rule, method, argument)
        for rule in app.url_map.iter_rules()
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
        for argument in sorted(rule.arguments)
    ]


def route_path(rule: Any, values: dict[str, str], encode: Any) -> str:
    """``rule``'s path with each ``<converter:argument>`` replaced by ``encode(values[argument])``."""
    path = rule.rule
    for argument in rule.arguments:
        start = path.index("<")
        path = path[:start] + encode(values[argument]) + path[path.index(">", start) + 1 :]
    return path
