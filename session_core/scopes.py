"""Who is calling and what they may do: pure rules, no I/O (wire reference §6)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from session_core.models import Environment


class PrincipalKind(StrEnum):
    PRIVATE = "PRIVATE"  # a secret API key: passes every check
    PUBLIC_JWT = "PUBLIC_JWT"  # a signed token: only its scopes


@dataclass(frozen=True)
class Principal:
    """Who calls. A run token also names its run and its session (``run_…``, ``session_…``)."""

    environment: Environment
    kind: PrincipalKind
    scopes: tuple[str, ...] = ()
    #: When the caller's token expires (epoch seconds); None for a secret key, which does not.
    expires_at: int | None = None
    run_id: str | None = None
    session_id: str | None = None

    @property
    def is_secret_key(self) -> bool:
        return self.kind is PrincipalKind.PRIVATE

    def is_agent_of(self, session_friendly_id: str) -> bool:
        """Whether this principal may speak for the session's agent: a secret key, or its run's token."""
        return self.is_secret_key or (self.run_id is not None and self.session_id == session_friendly_id)


#: A token scope naming one S2 stream (``PUT`` hands these out; run tokens hold their two channels').
STREAM_SCOPE_PREFIX = "s2:streams:"


#: Resource types a scope may name, as Trigger.dev knows them.
RESOURCE_TYPES = (
    "tasks", "tags", "runs", "batch", "waitpoints", "deployments",
    "inputStreams", "query", "prompts", "sessions",
)  # fmt: skip


def super_scopes(action: str, resource_type: str = "sessions") -> tuple[str, ...]:
    """The scopes that grant ``action`` on every resource of a type, e.g. ``read:sessions``."""
    return (f"{action}:{resource_type}", f"{action}:all", "admin")


def can(
    principal: Principal,
    action: str,
    resources: Mapping[str, Iterable[str | None]],
    supers: Iterable[str],
) -> bool:
    """Decide whether ``principal`` may perform ``action`` on any of ``resources``.

    A secret key always may. A token needs a super-scope, or ``{action}:{type}:{value}`` or
    ``{action}:{type}`` for some listed resource type and value.
    """
    if principal.is_secret_key:
        return True
    held = set(principal.scopes)
    if not held or not resources:
        return False
    if held.intersection(supers):
        return True
    for resource_type, values in resources.items():
        if resource_type not in RESOURCE_TYPES:
            continue
        if f"{action}:{resource_type}" in held:
            return True
        if any(f"{action}:{resource_type}:{value}" in held for value in values if value is not None):
            return True
    return False


def missing_permission_message(principal: Principal) -> str:
    held = ", ".join(principal.scopes)
    return (
        "Public Access Token is missing required permissions. Token has the following permissions: "
        f"'{held}'. See https://trigger.dev/docs/frontend/overview#authentication for more information."
    )


def session_token_scopes(addressing_key: str) -> list[str]:
    """The scopes minted for a session's own token: read and write on its addressing key."""
    return [f"read:sessions:{addressing_key}", f"write:sessions:{addressing_key}"]
