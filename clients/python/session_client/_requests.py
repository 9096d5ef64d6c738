"""The requests whose bodies take some building, shared by the sync and async clients."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from session_client._core import Call, session_path
from session_client._models import ControlRecord, DataRecord, Headers

#: The largest part id the server takes (``X-Part-Id``).
MAX_PART_ID_LENGTH = 256


def _iso(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def create_call(
    type: str,
    task_identifier: str,
    trigger_config: dict[str, Any] | None,
    external_id: str | None,
    tags: Sequence[str] | None,
    metadata: dict[str, Any] | None,
    expires_at: datetime | None,
) -> Call:
    """``POST /api/v1/sessions``. With an externalId a retry finds the same session (idempotent);
    without one a retry could create a second, so only unsent requests are retried."""
    body: dict[str, Any] = {
        "type": type,
        "taskIdentifier": task_identifier,
        "triggerConfig": trigger_config if trigger_config is not None else {"basePayload": {}},
    }
    if external_id is not None:
        body["externalId"] = external_id
    if tags is not None:
        body["tags"] = list(tags)
    if metadata is not None:
        body["metadata"] = metadata
    if expires_at is not None:
        body["expiresAt"] = _iso(expires_at)
    return Call("POST", "/api/v1/sessions", json=body, idempotent=external_id is not None)


def update_call(ref: str, tags: Sequence[str] | None, metadata: dict[str, Any] | None) -> Call:
    body: dict[str, Any] = {}
    if tags is not None:
        body["tags"] = list(tags)
    if metadata is not None:
        body["metadata"] = metadata
    return Call("PATCH", session_path(ref), json=body)


def _check_part_id(part_id: str) -> None:
    if not part_id or len(part_id) > MAX_PART_ID_LENGTH:
        raise ValueError(f"part_id must be 1 to {MAX_PART_ID_LENGTH} characters")


def append_call(path: str, data: Any, part_id: str, headers: Headers | None) -> tuple[Call, bool]:
    """One record: a plain string through ``POST …/append`` (stored as it is), anything else
    through ``POST …/records`` so JSON data stays JSON. Returns the call and whether it is the
    records route (which answers ``seqNums``, not ``seq``)."""
    _check_part_id(part_id)
    part = {"X-Part-Id": part_id}
    if isinstance(data, str) and not headers:
        return Call("POST", path + "/append", content=data, headers=part), False
    record = DataRecord(data, part_id, headers)
    return Call("POST", path + "/records", json={"records": [record.wire()]}, headers=part), True


def write_call(
    path: str, records: Sequence[DataRecord | ControlRecord], trim_before: int | None, part_id: str
) -> Call:
    """Several records in one ``POST …/records``; the part id makes a retry store them once."""
    _check_part_id(part_id)
    body: dict[str, Any] = {"records": [record.wire() for record in records]}
    if trim_before is not None:
        body["trimBefore"] = trim_before
    return Call("POST", path + "/records", json=body, headers={"X-Part-Id": part_id})
