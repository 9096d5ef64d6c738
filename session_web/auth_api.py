"""``POST /api/v1/auth/jwt/claims``: the claims the SDK signs its own public tokens with.

``auth.createPublicToken()`` in ``@trigger.dev/sdk`` asks for them with the secret key (no body),
then signs ``{...claims, scopes}`` with that key itself, so the tokens it makes verify here.
"""

from __future__ import annotations

from flask import Blueprint

from session_core.scopes import Principal
from session_web.routing import api_route

bp = Blueprint("auth_api", __name__, url_prefix="/api/v1/auth")


@api_route(bp, "/jwt/claims", methods=["POST"], allow_jwt=False)
def jwt_claims(principal: Principal) -> dict[str, object]:
    return {"sub": principal.environment.id, "pub": True}
