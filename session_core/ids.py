"""Friendly ids (``session_…``, ``run_…``) over 25-character cuids.

A cuid here is ``c`` + 8 base36 characters of milliseconds + 4 of a process counter + 12 random:
lowercase base36, time-ordered at millisecond grain, never containing ``_`` so that
``session_<cuid>`` splits unambiguously.
"""

from __future__ import annotations

import itertools
import secrets
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_counter = itertools.count(secrets.randbelow(36**4))

SESSION_PREFIX = "session_"
RUN_PREFIX = "run_"
WAITPOINT_PREFIX = "waitpoint_"


def _base36(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, rem = divmod(value, 36)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits))


def generate_cuid(now_ms: int | None = None) -> str:
    """Return a new 25-character, time-ordered cuid."""
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    count = next(_counter) % 36**4
    return "c" + _base36(millis, 8) + _base36(count, 4) + _base36(secrets.randbits(62), 12)


def session_friendly_id(cuid: str) -> str:
    return SESSION_PREFIX + cuid


def run_friendly_id(cuid: str) -> str:
    return RUN_PREFIX + cuid


def is_session_friendly_id(value: str) -> bool:
    """A ``session_…`` value names a friendly id; anything else is an ``externalId``."""
    return value.startswith(SESSION_PREFIX)
