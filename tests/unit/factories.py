"""Builders for domain objects with sensible defaults; tests override only what they are about."""

from dataclasses import replace
from datetime import datetime
from typing import Any

from session_core.ids import generate_cuid, session_friendly_id
from session_core.models import Session

_BASE = Session(
    id="c" + "0" * 24,
    friendly_id=session_friendly_id("c" + "0" * 24),
    external_id=None,
    type="chat.agent",
    task_identifier="agent",
    trigger_config={"base_payload": {}},
    tags=[],
    metadata=None,
    organization_id="org",
    project_id="proj",
    environment_id="env1",
    environment_type="DEVELOPMENT",
    current_run_id=None,
    current_run_version=0,
    closed_at=None,
    closed_reason=None,
    expires_at=None,
    created_at=datetime(2026, 1, 1),
    updated_at=datetime(2026, 1, 1),
)


def make_session(**overrides: Any) -> Session:
    cuid = generate_cuid()
    return replace(_BASE, id=cuid, friendly_id=session_friendly_id(cuid), **overrides)
