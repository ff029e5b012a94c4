"""No push, SMS, email or socket payload carries health information or names.

This test sends one notification through every channel with health information planted in
everything the mechanism can reach (the recipient's names, their device's name, the unit, the
program, a contact's preference), then scans every payload produced during the whole test
session — its own and those of the other notification tests (it runs last) — for that
information and for any field beyond ids, a kind, the short text and a link.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

import pytest
from django.conf import settings
from django.core import mail
from pytest_django.fixtures import Settings as SettingsWrapper

from apps.accounts.models import Program
from apps.notifications import services
from apps.notifications.models import NotificationAttempt, PushProvider, Urgency
from config.celery import app
from tests.accounts.factories import MembershipFactory, UserFactory, device_with_token
from tests.live import AsgiServer
from tests.notifications import payloads
from tests.notifications.factories import PushRegistrationFactory
from tests.notifications.standins import ApnsStandIn, StandIn
from tests.realtime.client import authenticated_socket, receive
from tests.teams.factories import UnitFactory, UnitMemberFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

# What a careless mechanism could pick up and pass on: a person's name, a birth date, note text.
HEALTH_INFORMATION = [
    "Marisol",
    "Quintanilla",
    "1984-03-17",
    "hears voices",
    "schizoaffective",
    "overdose",
    "lithium",
    "suicid",
]
ALLOWED_KEYS = {
    "fcm": {"notification", "data", "android"},
    "apns": {"aps", "notification_id", "kind", "link"},
    "webpush": {"title", "body", "notification_id", "kind", "link"},
    "in_app": {"type", "id", "kind", "urgency", "text", "link"},
    "email": {"subject", "body"},
}
LINK = re.compile(r"^(/[A-Za-z0-9/_.:-]*)?$")


def _check_shape(channel: str, content: Any) -> list[str]:
    problems: list[str] = []
    if channel == "sms":
        if not (isinstance(content, str) and content.startswith("Tandem: ") and "\n" not in content):
            problems.append(f"sms body not 'Tandem: <text> <link>': {content!r}")
        return problems
    if channel == "outbox":
        return _check_shape("sms" if "to" in content and "subject" not in content else "outbox-record", content)
    if channel == "outbox-record":
        return []
    extra = set(content) - ALLOWED_KEYS[channel]
    if extra:
        problems.append(f"{channel} payload has fields beyond ids, kind, text and link: {sorted(extra)}")
    data = content.get("data", content)
    if channel in {"fcm", "apns", "webpush"} and set(data) & {"notification_id", "kind", "link"} != {
        "notification_id",
        "kind",
        "link",
    }:
        problems.append(f"{channel} data is not exactly notification_id, kind, link: {data}")
    link = data.get("link", "")
    if channel != "email" and not LINK.match(str(link)):
        problems.append(f"{channel} link is not a bare in-app path: {link!r}")
    return problems


def _outbox_payloads() -> list[payloads.Payload]:
    folder = Path(settings.NOTIFICATIONS_OUTBOX_DIR)
    found = []
    for path in folder.glob("*/*.json") if folder.exists() else []:
        record = json.loads(path.read_text())
        content = record.get("body") if record["channel"] == "sms" else record
        found.append(payloads.Payload("sms" if record["channel"] == "sms" else "outbox", content))
    return found


def test_no_payload_produced_by_the_suite_carries_health_information(
    asgi: AsgiServer,
    providers: tuple[StandIn, ApnsStandIn],
    settings: SettingsWrapper,
    program: Program,
) -> None:
    stand_in, apns = providers
    # Every send runs here, against the stand-ins; the queued tasks go where no worker reads.
    settings.NOTIFICATIONS_TASK_QUEUE = "notifications-scan-unconsumed"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    program.name = "Program of Marisol Quintanilla"
    program.save()
    user = UserFactory.create(
        first_name="Marisol",
        last_name="Quintanilla",
        email="marisol.quintanilla@example.org",
        phone_number="+15005550006",
    )
    MembershipFactory.create(user=user, program=program)
    unit = UnitFactory.create(program=program, call_sign="Quintanilla-1")
    UnitMemberFactory.create(unit=unit, user=user)
    _device, token = device_with_token(user, name="Marisol's phone, hears voices")
    endpoint, subscription = stand_in.web_push_endpoint("scan-1")
    for provider, push_token in [(PushProvider.FCM, "fcm-scan-1"), (PushProvider.APNS, "ab" * 32)]:
        other, _ = device_with_token(user, name="Marisol Quintanilla 1984-03-17")
        PushRegistrationFactory.create(device=other, provider=provider, token=push_token)
    browser, _ = device_with_token(user, name="schizoaffective, lithium")
    PushRegistrationFactory.create(
        device=browser, provider="webpush", token=endpoint, p256dh=subscription.p256dh, auth_secret=subscription.auth
    )
    services.preference_set(phone_number="+15005550100", time_zone="UTC")

    with authenticated_socket(asgi.ws_url, token) as socket:
        notification = services.notify(
            program=program,
            unit=unit.pk,
            contacts=[services.Contact(phone_number="+15005550100", email="marisol.quintanilla@example.org")],
            kind="assignment.offered",
            urgency=Urgency.URGENT,
            text="New assignment offered to your unit",
            link=f"/assignments/{unit.pk}",
        )
        for attempt in NotificationAttempt.objects.filter(notification=notification):
            services.attempt_send(attempt_id=str(attempt.pk))
        payloads.record("in_app", receive(socket, timeout=5))
    low = services.notify(
        program=program,
        contacts=[services.Contact(email="marisol.quintanilla@example.org")],
        kind="followup.reminder",
        urgency=Urgency.LOW,
        text="A follow-up reminder is waiting",
    )
    settings.NOTIFICATIONS_EMAIL_BACKEND = "django"
    services.attempt_send(attempt_id=str(NotificationAttempt.objects.get(notification=low).pk))
    for email in mail.outbox:
        payloads.record("email", {"subject": email.subject, "body": email.body})

    produced = [*payloads.PRODUCED, *_outbox_payloads()]

    channels = {payload.channel for payload in produced}
    assert {"fcm", "apns", "webpush", "sms", "email", "in_app"} <= channels
    leaks = [
        f"{payload.channel}: {marker!r} in {payloads.text_of(payload.content)[:200]}"
        for payload in produced
        for marker in HEALTH_INFORMATION
        if marker.lower() in payloads.text_of(payload.content).lower()
    ]
    assert leaks == []
    shape_problems = [problem for payload in produced for problem in _check_shape(payload.channel, payload.content)]
    assert shape_problems == []
    assert len(stand_in.of("twilio")) == 1 and len(apns.received) == 1
    with app.connection_for_write() as connection:
        cast(Any, connection.default_channel).queue_purge("notifications-scan-unconsumed")
