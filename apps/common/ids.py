"""Record ids in the one form the server writes them: lowercase hex, 8-4-4-4-12.

Python's ``UUID()`` also reads uppercase hex, braces, a ``urn:uuid:`` prefix and no dashes,
and the server would store and serve such an id in its own form. A client whose ids are
case-sensitive strings (WatermelonDB's; iOS writes uppercase) would then hold the record
twice, under its id and the server's. So an id a client sends must already be in that form.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

CANONICAL_UUID = "a UUID written in lowercase, 8-4-4-4-12 hex digits"


def canonical_uuid(value: Any) -> UUID | None:
    """The UUID ``value`` writes in the server's form; None for anything else (another
    spelling of a UUID included)."""
    if type(value) is not str or len(value) != 36:
        return None
    try:
        parsed = UUID(value)
    except ValueError:
        return None
    return parsed if str(parsed) == value else None
