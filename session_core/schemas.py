"""Marshmallow schemas: the wire's camelCase bodies <-> our snake_case values.

Unknown keys are dropped (as Trigger.dev's zod schemas strip them). Loading raises
``marshmallow.ValidationError``; ``load_body`` turns it into ``InvalidInput`` with field details.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_dump, validate, validates
from marshmallow.exceptions import SCHEMA

from session_core.errors import InvalidInput
from session_core.ids import SESSION_PREFIX
from session_core.models import SessionStatus
from session_core.repositories.ports import SessionFilters

MACHINE_PRESETS = (
    "micro", "small-1x", "small-2x", "medium-1x", "medium-2x", "large-1x", "large-2x",
)  # fmt: skip
EXTERNAL_ID_PREFIX_ERROR = (
    "externalId cannot start with 'session_' (reserved prefix for internal friendlyIds)"
)
_MIN_DATE = datetime(1970, 1, 1)
_MAX_DATE = datetime(9999, 12, 31)


class Base(Schema):
    class Meta:
        unknown = EXCLUDE


class CoercedDateTime(fields.Field[datetime]):
    """A date as zod's ``coerce.date`` takes it: an ISO string or epoch milliseconds; stored naive UTC."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        try:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int | float):
                parsed = datetime.fromtimestamp(value / 1000, UTC)
            elif isinstance(value, str):
                parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            else:
                raise ValueError
            if parsed.tzinfo is not None:
                parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except (ValueError, OverflowError, OSError):
            raise ValidationError("Must be an ISO 8601 date or epoch milliseconds.") from None
        if not _MIN_DATE <= parsed <= _MAX_DATE:
            raise ValidationError("Must be a date between 1970 and 9999.")
        return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class TrimmedString(fields.String):
    """A string with surrounding whitespace removed before validation (as zod's ``.trim()``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return super()._deserialize(value, attr, data, **kwargs).strip()


def _tags_field() -> fields.List[str]:
    return fields.List(fields.String(validate=validate.Length(max=128)), validate=validate.Length(max=10))


def _external_id_field(**kwargs: Any) -> fields.String:
    return TrimmedString(validate=validate.Length(min=1, max=256), data_key="externalId", **kwargs)


def _check_external_id(value: str | None) -> None:
    if value is not None and value.startswith(SESSION_PREFIX):
        raise ValidationError(EXTERNAL_ID_PREFIX_ERROR)


class TriggerConfigSchema(Base):
    base_payload = fields.Dict(keys=fields.String(), required=True, data_key="basePayload")
    machine = fields.String(validate=validate.OneOf(MACHINE_PRESETS))
    queue = fields.String(validate=validate.Length(max=128))
    tags = _tags_field()
    max_attempts = fields.Integer(strict=True, validate=validate.Range(1, 10), data_key="maxAttempts")
    idle_timeout_in_seconds = fields.Integer(
        strict=True, validate=validate.Range(1, 3600), data_key="idleTimeoutInSeconds"
    )
    max_duration = fields.Integer(strict=True, validate=validate.Range(min=1), data_key="maxDuration")
    lock_to_version = fields.String(validate=validate.Length(max=128), data_key="lockToVersion")
    region = fields.String(validate=validate.Length(max=128))
    concurrency_key = fields.String(validate=validate.Length(max=256), data_key="concurrencyKey")
    external_deployment_id = fields.String(validate=validate.Length(max=256), data_key="externalDeploymentId")
    ttl = fields.Raw()

    @post_dump
    def _drop_unset(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # The client's zod schema rejects null for optional keys: leave them out instead.
        return {key: value for key, value in data.items() if value is not None}


class CreateSessionSchema(Base):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    external_id = _external_id_field(allow_none=True)
    task_identifier = fields.String(
        required=True, validate=validate.Length(min=1, max=128), data_key="taskIdentifier"
    )
    trigger_config = fields.Nested(TriggerConfigSchema, required=True, data_key="triggerConfig")
    tags = _tags_field()
    metadata = fields.Dict(keys=fields.String(), allow_none=True)
    expires_at = CoercedDateTime(allow_none=True, data_key="expiresAt")

    @validates("external_id")
    def _external_id(self, value: str | None, **kwargs: Any) -> None:
        _check_external_id(value)


class UpdateSessionSchema(Base):
    tags = _tags_field()
    metadata = fields.Dict(keys=fields.String(), allow_none=True)
    external_id = _external_id_field(allow_none=True)

    @validates("external_id")
    def _external_id(self, value: str | None, **kwargs: Any) -> None:
        _check_external_id(value)


class CloseSessionSchema(Base):
    reason = fields.String(allow_none=True, validate=validate.Length(max=256))


class EndAndContinueSchema(Base):
    calling_run_id = fields.String(data_key="callingRunId", validate=validate.Length(min=1, max=256))
    reason = fields.String(required=True, validate=validate.Length(max=64))


class SessionItemSchema(Base):
    """A session as the wire shows it; nullable keys are always present (the client requires them)."""

    id = fields.String(attribute="friendly_id")
    external_id = fields.String(data_key="externalId", allow_none=True)
    type = fields.String()
    task_identifier = fields.String(data_key="taskIdentifier")
    tags = fields.List(fields.String())
    metadata = fields.Raw(allow_none=True)
    closed_at = CoercedDateTime(data_key="closedAt", allow_none=True)
    closed_reason = fields.String(data_key="closedReason", allow_none=True)
    expires_at = CoercedDateTime(data_key="expiresAt", allow_none=True)
    created_at = CoercedDateTime(data_key="createdAt")
    updated_at = CoercedDateTime(data_key="updatedAt")
    current_run_id = fields.String(data_key="currentRunId", allow_none=True)


class SessionDetailSchema(SessionItemSchema):
    trigger_config = fields.Nested(TriggerConfigSchema, data_key="triggerConfig")


class CreatedSessionSchema(SessionDetailSchema):
    run_id = fields.String(data_key="runId")
    public_access_token = fields.String(data_key="publicAccessToken")
    is_cached = fields.Boolean(data_key="isCached")


class PaginationSchema(Base):
    next = fields.String()
    previous = fields.String()


class SessionListSchema(Base):
    data = fields.List(fields.Nested(SessionItemSchema))
    pagination = fields.Nested(PaginationSchema)


class EndAndContinueResultSchema(Base):
    run_id = fields.String(data_key="runId")
    swapped = fields.Boolean()


class ErrorSchema(Base):
    error = fields.String(required=True)
    details = fields.List(fields.Dict())


def load_body(schema: Schema, data: Any) -> dict[str, Any]:
    """Validate a parsed JSON body; a schema failure becomes ``InvalidInput`` (a 422)."""
    if not isinstance(data, Mapping):
        raise InvalidInput("Request body must be a JSON object", [{"path": [], "message": "Expected object"}])
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        details = _flatten(exc.normalized_messages())  # type: ignore[no-untyped-call]
        summary = "; ".join(f"{'.'.join(d['path']) or 'body'}: {d['message']}" for d in details[:5])
        raise InvalidInput(f"Validation error: {summary}", details) from None
    return loaded


def _flatten(messages: Any, path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    if isinstance(messages, dict):
        out: list[dict[str, Any]] = []
        for key, value in messages.items():
            # marshmallow files errors about a whole object under "_schema": name the object itself.
            out.extend(_flatten(value, path if key == SCHEMA else (*path, str(key))))
        return out
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [{"path": list(path), "message": " ".join(messages)}]
    if isinstance(messages, list):
        return [d for m in messages for d in _flatten(m, path)]
    return [{"path": list(path), "message": str(messages)}]


_DURATION_UNITS_MS = {
    "ms": 1, "millisecond": 1, "milliseconds": 1,
    "s": 1000, "sec": 1000, "second": 1000, "seconds": 1000,
    "m": 60_000, "min": 60_000, "minute": 60_000, "minutes": 60_000,
    "h": 3_600_000, "hr": 3_600_000, "hour": 3_600_000, "hours": 3_600_000,
    "d": 86_400_000, "day": 86_400_000, "days": 86_400_000,
    "w": 604_800_000, "week": 604_800_000, "weeks": 604_800_000,
    "y": 31_557_600_000, "year": 31_557_600_000, "years": 31_557_600_000,
}  # fmt: skip
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)?\s*", re.IGNORECASE)


def parse_duration_ms(text: str) -> int | None:
    """Parse ``1h``, ``7d``, ``90m``, ``1h30m`` (as npm's parse-duration does); None if unparsable."""
    total, position = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != position or not match.group(0).strip():
            return None
        unit = (match.group(2) or "ms").lower()
        if unit not in _DURATION_UNITS_MS:
            return None
        total += float(match.group(1)) * _DURATION_UNITS_MS[unit]
        position = match.end()
    if position != len(text) or position == 0 or total > 1e15:
        return None
    return int(total)


class CommaList(fields.Field[list[str]]):
    """A query value the published client sends comma-joined: ``filter[status]=ACTIVE,CLOSED``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not isinstance(value, str):
            raise ValidationError("Must be a string.")
        return [part.strip() for part in value.split(",") if part.strip()]


class ListSessionsQuerySchema(Base):
    page_size = fields.Integer(load_default=20, validate=validate.Range(1, 100), data_key="page[size]")
    page_after = fields.String(data_key="page[after]", validate=validate.Length(min=1, max=512))
    page_before = fields.String(data_key="page[before]", validate=validate.Length(min=1, max=512))
    types = CommaList(data_key="filter[type]")
    tags = CommaList(data_key="filter[tags]")
    task_identifiers = CommaList(data_key="filter[taskIdentifier]")
    external_ids = CommaList(data_key="filter[externalId]")
    statuses = CommaList(data_key="filter[status]")
    period = fields.String(data_key="filter[createdAt][period]")
    created_from = fields.Integer(
        data_key="filter[createdAt][from]", validate=validate.Range(0, 253402300799999)
    )
    created_to = fields.Integer(data_key="filter[createdAt][to]", validate=validate.Range(0, 253402300799999))

    @validates("statuses")
    def _statuses(self, value: list[str], **kwargs: Any) -> None:
        unknown = [v for v in value if v not in SessionStatus.__members__]
        if unknown:
            raise ValidationError(f"Unknown status {unknown[0]!r}; use ACTIVE, CLOSED or EXPIRED.")


_LIST_QUERY = ListSessionsQuerySchema()


def load_list_query(
    args: Mapping[str, str], now: datetime
) -> tuple[SessionFilters, int, str | None, str | None]:
    """Parse the list endpoint's query into filters, page size and the two cursors."""
    try:
        q = _LIST_QUERY.load(dict(args))
    except ValidationError as exc:
        details = _flatten(exc.normalized_messages())  # type: ignore[no-untyped-call]
        summary = "; ".join(f"{'.'.join(d['path'])}: {d['message']}" for d in details[:5])
        raise InvalidInput(f"Query Error: {summary}", details) from None
    created_from = _from_epoch_ms(q.get("created_from"))
    period_ms = parse_duration_ms(q["period"]) if q.get("period") else None
    if period_ms is not None:
        # A period reaching back past 1970 covers every session; clamping keeps the date in range.
        since = now - min(timedelta(milliseconds=period_ms), now - _MIN_DATE)
        created_from = max(created_from, since) if created_from else since
    filters = SessionFilters(
        types=tuple(q.get("types", ())),
        tags=tuple(q.get("tags", ())),
        task_identifiers=tuple(q.get("task_identifiers", ())),
        external_ids=tuple(q.get("external_ids", ())),
        statuses=tuple(SessionStatus(s) for s in dict.fromkeys(q.get("statuses", ()))),
        created_from=created_from,
        created_to=_from_epoch_ms(q.get("created_to")),
    )
    return filters, q["page_size"], q.get("page_after"), q.get("page_before")


def _from_epoch_ms(value: int | None) -> datetime | None:
    return None if value is None else datetime(1970, 1, 1) + timedelta(milliseconds=value)


class RunItemSchema(Base):
    """A run as the wire shows it (``RunView``): every key present, nullable ones as null."""

    id = fields.String(attribute="run.run_id")
    session_id = fields.String(data_key="sessionId")
    status = fields.String()
    reason = fields.String(attribute="run.reason")
    created_at = CoercedDateTime(data_key="createdAt", attribute="run.triggered_at")
    started_at = CoercedDateTime(data_key="startedAt", attribute="run.started_at", allow_none=True)
    ended_at = CoercedDateTime(data_key="endedAt", attribute="run.ended_at", allow_none=True)
    lease_expires_at = CoercedDateTime(
        data_key="leaseExpiresAt", attribute="run.lease_expires_at", allow_none=True
    )
    output = fields.Raw(attribute="run.output", allow_none=True)
    error = fields.Raw(attribute="run.error", allow_none=True)


class HeartbeatResultSchema(RunItemSchema):
    token = fields.String()
    lease_seconds = fields.Integer(data_key="leaseSeconds")


class RunListSchema(Base):
    data = fields.List(fields.Nested(RunItemSchema))


class HeartbeatSchema(Base):
    """A heartbeat carries nothing yet; the body is an (empty) JSON object."""


class CompleteRunSchema(Base):
    output = fields.Raw(allow_none=True)


class FailRunSchema(Base):
    error = fields.Raw(required=True, allow_none=True)


class JwtClaimsSchema(Base):
    sub = fields.String()
    pub = fields.Boolean()
