"""What text every backend can store: PostgreSQL refuses NUL, and no UTF-8 store takes a lone surrogate."""

from __future__ import annotations


def is_storable(text: str) -> bool:
    """Whether ``text`` can be written to (and so looked up in) every database we run on.

    Checking at the boundary turns what would be a driver error (a 500) into a clear 4xx, or into
    "no such row" for lookups, alike on SQLite and PostgreSQL.
    """
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
