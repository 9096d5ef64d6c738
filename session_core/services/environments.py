"""Environments and their secret API keys."""

from __future__ import annotations

from datetime import datetime

from session_core.auth import generate_api_key, hash_api_key
from session_core.db.uow import UnitOfWork
from session_core.ids import generate_cuid
from session_core.models import Environment, EnvironmentType


def create_environment(uow: UnitOfWork, slug: str, env_type: EnvironmentType, now: datetime) -> Environment:
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
