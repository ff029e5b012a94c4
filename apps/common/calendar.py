"""The years a time anyone sends may name.

No record of a crisis response names a time outside them, and beyond them the date
arithmetic done on a record's times (a reminder a day before an appointment) can leave the
calendar and fail the write. The API's time field and the workspace's forms refuse the same.
"""

from __future__ import annotations

from datetime import UTC, datetime

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
OUT_OF_RANGE = "Give a time between the years 1900 and 2999."


def within(moment: datetime) -> bool:
    """Whether an aware time lies in the years a record may name."""
    return EARLIEST <= moment < LATEST
