"""A synthetic but plausible sessions table for one environment, generated in ``created_at`` order.

Rows come out oldest first, the order a live service writes them, so PostgreSQL's heap and
ClickHouse's parts end up laid out the way production would leave them. The mix (types, tasks,
tags, statuses) is fixed by a seed, so two runs list the same data; the list benchmark reports how
many rows each of its filters matches.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from session_core.ids import generate_cuid, session_friendly_id
from session_core.models import Environment

__all__ = ["RARE_TAG", "Dataset", "generate_rows"]

TYPES = ("chat.agent", "voice.agent", "workflow.agent")
TYPE_WEIGHTS = (60, 25, 15)
TASKS = ("support-bot", "sales-bot", "triage", "summarizer", "coder", "research", "onboarding", "billing")
TASK_WEIGHTS = (30, 15, 15, 10, 10, 8, 7, 5)
# Common labels (each on a few percent of rows) and one per end user (each on a handful of rows).
COMMON_TAGS = ("plan:free", "plan:pro", "region:eu", "region:us", "channel:slack", "priority:high")
COMMON_TAG_CHANCE = 0.05
USERS = 20_000
RARE_TAG = "user:4242"
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Dataset:
    """How many sessions, over how many days up to ``end``, for which environment."""

    environment: Environment
    sessions: int
    days: int
    end: datetime
    seed: int = 20261124

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


def generate_rows(dataset: Dataset) -> Iterator[dict[str, Any]]:
    """Yield ``sessions`` rows (the PostgreSQL columns) with ``created_at`` ascending.

    About 60 % are closed, 35 % active (half without expiry) and 5 % expired; 30 % carry an
    externalId. Each session has a ``user:N`` tag and each common tag with a 5 % chance.
    """
    rng = random.Random(dataset.seed)
    env = dataset.environment
    span = (dataset.end - dataset.start) / max(dataset.sessions, 1)
    types = rng.choices(TYPES, TYPE_WEIGHTS, k=dataset.sessions)
    tasks = rng.choices(TASKS, TASK_WEIGHTS, k=dataset.sessions)
    for n in range(dataset.sessions):
        created = (dataset.start + span * n).replace(microsecond=0) + _MS * rng.randrange(1000)
        cuid = generate_cuid((created - _EPOCH) // _MS)
        tags = [f"user:{rng.randrange(USERS)}"]
        tags += [tag for tag in COMMON_TAGS if rng.random() < COMMON_TAG_CHANCE]
        roll = rng.random()
        closed_at = expires_at = None
        updated = created
        if roll < 0.60:
            closed_at = min(created + timedelta(seconds=rng.randrange(60, 3 * 3600)), dataset.end)
            updated = closed_at
        elif roll < 0.95:
            expires_at = dataset.end + timedelta(days=7) if roll < 0.775 else None
        else:
            expires_at = min(created + timedelta(hours=1), dataset.end - timedelta(minutes=1))
        yield {
            "id": cuid,
            "friendly_id": session_friendly_id(cuid),
            "external_id": f"ext-{n}" if rng.random() < 0.3 else None,
            "type": types[n],
            "task_identifier": tasks[n],
            "trigger_config": {"basePayload": {}},
            "tags": tags,
            "metadata": None,
            "organization_id": env.organization_id,
            "project_id": env.project_id,
            "environment_id": env.id,
            "environment_type": env.type.value,
            "current_run_id": None,
            "current_run_version": 0,
            "closed_at": closed_at,
            "closed_reason": "completed" if closed_at else None,
            "expires_at": expires_at,
            "created_at": created,
            "updated_at": updated,
        }
