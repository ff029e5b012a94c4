"""Each provider adapter against its local stand-in, through the real send path (attempt_send)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import mail
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from apps.accounts.models import Program
from apps.notifications import services
from apps.notifications.channels.twilio import request_signature
from apps.notifications.models import (
    AttemptStatus,
    Channel,
    Notification,
    NotificationAttempt,
    PushProvider,
    PushRegistration,
    Urgency,
)
from tests.conftest import CrewMember
from tests.notifications import payloads
from tests.notifications.factories import PushRegistrationFactory
from tests.notifications.standins import ApnsStandIn, StandIn

TEXT = "New assignment offered to your unit"


def _urgent(program: Program, member: CrewMember) -> Notification:
    return services.notify(
        program=program,
        recipients=[member.user.pk],
        kind="assignment.offered",
        urgency=Urgency.URGENT,
        text=TEXT,
        link="/assignments/5b0c6f7e-1f7a-4c53-9d1e-0d2b8b7d4a11",
    )


def _push_attempt(notification: Notification, registration: PushRegistration) -> NotificationAttempt:
    return NotificationAttempt.objects.get(notification=notification, push_registration=registration)


def _send(attempt: NotificationAttempt) -> NotificationAttempt:
    services.attempt_send(attempt_id=str(attempt.pk))
    attempt.refresh_from_db()
    return attempt


def test_fcm_send_follows_the_http_v1_contract(
    providers: tuple[StandIn, ApnsStandIn], program: Program, crew_member: CrewMember
) -> None:
    stand_in, _ = providers
    registration = PushRegistrationFactory.create(device=crew_member.device, token="fcm-ok-1")
    notification = _urgent(program, crew_member)

    attempt = _send(_push_attempt(notification, registration))

    assert attempt.status == AttemptStatus.SENT
    assert attempt.provider_message_id.startswith("projects/tandem-standin/messages/0:")
    [request] = stand_in.of("fcm")
    assert request.content["notification"] == {"title": "Tandem", "body": TEXT}
    assert request.content["data"] == {
        "notification_id": str(notification.pk),
        "kind": "assignment.offered",
        "link": notification.link,
    }
    assert request.content["android"]["priority"] == "high"
    assert request.content["android"]["collapse_key"] == str(notification.pk)


@pytest.mark.parametrize("token", ["fcm-unregistered-1", "fcm-invalid-1"])
def test_fcm_token_the_provider_calls_invalid_is_disabled(
    providers: tuple[StandIn, ApnsStandIn], program: Program, crew_member: CrewMember, token: str
) -> None:
    registration = PushRegistrationFactory.create(device=crew_member.device, token=token)
    notification = _urgent(program, crew_member)

    attempt = _send(_push_attempt(notification, registration))

    registration.refresh_from_db()
    assert attempt.status == AttemptStatus.FAILED
    assert registration.disabled_at is not None
    assert registration.disabled_reason == attempt.error_reason
    assert attempt.error_reason in {"fcm 404 UNREGISTERED", "fcm 400 INVALID_ARGUMENT"}
    # The next notification does not even try the disabled registration.
    later = _urgent(program, crew_member)
    assert not NotificationAttempt.objects.filter(notification=later, channel=Channel.PUSH).exists()


def test_an_fcm_project_not_found_fails_the_send_but_keeps_the_token(
    providers: tuple[StandIn, ApnsStandIn],
    settings: SettingsWrapper,
    program: Program,
    crew_member: CrewMember,
) -> None:
    """A 404 about the project (a mistyped FCM_PROJECT_ID) says nothing of the device's token:
    disabling it would cut every Android device off until it registers again."""
    settings.FCM_PROJECT_ID = "tandem-standin-typo"
    registration = PushRegistrationFactory.create(device=crew_member.device, token="fcm-ok-404")
    notification = _urgent(program, crew_member)

    attempt = _send(_push_attempt(notification, registration))

    registration.refresh_from_db()
    assert (attempt.status, attempt.error_reason) == (AttemptStatus.FAILED, "fcm 404 NOT_FOUND")
    assert registration.disabled_at is None


def test_a_404_that_is_not_fcms_fails_the_send_but_keeps_the_token(
    providers: tuple[StandIn, ApnsStandIn],
    settings: SettingsWrapper,
    program: Program,
    crew_member: CrewMember,
) -> None:
    """FCM_ENDPOINT pointing at the wrong place answers a 404 of its own, not about the token."""
    stand_in, _ = providers
    settings.FCM_ENDPOINT = f"{stand_in.url}/not-fcm"
    registration = PushRegistrationFactory.create(device=crew_member.device, token="fcm-ok-proxy")
    notification = _urgent(program, crew_member)

    attempt = _send(_push_attempt(notification, registration))

    registration.refresh_from_db()
    assert (attempt.status, attempt.error_reason) == (AttemptStatus.FAILED, "fcm 404")
    assert registration.disabled_at is None
    stand_in.violations.clear()  # the wrong path was the point


def test_fcm_quota_exceeded_is_retried_after_a_backoff(
    providers: tuple[StandIn, ApnsStandIn], program: Program, crew_member: CrewMember
) -> None:
    stand_in, _ = providers
    registration = PushRegistrationFactory.create(device=crew_member.device, token="fcm-throttled-1")
    notification = _urgent(program, crew_member)
    before = timezone.now()

    attempt = _send(_push_attempt(notification, registration))

    assert (attempt.status, attempt.tries, attempt.error_reason) == (AttemptStatus.QUEUED, 1, "fcm 429 QUOTA_EXCEEDED")
    assert attempt.due_at >= before + timedelta(seconds=1)
    assert services.attempt_send(attempt_id=str(attempt.pk)) == "not_claimed"  # not due yet
    time.sleep(max(0.0, (attempt.due_at - timezone.now()).total_seconds()) + 0.05)
    assert services.attempts_dispatch_due(now=timezone.now()) == 1
    attempt = _send(attempt)
    assert (attempt.status, attempt.tries) == (AttemptStatus.SENT, 2)
    assert len(stand_in.of("fcm")) == 2


def test_apns_send_uses_http2_and_a_provider_token(
    providers: tuple[StandIn, ApnsStandIn], program: Program, crew_member: CrewMember
) -> None:
    _, apns = providers
    registration = PushRegistrationFactory.create(
        device=crew_member.device, provider=PushProvider.APNS, token="ab" * 32
    )
    notification = _urgent(program, crew_member)

    attempt = _send(_push_attempt(notification, registration))

    assert attempt.status == AttemptStatus.SENT
    [request] = apns.received
    assert request.path == "/3/device/" + "ab" * 32
    assert request.headers["apns-topic"] == "org.example.tandem"
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "10"
    assert request.headers["apns-collapse-id"] == str(notification.pk)
    assert attempt.provider_message_id == request.headers["apns-id"] == str(attempt.pk)
    assert request.content["aps"]["alert"] == {"title": "Tandem", "body": TEXT}
    assert request.content["notification_id"] == str(notification.pk)


@pytest.mark.parametrize(
    ("token", "reason"), [("dead" * 16, "apns 410 Unregistered"), ("bad0" * 16, "apns 400 BadDeviceToken")]
)
def test_apns_unregistered_or_bad_token_is_disabled(
    providers: tuple[StandIn, ApnsStandIn], program: Program, crew_member: CrewMember, token: str, reason: str
) -> None:
    registration = PushRegistrationFactory.create(device=crew_member.device, provider=PushProvider.APNS, token=token)
    notification = _urgent(program, crew_member)

    attempt = _send(_push_attempt(notification, registration))

    registration.refresh_from_db()
    assert (attempt.status, attempt.error_reason) == (AttemptStatus.FAILED, reason)
    assert registration.disabled_reason == reason


def test_apns_token_not_for_the_topic_fails_the_send_but_keeps_the_registration(
    providers: tuple[StandIn, ApnsStandIn], program: Program, crew_member: CrewMember
) -> None:
    """APNs answers DeviceTokenNotForTopic to every token when APNS_TOPIC names the wrong
    app: disabling on it would switch off every iOS device until each registers again."""
    registration = PushRegistrationFactory.create(
        device=crew_member.device, provider=PushProvider.APNS, token="0ther" + "ab" * 30
    )
    notification = _urgent(program, crew_member)

    attempt = _send(_push_attempt(notification, registration))

    registration.refresh_from_db()
    assert (attempt.status, attempt.error_reason) == (AttemptStatus.FAILED, "apns 400 DeviceTokenNotForTopic")
    assert registration.disabled_at is None
    assert registration.disabled_reason == ""


def test_web_push_is_vapid_signed_and_encrypted(
    providers: tuple[StandIn, ApnsStandIn], program: Program, crew_member: CrewMember
) -> None:
    stand_in, _ = providers
    endpoint, subscription = stand_in.web_push_endpoint("ok-1")
    registration = PushRegistrationFactory.create(
        device=crew_member.device,
        provider=PushProvider.WEBPUSH,
        token=endpoint,
        p256dh=subscription.p256dh,
        auth_secret=subscription.auth,
    )
    notification = _urgent(program, crew_member)

    attempt = _send(_push_attempt(notification, registration))

    assert attempt.status == AttemptStatus.SENT
    [request] = stand_in.of("webpush")
    assert TEXT.encode() not in request.body  # encrypted on the wire
    assert request.content == {
        "title": "Tandem",
        "body": TEXT,
        "notification_id": str(notification.pk),
        "kind": "assignment.offered",
        "link": notification.link,
    }
    assert request.headers["urgency"] == "high"
    assert attempt.provider_message_id.startswith(f"{stand_in.url}/messages/")


@pytest.mark.parametrize(("name", "reason"), [("gone-1", "webpush 410"), ("missing-1", "webpush 404")])
def test_web_push_subscription_gone_is_disabled(
    providers: tuple[StandIn, ApnsStandIn], program: Program, crew_member: CrewMember, name: str, reason: str
) -> None:
    stand_in, _ = providers
    endpoint, subscription = stand_in.web_push_endpoint(name)
    registration = PushRegistrationFactory.create(
        device=crew_member.device,
        provider=PushProvider.WEBPUSH,
        token=endpoint,
        p256dh=subscription.p256dh,
        auth_secret=subscription.auth,
    )
    notification = _urgent(program, crew_member)

    attempt = _send(_push_attempt(notification, registration))

    registration.refresh_from_db()
    assert (attempt.status, attempt.error_reason) == (AttemptStatus.FAILED, reason)
    assert registration.disabled_at is not None


def _sms_to(program: Program, number: str) -> NotificationAttempt:
    notification = services.notify(
        program=program,
        contacts=[services.Contact(phone_number=number)],
        kind="followup.reminder",
        text="Your care team will call you today",
        link="/followups/4c1e3c84-1a57-4f0e-9c57-0b8e5a1b0b9e",
        web_link="/admin/followups/followupstep/4c1e3c84-1a57-4f0e-9c57-0b8e5a1b0b9e/timeline/",
    )
    return NotificationAttempt.objects.get(notification=notification, channel=Channel.SMS)


def test_twilio_sms_follows_the_messages_api_contract(
    providers: tuple[StandIn, ApnsStandIn], settings: SettingsWrapper, program: Program
) -> None:
    stand_in, _ = providers
    settings.NOTIFICATIONS_LINK_BASE_URL = "https://tandem.example.org"
    settings.TWILIO_STATUS_CALLBACK_URL = "https://tandem.example.org/api/v1/notifications/sms/twilio-status/"

    attempt = _send(_sms_to(program, "+15005550006"))

    assert attempt.status == AttemptStatus.SENT
    assert attempt.provider_message_id.startswith("SM")
    [request] = stand_in.of("twilio")
    assert request.content == {
        "To": "+15005550006",
        "From": "+15005550006",
        # The staff site's page, not the app's path.
        "Body": "Tandem: Your care team will call you today "
        "https://tandem.example.org/admin/followups/followupstep/4c1e3c84-1a57-4f0e-9c57-0b8e5a1b0b9e/timeline/",
        "StatusCallback": "https://tandem.example.org/api/v1/notifications/sms/twilio-status/",
    }


def test_an_sms_without_a_link_ends_with_its_text(
    providers: tuple[StandIn, ApnsStandIn], settings: SettingsWrapper, program: Program
) -> None:
    """A text to a person (an appointment reminder) has no link: the staff site's address
    is nothing they can open, and tells whoever reads their phone where the text came from."""
    stand_in, _ = providers
    settings.NOTIFICATIONS_LINK_BASE_URL = "https://tandem.example.org"
    notification = services.notify(
        program=program,
        contacts=[services.Contact(phone_number="+15005550006")],
        kind="followup.appointment",
        text="Reminder from your care team: you have an appointment soon.",
    )

    attempt = _send(NotificationAttempt.objects.get(notification=notification, channel=Channel.SMS))

    assert attempt.status == AttemptStatus.SENT
    [request] = stand_in.of("twilio")
    assert request.content["Body"] == "Tandem: Reminder from your care team: you have an appointment soon."


def test_twilio_invalid_number_fails_with_the_providers_code(
    providers: tuple[StandIn, ApnsStandIn], program: Program
) -> None:
    attempt = _send(_sms_to(program, "+15005550001"))

    assert (attempt.status, attempt.error_reason) == (AttemptStatus.FAILED, "twilio 400 21211")
    assert attempt.failed_at is not None


def test_twilio_too_many_requests_is_retried(providers: tuple[StandIn, ApnsStandIn], program: Program) -> None:
    attempt = _send(_sms_to(program, "+15005550429"))

    assert (attempt.status, attempt.error_reason) == (AttemptStatus.QUEUED, "twilio 429 20429")
    NotificationAttempt.objects.filter(pk=attempt.pk).update(due_at=timezone.now())
    assert _send(attempt).status == AttemptStatus.SENT


def test_email_goes_through_djangos_email_backend(settings: SettingsWrapper, program: Program) -> None:
    settings.NOTIFICATIONS_EMAIL_BACKEND = "django"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    notification = services.notify(
        program=program,
        contacts=[services.Contact(email="someone@example.org")],
        kind="followup.reminder",
        urgency=Urgency.LOW,
        text="A follow-up reminder is waiting",
        link="/followups/1",
        web_link="/admin/followups/followupstep/1/timeline/",
    )
    attempt = NotificationAttempt.objects.get(notification=notification)

    attempt = _send(attempt)

    [email] = mail.outbox
    payloads.record("email", {"subject": email.subject, "body": email.body})
    assert (attempt.channel, attempt.status) == (Channel.EMAIL, AttemptStatus.SENT)
    assert email.to == ["someone@example.org"]
    assert email.subject == "Tandem: A follow-up reminder is waiting"
    assert "Open it in Tandem: http://localhost:8000/admin/followups/followupstep/1/timeline/" in email.body
    assert "/followups/1" not in email.body.replace("/admin/followups/followupstep/1/", "")
    assert attempt.provider_message_id == email.extra_headers["Message-ID"]


def test_default_backend_writes_to_the_outbox_folder(
    settings: SettingsWrapper, tmp_path: Path, program: Program, crew_member: CrewMember
) -> None:
    settings.NOTIFICATIONS_OUTBOX_DIR = str(tmp_path)
    registration = PushRegistrationFactory.create(device=crew_member.device, token="fcm-ok-2")
    notification = _urgent(program, crew_member)

    attempt = _send(_push_attempt(notification, registration))

    written = json.loads((tmp_path / "push-fcm" / f"{attempt.pk}.json").read_text())
    payloads.record("outbox", written)
    assert attempt.status == AttemptStatus.SENT
    assert written["body"] == TEXT
    assert written["data"]["notification_id"] == str(notification.pk)


def test_the_request_signature_matches_twilios_published_example() -> None:
    signature = request_signature(
        auth_token="12345",
        url="https://mycompany.com/myapp.php?foo=1&bar=2",
        params={
            "CallSid": "CA1234567890ABCDE",
            "Caller": "+14158675310",
            "Digits": "1234",
            "From": "+14158675310",
            "To": "+18005551212",
        },
    )

    assert signature == "GvWf1cFY/Q7PnoempGyD5oXAezc="


def test_a_provider_switched_on_without_credentials_fails_the_attempt_with_a_reason(
    settings: SettingsWrapper, program: Program, crew_member: CrewMember
) -> None:
    settings.NOTIFICATIONS_FCM_BACKEND = "fcm"
    settings.FCM_SERVICE_ACCOUNT = ""
    registration = PushRegistrationFactory.create(device=crew_member.device, token="fcm-ok-3")
    notification = _urgent(program, crew_member)

    attempt = _send(_push_attempt(notification, registration))

    assert (attempt.status, attempt.error_reason) == (AttemptStatus.FAILED, "push not configured")
