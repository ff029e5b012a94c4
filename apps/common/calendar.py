"""The years a time anyone sends may name.

No record of a crisis response names a time outside them, and beyond them the date
arithmetic done on a record's times (a reminder a day before an appointment) can leave the
calendar and fail the write. The API's time field and the workspace's forms refuse the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
OUT_OF_RANGE = "Give a time between the years 1900 and 2999."


def within(moment: datetime) -> bool:
    """Whether an aware time lies in the years a record may name."""
    return EARLIEST <= moment < LATEST


def validate_time_zone(value: str) -> None:
    """Quiet hours are read on a person's or a program's clock by every send to the person: a
    name that is no zone would fail each of them (and the chunk of reminders sent with it), so
    it is refused where it is written."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("Not a time zone name such as America/New_York.", code="invalid") from None
