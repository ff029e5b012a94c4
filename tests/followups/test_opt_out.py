"""A person who replied STOP gets no appointment text, whatever format their number was recorded in."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from apps.followups import services
from apps.followups.models import Reminder, ReminderKind
from apps.notifications.models import Channel, NotificationAttempt
from apps.notifications.services import sms_inbound_record
from tests.care.factories import pushed
from tests.conftest import CrewMember
from tests.followups.factories import referral

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("recorded", ["(212) 555-0142", "212-555-0142", "+1 212 555 0142", "1 (212) 555.0142"])
def test_a_stop_from_the_number_stops_the_reminder_to_it_in_national_format(
    settings: SettingsWrapper, crew_member: CrewMember, recorded: str
) -> None:
    """Twilio posts the reply From in E.164; the crew typed the number as people write it."""
    settings.FOLLOWUPS_PERSON_QUIET_START = settings.FOLLOWUPS_PERSON_QUIET_END = "00:00"  # no quiet hours
    settings.NOTIFICATIONS_TASK_QUEUE = "notifications-test-unconsumed"
    person_id = uuid.uuid4()
    pushed(
        crew_member, "care.person", {"unit_id": str(crew_member.unit.pk), "phone_number": recorded}, record_id=person_id
    )
    assert sms_inbound_record(from_number="+12125550142", body="STOP") == "opted_out"
    referral_id = referral(
        crew_member,
        encounter_fields={"person_id": str(person_id)},
        consent_to_contact=True,
        appointment_at=(timezone.now() + dt.timedelta(hours=3)).isoformat(),
    )
    reminder = Reminder.objects.get(referral_id=referral_id, kind=ReminderKind.PERSON_APPOINTMENT)
    assert reminder.pk in services.reminders_claim_due(now=timezone.now())

    outcome = services.reminder_send(reminder_id=reminder.pk)

    assert outcome == "opted out"
    assert not NotificationAttempt.objects.filter(channel=Channel.SMS).exists()


def test_no_appointment_text_to_a_person_record_deleted_as_made_in_error(
    settings: SettingsWrapper, crew_member: CrewMember
) -> None:
    """The crew deleted the person (the wrong person, a mistyped number): nobody is to be texted."""
    settings.FOLLOWUPS_PERSON_QUIET_START = settings.FOLLOWUPS_PERSON_QUIET_END = "00:00"  # no quiet hours
    settings.NOTIFICATIONS_TASK_QUEUE = "notifications-test-unconsumed"
    person_id = uuid.uuid4()
    fields = {"unit_id": str(crew_member.unit.pk), "phone_number": "+12125550143"}
    pushed(crew_member, "care.person", fields, record_id=person_id)
    referral_id = referral(
        crew_member,
        encounter_fields={"person_id": str(person_id)},
        consent_to_contact=True,
        appointment_at=(timezone.now() + dt.timedelta(hours=3)).isoformat(),
    )
    deleted = pushed(crew_member, "care.person", {}, op="delete", record_id=person_id, base_version=1)
    assert deleted["status"] == "applied", deleted
    reminder = Reminder.objects.get(referral_id=referral_id, kind=ReminderKind.PERSON_APPOINTMENT)
    assert reminder.pk in services.reminders_claim_due(now=timezone.now())

    outcome = services.reminder_send(reminder_id=reminder.pk)

    assert outcome == "person deleted"
    assert not NotificationAttempt.objects.filter(channel=Channel.SMS).exists()


def test_no_appointment_text_once_the_appointment_has_passed(
    settings: SettingsWrapper, crew_member: CrewMember
) -> None:
    """A referral synced after its appointment (a tablet offline for days): "you have an
    appointment soon" would be wrong and is a text the person need not get."""
    settings.FOLLOWUPS_PERSON_QUIET_START = settings.FOLLOWUPS_PERSON_QUIET_END = "00:00"  # no quiet hours
    settings.NOTIFICATIONS_TASK_QUEUE = "notifications-test-unconsumed"
    person_id = uuid.uuid4()
    fields = {"unit_id": str(crew_member.unit.pk), "phone_number": "+12125550144"}
    pushed(crew_member, "care.person", fields, record_id=person_id)
    referral_id = referral(
        crew_member,
        encounter_fields={"person_id": str(person_id)},
        consent_to_contact=True,
        appointment_at=(timezone.now() - dt.timedelta(hours=2)).isoformat(),
    )
    reminder = Reminder.objects.get(referral_id=referral_id, kind=ReminderKind.PERSON_APPOINTMENT)
    assert reminder.pk in services.reminders_claim_due(now=timezone.now())

    outcome = services.reminder_send(reminder_id=reminder.pk)

    assert outcome == "appointment passed"
    assert not NotificationAttempt.objects.filter(channel=Channel.SMS).exists()
