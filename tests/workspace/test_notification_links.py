"""What an email or a text to staff links to: a page of the workspace they can open after signing
in, never a path only the app understands. Each kind of link is followed as its reader would."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from apps.accounts.models import Program, User
from apps.dispatch.models import SupervisorAlert
from apps.followups import services as followups
from apps.followups.models import Reminder, ReminderKind
from apps.notifications import services as notifications
from apps.notifications.models import AttemptStatus, Channel, Notification, NotificationAttempt, NotificationRecipient
from tests.conftest import sign_in_to_admin
from tests.workspace.scenario import Workday, workday

pytestmark = pytest.mark.django_db

BASE_URL = "https://tandem.example.org"
URL = re.compile(r"https?://\S+")


@pytest.fixture
def outbox(settings: SettingsWrapper, tmp_path: Path) -> Path:
    settings.NOTIFICATIONS_OUTBOX_DIR = str(tmp_path)
    settings.NOTIFICATIONS_LINK_BASE_URL = BASE_URL
    return tmp_path


@pytest.fixture
def day(program: Program, outbox: Path) -> Workday:
    day = workday(program)
    for number, user in enumerate([day.case_manager, day.supervisor, day.dispatcher.user]):
        user.email = f"{user.username}@example.org"
        user.phone_number = f"+1212555010{number}"
        user.save(update_fields=["email", "phone_number"])
    return day


def no_device_confirmed_in_time(notification: Notification) -> None:
    NotificationRecipient.objects.filter(notification=notification).update(
        fallback_due_at=timezone.now() - dt.timedelta(seconds=1)
    )
    notifications.fallbacks_start(now=timezone.now())


def sent_bodies(notification: Notification, channel: Channel, outbox: Path) -> dict[str, str]:
    """Send the notification's queued attempts of the channel; what each address was sent."""
    attempts = NotificationAttempt.objects.filter(notification=notification, channel=channel)
    for attempt in attempts.filter(status=AttemptStatus.QUEUED):
        notifications.attempt_send(attempt_id=str(attempt.pk))
    bodies = {}
    for attempt in attempts:
        written = json.loads((outbox / channel / f"{attempt.pk}.json").read_text())
        bodies[written["to"]] = written["body"]
    assert bodies, f"no {channel} was sent"
    return bodies


def linked_path(body: str) -> str:
    [url] = URL.findall(body)
    assert url.startswith(f"{BASE_URL}/"), url
    return url.removeprefix(BASE_URL)


def assert_opens_in_the_workspace(path: str, user: User) -> None:
    # Only ids ride in the link: no query string, nothing about the person.
    assert "?" not in path and "#" not in path
    signed_out = Client().get(path)
    assert signed_out.status_code == 302, (path, signed_out.status_code)
    assert signed_out["Location"] == f"/admin/login/?next={quote(path)}"
    page = sign_in_to_admin(Client(), user).get(path)
    assert page.status_code == 200, (path, page.status_code)


def test_a_case_managers_due_reminder_email_opens_the_steps_timeline(day: Workday, outbox: Path) -> None:
    step = day.steps[0]
    reminder = Reminder.objects.get(step=step, kind=ReminderKind.OWNER_DUE)
    assert followups.reminder_send(reminder_id=reminder.pk) == "sent"
    notification = Notification.objects.get(kind="followup.due")

    body = sent_bodies(notification, Channel.EMAIL, outbox)[day.case_manager.email]

    path = linked_path(body)
    assert str(step.pk) in path
    assert_opens_in_the_workspace(path, day.case_manager)
    # The app still gets the path it opens the step with.
    assert notification.link == f"/followups/steps/{step.pk}"


def test_a_supervisors_overdue_alert_email_opens_the_steps_timeline(day: Workday, outbox: Path) -> None:
    step = day.steps[0]
    reminder = Reminder.objects.get(step=step, kind=ReminderKind.SUPERVISOR_OVERDUE)
    assert followups.reminder_send(reminder_id=reminder.pk) == "sent"
    notification = Notification.objects.get(kind="followup.overdue")
    # No device of the supervisor confirmed it in time: the email goes out.
    no_device_confirmed_in_time(notification)

    body = sent_bodies(notification, Channel.EMAIL, outbox)[day.supervisor.email]

    path = linked_path(body)
    assert str(step.pk) in path
    assert_opens_in_the_workspace(path, day.supervisor)
    assert notification.link == f"/followups/steps/{step.pk}"


def test_a_dispatch_alert_text_opens_the_incident_for_a_supervisor_and_sends_a_dispatcher_nowhere(
    day: Workday, outbox: Path
) -> None:
    # The crew on scene missed its check-in: the sweep alerted the supervisors and dispatchers.
    alert = SupervisorAlert.objects.get(assignment=day.missed_checkin)
    incident_id = day.missed_checkin.incident_id
    alerted = Notification.objects.filter(kind="dispatch.alert", dedupe_key__contains=str(alert.pk))
    for notification in alerted:
        no_device_confirmed_in_time(notification)
    texts: dict[str, str] = {}
    for notification in alerted:
        texts |= sent_bodies(notification, Channel.SMS, outbox)
        # The app opens the incident by the path it knows.
        assert notification.link == f"/dispatch/incidents/{incident_id}"

    path = linked_path(texts[day.supervisor.phone_number])
    assert str(incident_id) in path
    assert_opens_in_the_workspace(path, day.supervisor)
    # A dispatcher works in the dispatch console, not in the workspace: no page of the staff
    # site is theirs to open, so their text names none.
    assert not URL.findall(texts[day.dispatcher.user.phone_number])
