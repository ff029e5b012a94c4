"""JSON text of plain values (dicts, lists, strings, numbers, booleans, None, and the ids
and times of a batch's rows), fast.

Sync writes a JSON document per record version and per ledger row, and a batch's rows as one
document: the standard library's encoder took about 4 µs a record, orjson 0.4. The text is
compact UTF-8, as the standard library's with ``ensure_ascii=False`` and no spaces:
PostgreSQL's jsonb reads both alike. A value orjson refuses (an integer beyond 64 bits, which
a client may send) is written by the standard library.

Not for a mutation's payload hash (``apps.sync.push``): that must stay byte for byte what
earlier releases computed, so that a replay across an upgrade is still recognised.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from typing import Any
from uuid import UUID

import orjson


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_as_orjson_writes)


def _as_orjson_writes(value: Any) -> Any:
    """Ids and times (a batch's rows hold them) as orjson writes them, for the fallback."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
