"""The device-facing endpoints: push registration, receipts, the list, the delivery summary."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from pytest_django.fixtures import Settings as SettingsWrapper
from rest_framework.test import APIClient

from apps.accounts import services as accounts_services
from apps.accounts.models import Program, Role
from apps.notifications import services
from apps.notifications.channels.twilio import request_signature
from apps.notifications.models import AttemptStatus, Notification, NotificationAttempt, PushRegistration, Urgency
from tests.conftest import CrewMember, make_crew_member
from tests.notifications import keys

REGISTER = "/api/v1/notifications/push-registrations/"


def _notify(program: Program, member: CrewMember) -> Notification:
    return services.notify(
        program=program,
        recipients=[member.user.pk],
        kind="assignment.offered",
        urgency=Urgency.URGENT,
        text="New assignment offered to your unit",
        link="/assignments/1",
    )


def test_device_registers_then_refreshes_its_fcm_token(crew_member: CrewMember) -> None:
    client = crew_member.client()

    created = client.post(REGISTER, {"provider": "fcm", "token": "fcm-token-1"}, format="json")
    refreshed = client.post(REGISTER, {"provider": "fcm", "token": "fcm-token-2"}, format="json")

    assert (created.status_code, refreshed.status_code) == (201, 200)
    assert created.json()["id"] == refreshed.json()["id"]
    assert "token" not in refreshed.json()
    registration = PushRegistration.objects.get()
    assert (registration.device_id, registration.token) == (crew_member.device.pk, "fcm-token-2")


def test_refresh_re_enables_a_registration_the_provider_had_disabled(crew_member: CrewMember) -> None:
    client = crew_member.client()
    client.post(REGISTER, {"provider": "fcm", "token": "fcm-token-1"}, format="json")
    registration = PushRegistration.objects.get()
    services.push_registration_disable(registration_id=registration.pk, token="fcm-token-1", reason="fcm 404")

    client.post(REGISTER, {"provider": "fcm", "token": "fcm-token-new"}, format="json")

    registration.refresh_from_db()
    assert (registration.disabled_at, registration.token) == (None, "fcm-token-new")


def test_a_stale_invalid_token_report_does_not_disable_the_refreshed_token(crew_member: CrewMember) -> None:
    client = crew_member.client()
    client.post(REGISTER, {"provider": "fcm", "token": "fcm-old"}, format="json")
    registration = PushRegistration.objects.get()
    client.post(REGISTER, {"provider": "fcm", "token": "fcm-new"}, format="json")

    disabled = services.push_registration_disable(registration_id=registration.pk, token="fcm-old", reason="fcm 404")

    registration.refresh_from_db()
    assert disabled is False
    assert registration.disabled_at is None


def test_same_token_registered_by_another_users_device_stops_reaching_the_first(
    crew_member: CrewMember, outsider: CrewMember
) -> None:
    crew_member.client().post(REGISTER, {"provider": "fcm", "token": "shared-phone"}, format="json")

    outsider.client().post(REGISTER, {"provider": "fcm", "token": "shared-phone"}, format="json")

    first = PushRegistration.objects.get(device=crew_member.device)
    second = PushRegistration.objects.get(device=outsider.device)
    assert first.disabled_reason == "registered again by another device"
    assert second.disabled_at is None


def test_browser_registers_a_web_push_subscription(settings: SettingsWrapper, crew_member: CrewMember) -> None:
    settings.NOTIFICATIONS_WEBPUSH_ALLOWED_HOSTS = ["updates.push.services.mozilla.com"]
    subscription = keys.browser_subscription()
    endpoint = "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABk"

    response = crew_member.client().post(
        REGISTER,
        {
            "provider": "webpush",
            "subscription": {
                "endpoint": endpoint,
                "expirationTime": None,
                "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
            },
        },
        format="json",
    )

    assert response.status_code == 201
    registration = PushRegistration.objects.get()
    assert (registration.token, registration.p256dh, registration.auth_secret) == (
        endpoint,
        subscription.p256dh,
        subscription.auth,
    )


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"provider": "sms", "token": "x"}, "provider", "invalid_choice"),
        ({"provider": "fcm"}, "token", "required"),
        ({"provider": "fcm", "token": "has space"}, "token", "invalid"),
        ({"provider": "apns", "token": "not-hex"}, "token", "invalid"),
        ({"provider": "fcm", "token": "x", "colour": "red"}, "colour", "unknown_field"),
        ({"provider": "webpush", "token": "x"}, "subscription", "required"),
        (
            {
                "provider": "webpush",
                "subscription": {"endpoint": "https://10.0.0.5/x", "keys": {"p256dh": "AA", "auth": "AA"}},
            },
            "subscription.endpoint",
            "unknown_push_service",
        ),
        (
            {
                "provider": "webpush",
                "subscription": {
                    "endpoint": "https://fcm.googleapis.com/fcm/send/x",
                    "keys": {"p256dh": "AAAA", "auth": "AA"},
                },
            },
            "subscription.keys.p256dh",
            "invalid",
        ),
    ],
)
def test_bad_registration_is_refused_naming_the_field(
    crew_member: CrewMember, body: dict[str, object], field: str, code: str
) -> None:
    response = crew_member.client().post(REGISTER, body, format="json")

    assert response.status_code == 400
    assert {"field": field, "code": code} in [
        {"field": e["field"], "code": e["code"]} for e in response.json()["errors"]
    ]
    assert not PushRegistration.objects.exists()


def test_device_removes_its_registration_on_sign_out(crew_member: CrewMember) -> None:
    client = crew_member.client()
    client.post(REGISTER, {"provider": "fcm", "token": "fcm-token-1"}, format="json")

    response = client.delete(f"{REGISTER}fcm/")

    assert response.status_code == 204
    assert PushRegistration.objects.get().disabled_reason == "removed by the device"


def test_registration_needs_a_signed_in_device(api_client: APIClient, db: None) -> None:
    response = api_client.post(REGISTER, {"provider": "fcm", "token": "x"}, format="json")

    assert response.status_code == 401
    assert not PushRegistration.objects.exists()


def test_revoked_device_cannot_register_a_token(crew_member: CrewMember) -> None:
    accounts_services.device_revoke(device=crew_member.device, revoked_by=None, reason="lost")

    response = crew_member.client().post(REGISTER, {"provider": "fcm", "token": "x"}, format="json")

    assert response.status_code == 401
    assert not PushRegistration.objects.exists()


def test_device_posts_receipts_for_its_notification(program: Program, crew_member: CrewMember) -> None:
    notification = _notify(program, crew_member)
    url = f"/api/v1/notifications/{notification.pk}/receipts/"

    delivered = crew_member.client().post(url, {"status": "delivered"}, format="json")
    acknowledged = crew_member.client().post(url, {"status": "acknowledged"}, format="json")

    assert delivered.status_code == acknowledged.status_code == 200
    assert acknowledged.json()["notification"] == str(notification.pk)
    assert acknowledged.json()["acknowledged_at"] is not None
    attempt = NotificationAttempt.objects.get(notification=notification)
    assert attempt.status == AttemptStatus.ACKNOWLEDGED


def test_receipt_for_another_users_notification_is_404_and_changes_nothing(
    program: Program, crew_member: CrewMember, outsider: CrewMember
) -> None:
    notification = _notify(program, crew_member)

    response = outsider.client().post(
        f"/api/v1/notifications/{notification.pk}/receipts/", {"status": "acknowledged"}, format="json"
    )

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert list(NotificationAttempt.objects.values_list("device_id", "status")) == [
        (crew_member.device.pk, AttemptStatus.QUEUED)
    ]
    assert notification.recipients.get().confirmed_at is None


@pytest.mark.parametrize(
    ("body", "field"), [({"status": "read"}, "status"), ({}, "status"), ({"status": "opened", "x": 1}, "x")]
)
def test_bad_receipt_is_refused_naming_the_field(
    program: Program, crew_member: CrewMember, body: dict[str, object], field: str
) -> None:
    notification = _notify(program, crew_member)

    response = crew_member.client().post(f"/api/v1/notifications/{notification.pk}/receipts/", body, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field
    assert NotificationAttempt.objects.get().status == AttemptStatus.QUEUED


def test_device_lists_only_its_users_notifications(
    program: Program, crew_member: CrewMember, outsider: CrewMember
) -> None:
    mine = _notify(program, crew_member)
    _notify(program, outsider)

    response = crew_member.client().get("/api/v1/notifications/")

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [str(mine.pk)]
    assert set(response.json()["results"][0]) == {"id", "kind", "urgency", "text", "link", "created_at"}


def test_dispatcher_sees_the_delivery_summary_and_others_get_404(
    program: Program, crew_member: CrewMember, outsider: CrewMember, foreign_dispatcher: CrewMember
) -> None:
    dispatcher = make_crew_member(program, role=Role.DISPATCHER)
    notification = _notify(program, crew_member)
    services.receipt_record(notification_id=notification.pk, device=crew_member.device, status="acknowledged")
    url = f"/api/v1/notifications/{notification.pk}/delivery/"

    seen = dispatcher.client().get(url)

    assert seen.status_code == 200
    assert seen.json()["description"] == "delivered to 1 of 1 devices, acknowledged by 1"
    assert seen.json()["acknowledged_by"] == [str(crew_member.user.pk)]
    assert outsider.client().get(url).status_code == 404
    assert foreign_dispatcher.client().get(url).status_code == 404


STATUS_URL = "https://tandem.example.org/api/v1/notifications/sms/twilio-status/"


def _sent_sms(program: Program) -> NotificationAttempt:
    notification = services.notify(
        program=program,
        contacts=[services.Contact(phone_number="+15005550006")],
        kind="followup.reminder",
        text="Your care team will call you today",
    )
    attempt = NotificationAttempt.objects.get(notification=notification)
    NotificationAttempt.objects.filter(pk=attempt.pk).update(status=AttemptStatus.SENT, provider_message_id="SM123")
    return attempt


def _report(settings: SettingsWrapper, body: dict[str, str], signature: str | None = None) -> int:
    settings.TWILIO_AUTH_TOKEN = "standin-auth-token"
    settings.TWILIO_STATUS_CALLBACK_URL = STATUS_URL
    signed = signature or request_signature(auth_token="standin-auth-token", url=STATUS_URL, params=body)
    response = APIClient().post(
        "/api/v1/notifications/sms/twilio-status/",
        urlencode(body),  # as Twilio sends it
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signed,
    )
    return response.status_code


@pytest.mark.parametrize(
    ("report", "status", "reason"),
    [
        ({"MessageStatus": "delivered"}, AttemptStatus.DELIVERED, ""),
        ({"MessageStatus": "undelivered", "ErrorCode": "30003"}, AttemptStatus.FAILED, "twilio undelivered 30003"),
    ],
)
def test_twilio_delivery_report_is_recorded_on_the_sms_attempt(
    settings: SettingsWrapper, program: Program, report: dict[str, str], status: str, reason: str
) -> None:
    attempt = _sent_sms(program)

    code = _report(settings, {"MessageSid": "SM123", "AccountSid": "AC1", **report})

    attempt.refresh_from_db()
    assert code == 204
    assert (attempt.status, attempt.error_reason) == (status, reason)


def test_twilio_report_with_a_wrong_signature_is_refused_and_changes_nothing(
    settings: SettingsWrapper, program: Program
) -> None:
    attempt = _sent_sms(program)

    code = _report(settings, {"MessageSid": "SM123", "MessageStatus": "failed"}, signature="forged=")

    attempt.refresh_from_db()
    assert code == 403
    assert attempt.status == AttemptStatus.SENT
