"""The follow-up schedule: which contacts a plan gets, when, and what closes them.

A program's schedule is data (``ScheduleStep`` rows, edited in the admin). A program with no
rows for a trigger uses ``DEFAULT_SCHEDULE``: first contact within 24 hours, a connection check
at 72 hours, outcome checks at 7 and 30 days.

An offset is counted as case managers plan their calls, by the program's clock: its whole days
are calendar days at the same local time of day (23 or 25 hours across a daylight-saving
change), and what is left over (hours, minutes) is elapsed time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID
from zoneinfo import ZoneInfo

from django.conf import settings

from apps.care.models import ReferralStatus
from apps.followups.models import PlanTrigger, ScheduleStep

HOUR = 60
DAY = 24 * HOUR


def due_after(anchor_at: dt.datetime, *, offset_minutes: int, time_zone: str) -> dt.datetime:
    """``offset_minutes`` after ``anchor_at``: whole days on the local clock of ``time_zone``,
    the rest elapsed.

    A local time the switch skips (02:30 on the spring-forward day) is read with the UTC offset
    before the gap, so it falls an hour later on the wall clock (03:30); a local time that
    happens twice (01:30 on the fall-back day) is the first of the two. Both as RFC 5545 (iCalendar)
    reads such times, and as ``zoneinfo`` does with ``fold=0``.
    """
    days, minutes = divmod(offset_minutes, DAY)
    due = anchor_at
    if days:
        local = anchor_at.astimezone(ZoneInfo(time_zone))
        # Arithmetic on an aware datetime keeps its wall-clock time; the UTC offset is the new day's.
        due = (local + dt.timedelta(days=days)).replace(fold=0).astimezone(dt.UTC)
    return due + dt.timedelta(minutes=minutes)


@dataclass(frozen=True)
class ScheduleEntry:
    key: str
    label: str
    offset_minutes: int
    overdue_margin_minutes: int
    # Referral outcomes that answer the step's question, so recording one completes it.
    completed_by_outcomes: tuple[str, ...]


def _default() -> list[ScheduleEntry]:
    margin = settings.FOLLOWUPS_OVERDUE_MARGIN_MINUTES
    connected = (ReferralStatus.CONNECTED.value, ReferralStatus.ATTENDED.value)
    declined = (ReferralStatus.DECLINED.value,)
    return [
        ScheduleEntry("first_contact", "First contact", 24 * HOUR, margin, connected + declined),
        ScheduleEntry("connection_check", "Connection check", 72 * HOUR, margin, connected + declined),
        ScheduleEntry("outcome_7d", "Outcome at 7 days", 7 * DAY, margin, (ReferralStatus.ATTENDED.value, *declined)),
        ScheduleEntry("outcome_30d", "Outcome at 30 days", 30 * DAY, margin, declined),
    ]


def schedule_for(*, program_id: UUID, trigger: PlanTrigger | str) -> list[ScheduleEntry]:
    rows = ScheduleStep.objects.filter(program_id=program_id, trigger=trigger).order_by("offset_minutes", "key")
    entries = [
        ScheduleEntry(
            row.key, row.label, row.offset_minutes, row.overdue_margin_minutes, tuple(row.completed_by_outcomes)
        )
        for row in rows
    ]
    return entries or _default()
