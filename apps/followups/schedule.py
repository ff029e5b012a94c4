"""The follow-up schedule: which contacts a plan gets, when, and what closes them.

A program's schedule is data (``ScheduleStep`` rows, edited in the admin). A program with no
rows for a trigger uses ``DEFAULT_SCHEDULE``: first contact within 24 hours, a connection check
at 72 hours, outcome checks at 7 and 30 days.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from django.conf import settings

from apps.care.models import ReferralStatus
from apps.followups.models import PlanTrigger, ScheduleStep

HOUR = 60
DAY = 24 * HOUR


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
