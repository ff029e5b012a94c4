"""The years a time anyone sends may name.

No record of a crisis response names a time outside them, and beyond them the date
arithmetic done on a record's times (a reminder a day before an appointment) can leave the
calendar and fail the write. The API's time field and the workspace's forms refuse the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
OUT_OF_RANGE = "Give a time between the years 1900 and 2999."


def within(moment: datetime) -> bool:
    """Whether an aware time lies in the years a record may name."""
    return EARLIEST <= moment < LATEST


def offset_moment(value: Any) -> datetime | None:
    """A device's time as sent outside a serializer (a push's or a websocket message's
    ``observed_at``): an ISO 8601 string with its UTC offset that names a real date and time
    and stays within years 1 to 9999 in UTC (stored in UTC, a time beyond could be stored but
    never read back). None for anything else, among it another script's digits (Django's
    parser reads ٢٠٢٦ as 2026) and a NUL (Python's parser stops at one, dropping what follows
    unread)."""
    if not isinstance(value, str) or not value.isascii() or "\x00" in value:
        return None
    try:
        parsed = parse_datetime(value)
        if parsed is None or parsed.tzinfo is None:
            return None
        parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # 30 February, hour 25, offset +25:00; year 10000 in UTC
        return None
    return parsed


def validate_time_zone(value: str) -> None:
    """Quiet hours are read on a person's or a program's clock by every send to the person: a
    name that is no zone would fail each of them (and the chunk of reminders sent with it), so
    it is refused where it is written."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("Not a time zone name such as America/New_York.", code="invalid") from None
