"""Who is calling and what they may do: pure rules, no I/O (wire reference §6).

``can`` answers; the ``authorize*`` functions are the checks the use cases make, raising
``Forbidden`` with the message the wire expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from session_core.errors import Forbidden
from session_core.models import Environment, Io, Session


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


def authorize(
    principal: Principal,
    action: str,
    resources: Mapping[str, Iterable[str | None]],
    resource_type: str = "sessions",
) -> None:
    """Raise ``Forbidden`` unless ``principal`` may do ``action`` on one of ``resources``."""
    if not can(principal, action, resources, super_scopes(action, resource_type)):
        raise Forbidden(missing_permission_message(principal))


def authorize_list(principal: Principal, task_identifiers: tuple[str, ...]) -> None:
    """Listing needs ``read:sessions`` (or wider), or ``read:tasks`` scopes covering every filtered task."""
    tasks: tuple[str | None, ...] = task_identifiers or (None,)
    for task in tasks:
        authorize(principal, "read", {"tasks": [task]})


def authorize_run(principal: Principal, run_id: str) -> None:
    """A secret key may act on any run of its environment; a run token only on its own run."""
    if not principal.is_secret_key and principal.run_id != run_id:
        raise Forbidden("This token does not grant access to this run")


def authorize_stream(principal: Principal, name: str) -> None:
    """Let a secret key reach any stream of its environment, a stream token only its own stream.

    :raise Forbidden: for any other token.
    """
    if not principal.is_secret_key and STREAM_SCOPE_PREFIX + name not in principal.scopes:
        raise Forbidden("This token does not grant access to this stream")


def authorize_agent_for_out(principal: Principal, io: Io, action: str, session: Session | None) -> None:
    """Only the agent (a secret key, or its run's token) speaks on ``.out``: session tokens reach
    browsers. ``action`` opens the message (``Appending to``).

    :raise Forbidden: a token other than the session's run's writes ``.out``.
    """
    if io == "out" and not (
        principal.is_secret_key or (session and principal.is_agent_of(session.friendly_id))
    ):
        raise Forbidden(f"{action} the out channel requires secret key authentication")


def missing_permission_message(principal: Principal) -> str:
    held = ", ".join(principal.scopes)
    return (
        "Public Access Token is missing required permissions. Token has the following permissions: "
        f"'{held}'. See https://trigger.dev/docs/frontend/overview#authentication for more information."
    )


def stream_token_scopes(name: str) -> list[str]:
    """The scopes of a token for one S2 stream. No route of the control plane honours them."""
    return [STREAM_SCOPE_PREFIX + name]


def session_token_scopes(addressing_key: str) -> list[str]:
    """The scopes minted for a session's own token: read and write on its addressing key."""
    return [f"read:sessions:{addressing_key}", f"write:sessions:{addressing_key}"]
