"""Map a PostgreSQL ``sessions`` row onto a ClickHouse ``sessions_v1`` row (wire reference §8).

Pure. Timestamps go out twice: as ``DateTime``/``DateTime64`` columns (clamped to the range every
ClickHouse version stores) and as exact epoch-millisecond integers, which list queries compare so
that keyset cursors and expiry checks are exact even on servers without ``DateTime64``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

__all__ = ["COLUMNS", "to_clickhouse_row"]

COLUMNS: tuple[str, ...] = (
    "environment_id",
    "organization_id",
    "project_id",
    "session_id",
    "environment_type",
    "friendly_id",
    "external_id",
    "type",
    "task_identifier",
    "tags",
    "metadata",
    "closed_at",
    "closed_reason",
    "expires_at",
    "created_at",
    "updated_at",
    "created_at_ms",
    "expires_at_ms",
    "_version",
    "_is_deleted",
)
"""Every ``sessions_v1`` column, in the order ``ddl.py`` declares them."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# ``DateTime`` is a UInt32 of seconds; anything outside it would fail the whole batch.
_DATETIME_MIN = _EPOCH
_DATETIME_MAX = datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)


def to_clickhouse_row(row: Mapping[str, object], *, version: int, is_deleted: bool) -> dict[str, object]:
    """Build the ClickHouse row for one change.

    ``version`` is the transaction's commit end LSN as an integer; a delete is written as a
    tombstone carrying the old row's values so it lands on the same sorting key.
    """
    created_at = _utc(row["created_at"])
    expires_at = _utc_or_none(row["expires_at"])
    return {
        "environment_id": row["environment_id"],
        "organization_id": row["organization_id"],
        "project_id": row["project_id"],
        "session_id": row["id"],
        "environment_type": row["environment_type"],
        "friendly_id": row["friendly_id"],
        "external_id": row["external_id"] or "",
        "type": row["type"],
        "task_identifier": row["task_identifier"] or "",
        "tags": _tags(row["tags"]),
        "metadata": json.dumps({"data": row["metadata"]}, ensure_ascii=False, separators=(",", ":")),
        "closed_at": _storable(_utc_or_none(row["closed_at"])),
        "closed_reason": row["closed_reason"] or "",
        "expires_at": _storable(expires_at),
        "created_at": _storable(created_at),
        "updated_at": _storable(_utc(row["updated_at"])),
        "created_at_ms": _millis(created_at),
        "expires_at_ms": None if expires_at is None else _millis(expires_at),
        "_version": version,
        "_is_deleted": 1 if is_deleted else 0,
    }


def _tags(value: object) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"tags must be a list, got {type(value).__name__}")
    # text[] admits NULL elements; ClickHouse Array(String) does not.
    return [tag for tag in value if tag is not None]


def _utc(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(f"expected a timestamp, got {type(value).__name__}")
    # The schema keeps naive UTC; an aware value (timestamptz) is converted.
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _utc_or_none(value: object) -> datetime | None:
    return None if value is None else _utc(value)


def _millis(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def _storable(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return min(max(moment, _DATETIME_MIN), _DATETIME_MAX)
