"""Quiet hours for the person, read on the local clock, across daylight-saving changes."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from apps.accounts.models import Program
from apps.followups import services
from apps.followups.models import Reminder, ReminderKind
from apps.notifications.models import Notification
from apps.notifications.services import preference_set
from tests.care.factories import pushed
from tests.conftest import CrewMember
from tests.followups.factories import referral

pytestmark = pytest.mark.django_db(transaction=True)

UTC = dt.UTC


@pytest.mark.parametrize(
    ("moment", "quiet_until"),
    [
        # Spring forward, 2026-03-08: 01:30 EST is 06:30 UTC; quiet ends at 08:00 EDT = 12:00 UTC.
        (dt.datetime(2026, 3, 8, 6, 30, tzinfo=UTC), dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        # The evening before, 22:00 EST (03:00 UTC) ends at the same 08:00 EDT.
        (dt.datetime(2026, 3, 8, 3, 0, tzinfo=UTC), dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        # Fall back, 2026-11-01: 01:30 EDT is 05:30 UTC; quiet ends at 08:00 EST = 13:00 UTC.
        (dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC), dt.datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
        # 07:30 EST on 2026-11-01 (12:30 UTC) is still quiet; 08:30 EST (13:30 UTC) is not.
        (dt.datetime(2026, 11, 1, 12, 30, tzinfo=UTC), dt.datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
        (dt.datetime(2026, 11, 1, 13, 30, tzinfo=UTC), None),
        # 20:30 EST on 2026-03-07 (01:30 UTC next day) is before quiet hours start.
        (dt.datetime(2026, 3, 8, 1, 30, tzinfo=UTC), None),
    ],
)
def test_default_quiet_hours_follow_the_programs_clock_across_dst(
    program: Program, moment: dt.datetime, quiet_until: dt.datetime | None
) -> None:
    assert program.time_zone == "America/New_York"
    assert services.person_quiet_until(program=program, phone_number="", moment=moment) == quiet_until


def test_an_appointment_reminder_in_quiet_hours_waits_for_their_end(crew_member: CrewMember) -> None:
    """The person's own quiet hours (here: all day but one minute, in their time zone) hold it back."""
    person_id = uuid.uuid4()
    pushed(
        crew_member,
        "care.person",
        {"unit_id": str(crew_member.unit.pk), "phone_number": "+12125550199"},
        record_id=person_id,
    )
    now = timezone.now().astimezone(ZoneInfo("America/Los_Angeles"))
    end = (now + dt.timedelta(hours=2)).replace(second=0, microsecond=0)
    preference_set(
        phone_number="+12125550199",
        quiet_hours=((now - dt.timedelta(hours=2)).strftime("%H:%M"), end.strftime("%H:%M")),
        time_zone="America/Los_Angeles",
    )
    referral_id = referral(
        crew_member,
        encounter_fields={"person_id": str(person_id)},
        consent_to_contact=True,
        appointment_at=(timezone.now() + dt.timedelta(hours=3)).isoformat(),
    )
    reminder = Reminder.objects.get(referral_id=referral_id, kind=ReminderKind.PERSON_APPOINTMENT)
    assert reminder.pk in services.reminders_claim_due(now=timezone.now())

    outcome = services.reminder_send(reminder_id=reminder.pk)

    reminder.refresh_from_db()
    assert outcome == "deferred"
    assert (reminder.claimed_at, reminder.sent_at) == (None, None)
    # 2 hours ahead on the Los Angeles wall clock, whatever the offset of the day.
    local_end = reminder.due_at.astimezone(ZoneInfo("America/Los_Angeles"))
    assert (local_end.hour, local_end.minute) == (end.hour, end.minute)
    assert not Notification.objects.filter(kind="followup.appointment").exists()
