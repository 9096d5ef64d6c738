"""Environments and their secret API keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from session_core.auth import generate_api_key, hash_api_key
from session_core.errors import NotFound
from session_core.ids import generate_cuid
from session_core.models import Environment, EnvironmentSummary, EnvironmentType
from session_core.repositories.ports import AbstractUnitOfWork


def create_environment(
    uow: AbstractUnitOfWork, slug: str, env_type: EnvironmentType, now: datetime
) -> Environment:
    """Create an environment with a fresh secret key.

    Every environment of one installation shares its organisation and project, taken from the
    first environment ever created.

    :raise Conflict: when the slug is taken.
    """
    with uow:
        first = uow.environments.first()
        environment = Environment(
            id=generate_cuid(),
            slug=slug,
            type=env_type,
            organization_id=first.organization_id if first else generate_cuid(),
            project_id=first.project_id if first else generate_cuid(),
            api_key=generate_api_key(env_type.value),
        )
        uow.environments.add(environment, hash_api_key(environment.api_key), now)
        uow.commit()
    return environment


def list_environments(uow: AbstractUnitOfWork) -> list[EnvironmentSummary]:
    """Every environment of the installation, oldest first; keys are never part of a listing."""
    with uow:
        return uow.environments.list_summaries()


def rotate_api_key(uow: AbstractUnitOfWork, slug: str) -> Environment:
    """Give the environment ``slug`` a fresh secret key and return it with that key.

    The old key stops matching at once in the database; web workers that cached it keep accepting
    it until their cache entry lapses (``Settings.auth_cache_seconds``). Public tokens signed with
    the old key stop verifying the same way. Sessions and their channels belong to the environment,
    not to the key, so they stay.

    :raise NotFound: when no environment has that slug.
    """
    with uow:
        environment = uow.environments.get_by_slug(slug)
        if environment is None:
            raise NotFound(f"No environment with slug {slug!r}")
        api_key = generate_api_key(environment.type.value)
        uow.environments.replace_api_key(environment.id, api_key, hash_api_key(api_key))
        uow.commit()
    return replace(environment, api_key=api_key)
