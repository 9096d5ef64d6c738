"""Turn a bearer token into a ``Principal``, and mint the tokens we hand out (wire reference §6).

Secret keys are looked up by their SHA-256 digest and then compared in constant time; JWTs are
HS256, signed with the environment's secret key (authlib's JOSE implementation, ``joserfc``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import OctKey
from joserfc.jwt import JWTClaimsRegistry

from session_core.errors import Unauthenticated
from session_core.models import Environment
from session_core.scopes import Principal, PrincipalKind

logger = logging.getLogger(__name__)

ISSUER = "https://id.trigger.dev"
AUDIENCE = "https://api.trigger.dev"
SESSION_TOKEN_TTL_SECONDS = 3600
_CLAIMS = JWTClaimsRegistry(
    iss={"essential": True, "value": ISSUER},
    aud={"essential": True, "value": AUDIENCE},
    exp={"essential": True},
)


class EnvironmentLookup(Protocol):
    def get(self, environment_id: str) -> Environment | None: ...

    def get_by_api_key_hash(self, api_key_hash: str) -> Environment | None: ...


class HasEnvironments(Protocol):
    @property
    def environments(self) -> EnvironmentLookup: ...


UnitOfWorkLike = AbstractContextManager[HasEnvironments]


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def generate_api_key(environment_type: str) -> str:
    """A new secret key, ``tr_<env>_…``, with 192 bits of randomness."""
    short = {"DEVELOPMENT": "dev", "STAGING": "stg", "PRODUCTION": "prod", "PREVIEW": "prev"}
    return f"tr_{short.get(environment_type, 'dev')}_{secrets.token_urlsafe(24)}"


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


def _unverified_claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise Unauthenticated("Public Access Token is invalid: malformed token") from None
    if not isinstance(claims, dict):
        raise Unauthenticated("Public Access Token is invalid: malformed token")
    return claims


#: Spends a one-time token: ``(sha256 hex of the token, its exp)`` -> True for its first use only.
SpendToken = Callable[[str, int], bool]
SPENT_TOKEN_MESSAGE = "Invalid Public Access Token"


def _verify_jwt(token: str, environments: EnvironmentLookup, spend: SpendToken | None) -> Principal:
    subject = _unverified_claims(token).get("sub")
    environment = environments.get(subject) if isinstance(subject, str) else None
    if environment is None:
        raise Unauthenticated("Invalid Public Access Token, environment not found.")
    try:
        decoded = jwt.decode(token, OctKey.import_key(environment.api_key), algorithms=["HS256"])
        _CLAIMS.validate(decoded.claims)
    except ExpiredTokenError:
        raise Unauthenticated(
            "Public Access Token has expired. See https://trigger.dev/docs/frontend/overview#authentication"
        ) from None
    except (JoseError, ValueError) as exc:
        raise Unauthenticated(f"Public Access Token is invalid: {exc}") from None
    claims = decoded.claims
    scopes = claims.get("scopes") or []
    if claims.get("pub") is not True or not isinstance(scopes, list):
        raise Unauthenticated("Public Access Token is invalid: not a public token")
    if claims.get("otu") is True and (spend is None or not spend(hash_api_key(token), int(claims["exp"]))):
        raise Unauthenticated(SPENT_TOKEN_MESSAGE)
    run_id, session_id = claims.get("runId"), claims.get("sessionId")
    is_run_token = isinstance(run_id, str) and isinstance(session_id, str)
    return Principal(
        environment,
        PrincipalKind.PUBLIC_JWT,
        tuple(s for s in scopes if isinstance(s, str)),
        expires_at=int(claims["exp"]),
        run_id=run_id if is_run_token else None,
        session_id=session_id if is_run_token else None,
    )


def authenticate(
    authorization: str | None,
    environments: EnvironmentLookup,
    *,
    allow_jwt: bool,
    spend: SpendToken | None = None,
) -> Principal:
    """Resolve an ``Authorization`` header to a principal.

    A one-time-use JWT (``otu: true``) is spent through ``spend`` once it verifies; without
    ``spend`` such a token is refused, as is every use after its first.

    :raise Unauthenticated: with the exact messages Trigger.dev's clients expect.
    """
    token = ""
    if authorization and authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
    if not token:
        raise Unauthenticated("Invalid or Missing API key")
    if token.startswith("pk_"):
        raise Unauthenticated("Public API keys are not allowed for this request")
    if _looks_like_jwt(token):
        if not allow_jwt:
            raise Unauthenticated("Public JWT API keys are not allowed for this request")
        return _verify_jwt(token, environments, spend)
    environment = environments.get_by_api_key_hash(hash_api_key(token))
    if environment is None or not hmac.compare_digest(environment.api_key, token):
        raise Unauthenticated("Invalid API Key")
    return Principal(environment, PrincipalKind.PRIVATE)


def mint_token(
    environment: Environment,
    scopes: list[str],
    *,
    ttl_seconds: int = SESSION_TOKEN_TTL_SECONDS,
    now: float | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """Sign a public JWT for ``environment`` carrying ``scopes``."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": environment.id,
        "pub": True,
        "scopes": scopes,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": issued,
        "exp": issued + ttl_seconds,
        **(extra_claims or {}),
    }
    return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, OctKey.import_key(environment.api_key))


class CachedEnvironments:
    """An ``EnvironmentLookup`` that remembers what it found, so most requests skip the database.

    An environment changes only when its key is rotated, so a found environment is kept for
    ``ttl_seconds``: that bounds how long a rotated-out key (or a deleted environment) stays usable
    in this process. Misses are not kept, so a new key works at once. ``load`` opens a read-only
    unit of work.
    """

    def __init__(
        self, load: Callable[[], UnitOfWorkLike], ttl_seconds: float = 5.0, max_entries: int = 10_000
    ) -> None:
        self._load = load
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._found: dict[tuple[str, str], tuple[float, Environment]] = {}

    def get(self, environment_id: str) -> Environment | None:
        return self._lookup(("id", environment_id), lambda repo: repo.get(environment_id))

    def get_by_api_key_hash(self, api_key_hash: str) -> Environment | None:
        return self._lookup(("key", api_key_hash), lambda repo: repo.get_by_api_key_hash(api_key_hash))

    def _lookup(
        self, key: tuple[str, str], fetch: Callable[[EnvironmentLookup], Environment | None]
    ) -> Environment | None:
        now = time.monotonic()
        hit = self._found.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self._load() as uow:
            environment = fetch(uow.environments)
        if environment is not None:
            if len(self._found) >= self._max_entries:
                self._found.clear()
            self._found[key] = (now + self._ttl, environment)
        return environment
