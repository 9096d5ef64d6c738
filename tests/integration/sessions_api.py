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
