"""What a channel record carries on the wire: the body envelope, part ids and control records.

A record appended to a session's channel is stored as the envelope ``{"data": …, "id": partId}``
(wire reference §7); a control record (``trigger-control: …``) has headers and no body, and an S2
command record (trim, fence) a single header with an empty name. Pure rules, no I/O.
"""

from __future__ import annotations

import json
import secrets

import orjson

from session_core.channels.records import NewRecord
from session_core.errors import InvalidInput, PayloadTooLarge
from session_core.models import ChannelRecord, JSONValue

CONTROL_HEADER = "trigger-control"
TURN_COMPLETE = "turn-complete"
LEGACY_TURN_COMPLETE = "trigger:turn-complete"
#: The most a stored record may hold, as S2 caps a record (1 MiB): an appended body is stored as
#: a JSON string inside the envelope, where quotes, backslashes and control characters grow.
MAX_RECORD_BYTES = 1024 * 1024
PART_ID_LENGTH = 7
#: Longest part id (``X-Part-Id``, a record's ``id``) accepted.
MAX_PART_ID_CHARS = 256
_PART_ID_ALPHABET = "useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict"
#: A records POST holds at most this many records.
MAX_RECORDS_PER_POST = 1000


def part_id() -> str:
    """A 7-character nanoid, as Trigger.dev names a part that arrived without ``X-Part-Id``.

    Like nanoid, each random byte picks a letter by its low 6 bits (64 letters: no bias), so one
    call to the OS's random source serves all seven.
    """
    return "".join(_PART_ID_ALPHABET[byte & 63] for byte in secrets.token_bytes(PART_ID_LENGTH))


def envelope(data: JSONValue, part: str) -> str:
    """The stored record body: ``JSON.stringify({data, id: part})``; an appended body is a string
    ``data``, kept unparsed."""
    return json.dumps({"data": data, "id": part}, ensure_ascii=False, separators=(",", ":"))


def check_envelope_size(body: str, part: str | None) -> None:
    """Refuse a body whose envelope would be stored over ``MAX_RECORD_BYTES``.

    :raise PayloadTooLarge: naming the stored size, since the body alone may be under the limit.
    """
    stored = len(envelope(body, part or "x" * PART_ID_LENGTH).encode())
    if stored > MAX_RECORD_BYTES:
        raise PayloadTooLarge(
            f"The record would be {stored} bytes once stored, over the limit of {MAX_RECORD_BYTES}:"
            ' the body is stored as a JSON string inside {"data": …, "id": …}, where quotes,'
            " backslashes and control characters take two or more bytes each"
        )


def open_envelope(record: ChannelRecord) -> tuple[JSONValue, str]:
    """The ``(data, id)`` a record carries; a body that is no envelope is its own data, with no id.

    orjson parses it (catch-up reads open thousands), and the standard library what orjson refuses
    but JSON-in-Python reads (NaN, numbers past 64 bits, escaped lone surrogates).
    """
    try:
        parsed = orjson.loads(record.body)
    except orjson.JSONDecodeError:
        try:
            parsed = json.loads(record.body)
        except ValueError:
            return record.body, ""
    if isinstance(parsed, dict) and "data" in parsed:
        part = parsed.get("id")
        return parsed["data"], part if isinstance(part, str) else ""
    return record.body, ""


def is_command_record(record: ChannelRecord) -> bool:
    """S2 command records (trim, fence) have a single header with an empty name."""
    return bool(record.headers) and record.headers[0][0] == ""


def is_turn_complete(record: ChannelRecord) -> bool:
    """A ``trigger-control: turn-complete`` record, or the legacy ``trigger:turn-complete`` chunk."""
    if [CONTROL_HEADER, TURN_COMPLETE] in record.headers:
        return True
    data, _ = open_envelope(record)
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return False
    return isinstance(data, dict) and data.get("type") == LEGACY_TURN_COMPLETE


def records_from_wire(body: object, max_bytes: int) -> tuple[list[NewRecord], int | None]:
    """The records and ``trimBefore`` of a records POST body (``{"records": [...], "trimBefore"?}``).

    A record with a ``data`` key is stored in the envelope ``{"data": data, "id": id}`` (its ``id``,
    else a generated part id); one without is a control record: empty body, its headers only.
    Header names must be non-empty (an empty first name would make an S2 command record).

    :raise InvalidInput: a body of any other shape, more than ``MAX_RECORDS_PER_POST`` records, or
        records whose bodies and headers add up to more than ``max_bytes``.
    """
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise InvalidInput("Body must be an object with a records array")
    items, trim_before = body["records"], body.get("trimBefore")
    if not 1 <= len(items) <= MAX_RECORDS_PER_POST:
        raise InvalidInput(f"records must hold 1 to {MAX_RECORDS_PER_POST} records")
    if trim_before is not None and (type(trim_before) is not int or trim_before < 0):
        raise InvalidInput("trimBefore must be a non-negative integer seq_num")
    records = [_wire_record(item, index) for index, item in enumerate(items)]
    size = sum(
        len(r.body.encode()) + sum(len(n.encode()) + len(v.encode()) for n, v in r.headers) for r in records
    )
    if size > max_bytes:
        raise InvalidInput(f"Records add up to {size} bytes; at most {max_bytes} may be stored at once")
    return records, trim_before


def _wire_record(item: object, index: int) -> NewRecord:
    where = f"records[{index}]"
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} must be an object")
    headers = item.get("headers") or []
    if not isinstance(headers, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair) and pair[0]
        for pair in headers
    ):
        raise InvalidInput(
            f"{where}.headers must be a list of [name, value] string pairs with non-empty names"
        )
    part = item.get("id")
    if part is not None and (not isinstance(part, str) or not 0 < len(part) <= MAX_PART_ID_CHARS):
        raise InvalidInput(f"{where}.id must be a string of 1 to {MAX_PART_ID_CHARS} characters")
    if "data" not in item:
        if not headers:
            raise InvalidInput(f"{where} has neither data nor headers")
        return NewRecord("", headers)
    return NewRecord(envelope(item["data"], part or part_id()), headers)
