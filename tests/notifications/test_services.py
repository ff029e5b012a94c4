"""notify's channel plan, receipts, the fallback sweep, rate limits and preferences."""

from __future__ import annotations

import datetime as dt
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from apps.accounts import services as accounts_services
from apps.accounts.models import Program
from apps.common.api.errors import DomainError
from apps.notifications import ratelimit, selectors, services
from apps.notifications.models import (
    AttemptStatus,
    Channel,
    Notification,
    NotificationAttempt,
    NotificationRecipient,
    Urgency,
)
from tests.accounts.factories import device_with_token
from tests.conftest import CrewMember, make_crew_member
from tests.notifications.factories import PushRegistrationFactory
from tests.teams.factories import UnitMemberFactory


@pytest.fixture(autouse=True)
def _outbox(settings: SettingsWrapper, tmp_path: Path) -> None:
    settings.NOTIFICATIONS_OUTBOX_DIR = str(tmp_path)


def _notify(program: Program, member: CrewMember, urgency: str = Urgency.URGENT, **kwargs: object) -> Notification:
    return services.notify(
        program=program,
        recipients=[member.user.pk],
        kind="assignment.offered",
        urgency=urgency,
        text="New assignment offered to your unit",
        link="/assignments/1",
        **kwargs,  # type: ignore[arg-type]
    )


def _channels(notification: Notification) -> list[tuple[str, object]]:
    return sorted(
        (attempt.channel, attempt.device_id)
        for attempt in NotificationAttempt.objects.filter(notification=notification)
    )


def test_urgent_goes_in_app_and_push_to_every_device_with_an_sms_deadline(
    settings: SettingsWrapper, program: Program, crew_member: CrewMember
) -> None:
    settings.NOTIFICATIONS_URGENT_FALLBACK_SECONDS = 45
    phone, _ = device_with_token(crew_member.user, name="Phone")
    PushRegistrationFactory.create(device=phone)
    before = timezone.now()

    notification = _notify(program, crew_member)

    assert _channels(notification) == sorted(
        [(Channel.IN_APP, crew_member.device.pk), (Channel.IN_APP, phone.pk), (Channel.PUSH, phone.pk)]
    )
    recipient = NotificationRecipient.objects.get(notification=notification)
    assert recipient.fallback_due_at is not None
    assert before + timedelta(seconds=45) <= recipient.fallback_due_at <= timezone.now() + timedelta(seconds=45)


def test_low_urgency_stays_in_the_app(program: Program, crew_member: CrewMember) -> None:
    PushRegistrationFactory.create(device=crew_member.device)

    notification = _notify(program, crew_member, urgency=Urgency.LOW)

    assert _channels(notification) == [(Channel.IN_APP, crew_member.device.pk)]
    assert NotificationRecipient.objects.get(notification=notification).fallback_due_at is None


def test_revoked_device_and_disabled_registration_get_nothing(program: Program, crew_member: CrewMember) -> None:
    lost, _ = device_with_token(crew_member.user, name="Lost tablet")
    PushRegistrationFactory.create(device=lost)
    PushRegistrationFactory.create(device=crew_member.device, disabled_at=timezone.now())
    accounts_services.device_revoke(device=lost, revoked_by=None, reason="lost")

    notification = _notify(program, crew_member)

    assert _channels(notification) == [(Channel.IN_APP, crew_member.device.pk)]


def test_device_revoked_after_planning_is_not_sent_to(program: Program, crew_member: CrewMember) -> None:
    notification = _notify(program, crew_member)
    accounts_services.device_revoke(device=crew_member.device, revoked_by=None, reason="lost")
    attempt = NotificationAttempt.objects.get(notification=notification)

    services.attempt_send(attempt_id=str(attempt.pk))

    attempt.refresh_from_db()
    assert (attempt.status, attempt.error_reason, attempt.sent_at) == (AttemptStatus.FAILED, "device revoked", None)


def test_a_user_deactivated_after_planning_is_not_sent_to(program: Program, crew_member: CrewMember) -> None:
    """Deactivated, a user's tablets are locked out; the notification's text must not reach
    them by push either (nor their phone by SMS)."""
    PushRegistrationFactory.create(device=crew_member.device)
    notification = _notify(program, crew_member)
    crew_member.user.is_active = False
    crew_member.user.save(update_fields=["is_active"])
    push = NotificationAttempt.objects.get(notification=notification, channel=Channel.PUSH)

    services.attempt_send(attempt_id=str(push.pk))

    push.refresh_from_db()
    assert (push.status, push.error_reason, push.sent_at) == (AttemptStatus.FAILED, "user deactivated", None)


def test_user_without_devices_gets_the_sms_at_once(program: Program, crew_member: CrewMember) -> None:
    crew_member.user.phone_number = "+15005550006"
    crew_member.user.save()
    accounts_services.device_revoke(device=crew_member.device, revoked_by=None, reason="lost")

    notification = _notify(program, crew_member)

    [attempt] = NotificationAttempt.objects.filter(notification=notification)
    assert (attempt.channel, attempt.address, attempt.status) == (Channel.SMS, "+15005550006", AttemptStatus.QUEUED)


def test_unit_notification_reaches_the_members_on_shift(program: Program, crew_member: CrewMember) -> None:
    partner = make_crew_member(program, unit=crew_member.unit)
    off_shift = make_crew_member(program, unit=crew_member.unit)
    off_shift.user.unit_memberships.update(is_on_shift=False)

    notification = services.notify(
        program=program, unit=crew_member.unit.pk, kind="assignment.offered", text="New assignment", link="/a/1"
    )

    assert set(notification.recipients.values_list("user_id", flat=True)) == {crew_member.user.pk, partner.user.pk}
    assert notification.unit_id == crew_member.unit.pk


def test_same_dedupe_key_returns_the_first_notification_and_sends_nothing_more(
    program: Program, crew_member: CrewMember
) -> None:
    first = _notify(program, crew_member, dedupe_key="assignment:1:offer")

    again = _notify(program, crew_member, dedupe_key="assignment:1:offer")

    assert again.pk == first.pk
    assert Notification.objects.count() == 1
    assert NotificationAttempt.objects.count() == 1


def test_recipient_of_another_program_is_refused_and_nothing_is_created(
    program: Program, crew_member: CrewMember, foreign_dispatcher: CrewMember
) -> None:
    with pytest.raises(DomainError) as refused:
        services.notify(
            program=program,
            recipients=[crew_member.user.pk, foreign_dispatcher.user.pk],
            kind="assignment.offered",
            text="New assignment",
        )

    assert refused.value.field == "recipients"
    assert Notification.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "arguments"),
    [
        ("text", {"text": "Jordan, 34, reports hearing voices. " * 5}),
        ("text", {"text": "New assignment\nNotes: recent overdose"}),
        ("text", {"text": "   "}),
        ("link", {"link": "/assignments/1?person=Jordan+Smith"}),
        ("link", {"link": "https://elsewhere.example/x"}),
        ("kind", {"kind": "Assignment Offered!"}),
        ("urgency", {"urgency": "panic"}),
    ],
)
def test_long_multiline_or_odd_input_is_refused_naming_the_field(
    program: Program, crew_member: CrewMember, field: str, arguments: dict[str, str]
) -> None:
    call = {"kind": "assignment.offered", "text": "New assignment", "link": "/assignments/1", **arguments}

    with pytest.raises(DomainError) as refused:
        services.notify(program=program, recipients=[crew_member.user.pk], **call)  # type: ignore[arg-type]

    assert refused.value.field == field
    assert refused.value.status_code == 400
    assert Notification.objects.count() == 0


def test_receipts_move_the_devices_attempts_forward_and_confirm_the_recipient(
    program: Program, crew_member: CrewMember
) -> None:
    PushRegistrationFactory.create(device=crew_member.device)
    notification = _notify(program, crew_member)
    in_app = NotificationAttempt.objects.get(notification=notification, channel=Channel.IN_APP)
    services.attempt_send(attempt_id=str(in_app.pk))

    services.receipt_record(notification_id=notification.pk, device=crew_member.device, status="delivered")
    services.receipt_record(notification_id=notification.pk, device=crew_member.device, status="acknowledged")
    recipient = services.receipt_record(notification_id=notification.pk, device=crew_member.device, status="delivered")

    in_app.refresh_from_db()
    push = NotificationAttempt.objects.get(notification=notification, channel=Channel.PUSH)
    assert in_app.status == AttemptStatus.ACKNOWLEDGED  # a late "delivered" does not step back
    assert None not in (in_app.sent_at, in_app.delivered_at, in_app.opened_at, in_app.acknowledged_at)
    # The queued push is not needed any more: the device already has it.
    assert (push.status, push.error_reason) == (AttemptStatus.SUPPRESSED, "already confirmed by the device")
    assert recipient.confirmed_at is not None and recipient.acknowledged_at is not None


def test_receipt_from_another_users_device_is_not_found_and_changes_nothing(
    program: Program, crew_member: CrewMember, outsider: CrewMember
) -> None:
    notification = _notify(program, crew_member)

    with pytest.raises(services.NotificationNotFound):
        services.receipt_record(notification_id=notification.pk, device=outsider.device, status="acknowledged")

    recipient = NotificationRecipient.objects.get(notification=notification)
    assert (recipient.confirmed_at, recipient.acknowledged_at) == (None, None)
    assert list(NotificationAttempt.objects.values_list("device_id", "status")) == [
        (crew_member.device.pk, AttemptStatus.QUEUED)
    ]


@pytest.mark.django_db(transaction=True)
def test_two_receipts_at_once_from_a_device_the_notification_was_not_planned_for_are_both_recorded(
    program: Program, crew_member: CrewMember
) -> None:
    """A device signed in after the notification (found by a pull) confirms it over the socket
    and over REST at once: each receipt records, neither fails on the other's in-app row."""
    notification = _notify(program, crew_member)
    phone, _ = device_with_token(crew_member.user, name="Phone")
    inserted, release = threading.Event(), threading.Event()
    faults: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                services.receipt_record(notification_id=notification.pk, device=phone, status="delivered")
                inserted.set()
                release.wait(10)
        except BaseException as fault:  # noqa: BLE001 - re-raised in the test's own thread
            faults.append(fault)
            inserted.set()
        finally:
            connection.close()

    def second() -> None:
        try:
            services.receipt_record(notification_id=notification.pk, device=phone, status="opened")
        except BaseException as fault:  # noqa: BLE001 - re-raised in the test's own thread
            faults.append(fault)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inserted.wait(10)
    threads[1].start()
    time.sleep(1)  # the second receipt is now waiting on the first one's in-app row
    release.set()
    for thread in threads:
        thread.join(10)

    assert faults == []
    attempt = NotificationAttempt.objects.get(notification=notification, device=phone, channel=Channel.IN_APP)
    assert attempt.status == AttemptStatus.OPENED


def test_sweep_sends_the_sms_when_no_device_confirmed_by_the_deadline(
    settings: SettingsWrapper, program: Program, crew_member: CrewMember
) -> None:
    settings.NOTIFICATIONS_URGENT_FALLBACK_SECONDS = 30
    crew_member.user.phone_number = "+15005550006"
    crew_member.user.save()
    notification = _notify(program, crew_member)

    assert services.fallbacks_start(now=timezone.now()) == 0  # before the deadline
    assert services.fallbacks_start(now=timezone.now() + timedelta(seconds=31)) == 1
    assert services.fallbacks_start(now=timezone.now() + timedelta(seconds=60)) == 0  # once only

    sms = NotificationAttempt.objects.get(notification=notification, channel=Channel.SMS)
    assert (sms.address, sms.status) == ("+15005550006", AttemptStatus.QUEUED)


def test_sweep_sends_no_sms_when_a_device_confirmed(
    settings: SettingsWrapper, program: Program, crew_member: CrewMember
) -> None:
    crew_member.user.phone_number = "+15005550006"
    crew_member.user.save()
    notification = _notify(program, crew_member)
    services.receipt_record(notification_id=notification.pk, device=crew_member.device, status="delivered")

    started = services.fallbacks_start(now=timezone.now() + timedelta(hours=1))

    assert started == 0
    assert not NotificationAttempt.objects.filter(notification=notification, channel=Channel.SMS).exists()


def test_a_fallback_not_yet_sent_when_a_device_confirms_is_not_sent(
    settings: SettingsWrapper, program: Program, crew_member: CrewMember
) -> None:
    """The SMS waited (its task not yet run, a retry's backoff, quiet hours) and the crew
    acknowledged meanwhile: escalating now would text someone who already has it."""
    settings.NOTIFICATIONS_URGENT_FALLBACK_SECONDS = 0
    crew_member.user.phone_number = "+15005550006"
    crew_member.user.save()
    notification = _notify(program, crew_member)
    assert services.fallbacks_start(now=timezone.now()) == 1
    sms = NotificationAttempt.objects.get(notification=notification, channel=Channel.SMS)

    services.receipt_record(notification_id=notification.pk, device=crew_member.device, status="acknowledged")
    services.attempt_send(attempt_id=str(sms.pk))

    sms.refresh_from_db()
    assert sms.status == AttemptStatus.SUPPRESSED
    assert sms.sent_at is None


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_start_one_fallback(settings: SettingsWrapper, program: Program) -> None:
    # Sends would go to a queue no worker reads; the rows are what this test is about.
    settings.NOTIFICATIONS_TASK_QUEUE = "notifications-test-unconsumed"
    members = [make_crew_member(program) for _ in range(8)]
    for member in members:
        member.user.phone_number = "+15005550006"
        member.user.save()
        _notify(program, member)
    later = timezone.now() + timedelta(hours=1)
    barrier = threading.Barrier(2)
    results: list[int] = []

    def sweep() -> None:
        try:
            barrier.wait()
            results.append(services.fallbacks_start(now=later))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(results) == 8
    assert NotificationAttempt.objects.filter(channel=Channel.SMS).count() == 8
    _purge("notifications-test-unconsumed")


def _purge(queue: str) -> None:
    from config.celery import app

    with app.connection_for_write() as conn:
        cast(Any, conn.default_channel).queue_purge(queue)


def test_rate_limit_stops_an_sms_storm(settings: SettingsWrapper, program: Program, crew_member: CrewMember) -> None:
    settings.NOTIFICATIONS_RATE_LIMIT_SMS = 3
    settings.NOTIFICATIONS_RATE_WINDOW_SECONDS = 1_000_000
    crew_member.user.phone_number = "+15005550006"
    crew_member.user.save()
    accounts_services.device_revoke(device=crew_member.device, revoked_by=None, reason="no device: SMS at once")
    attempts = []
    for _ in range(10):
        notification = _notify(program, crew_member)
        attempts.append(NotificationAttempt.objects.get(notification=notification, channel=Channel.SMS))

    for attempt in attempts:
        services.attempt_send(attempt_id=str(attempt.pk))

    statuses = [NotificationAttempt.objects.get(pk=attempt.pk).status for attempt in attempts]
    assert statuses == [AttemptStatus.SENT] * 3 + [AttemptStatus.SUPPRESSED] * 7
    assert set(
        NotificationAttempt.objects.filter(status=AttemptStatus.SUPPRESSED).values_list("error_reason", flat=True)
    ) == {"rate limited"}


def test_the_same_attempt_is_sent_once_however_often_its_task_runs(
    program: Program, crew_member: CrewMember, tmp_path: Path
) -> None:
    crew_member.user.phone_number = "+15005550006"
    crew_member.user.save()
    accounts_services.device_revoke(device=crew_member.device, revoked_by=None, reason="no device: SMS at once")
    attempt = NotificationAttempt.objects.get(notification=_notify(program, crew_member))

    outcomes = [services.attempt_send(attempt_id=str(attempt.pk)) for _ in range(3)]

    assert outcomes == ["sent", "not_claimed", "not_claimed"]
    assert [path.name for path in (tmp_path / "sms").iterdir()] == [f"{attempt.pk}.json"]


def test_quiet_hours_hold_back_what_is_not_urgent(program: Program, crew_member: CrewMember) -> None:
    PushRegistrationFactory.create(device=crew_member.device)
    now = timezone.now()
    start = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (now + timedelta(hours=2)).time().replace(second=0, microsecond=0)
    services.preference_set(user=crew_member.user, quiet_hours=(start.strftime("%H:%M"), end.strftime("%H:%M")))

    normal = _notify(program, crew_member, urgency=Urgency.NORMAL)
    urgent = _notify(program, crew_member, urgency=Urgency.URGENT)

    normal_push = NotificationAttempt.objects.get(notification=normal, channel=Channel.PUSH)
    urgent_push = NotificationAttempt.objects.get(notification=urgent, channel=Channel.PUSH)
    quiet_end = dt.datetime.combine((now + timedelta(hours=2)).date(), end, tzinfo=dt.UTC)
    assert normal_push.due_at == quiet_end
    assert normal_push.dispatched_at is None
    assert urgent_push.due_at <= timezone.now()
    # The in-app channel is silent, so it is never held back.
    assert NotificationAttempt.objects.get(notification=normal, channel=Channel.IN_APP).due_at <= timezone.now()


def test_contact_who_opted_out_of_sms_gets_none(program: Program) -> None:
    services.preference_set(phone_number="+15005550006", sms_allowed=False)
    notification = services.notify(
        program=program,
        contacts=[services.Contact(phone_number="+15005550006")],
        kind="followup.reminder",
        text="Your care team will call you today",
    )
    attempt = NotificationAttempt.objects.get(notification=notification)

    services.attempt_send(attempt_id=str(attempt.pk))

    attempt.refresh_from_db()
    assert (attempt.status, attempt.error_reason) == (AttemptStatus.SUPPRESSED, "recipient opted out of this channel")


def test_a_user_whose_number_replied_stop_gets_no_fallback_sms(
    settings: SettingsWrapper, program: Program, crew_member: CrewMember
) -> None:
    """The STOP is recorded by number (the reply has no user); the user's SMS goes to that number."""
    settings.NOTIFICATIONS_URGENT_FALLBACK_SECONDS = 0
    crew_member.user.phone_number = "+15005550006"
    crew_member.user.save()
    assert services.sms_inbound_record(from_number="+15005550006", body="STOP") == "opted_out"
    services.preference_set(user=crew_member.user, email_allowed=False)  # their own row says nothing of SMS
    notification = _notify(program, crew_member)
    assert services.fallbacks_start(now=timezone.now()) == 1
    sms = NotificationAttempt.objects.get(notification=notification, channel=Channel.SMS)

    services.attempt_send(attempt_id=str(sms.pk))

    sms.refresh_from_db()
    assert (sms.status, sms.error_reason) == (AttemptStatus.SUPPRESSED, "recipient opted out of this channel")


def test_the_rate_limit_keeps_no_phone_number_or_email_in_redis(program: Program) -> None:
    """The person in crisis is known here by their number; Redis is neither sealed nor audited."""
    notification = services.notify(
        program=program,
        contacts=[services.Contact(phone_number="+12125550177"), services.Contact(email="person@example.org")],
        kind="followup.reminder",
        text="Your care team will call you today",
        urgency=Urgency.LOW,
    )
    for attempt in NotificationAttempt.objects.filter(notification=notification):
        services.attempt_send(attempt_id=str(attempt.pk))
    assert not NotificationAttempt.objects.filter(notification=notification, sent_at=None).exists()

    keys = [str(key) for key in ratelimit._client(settings.REDIS_URL).keys("tandem:notifications:rate:*")]
    assert keys  # counted
    assert not [key for key in keys if "2125550177" in key or "person@example.org" in key]


def test_a_send_whose_worker_died_is_marked_unknown_and_not_sent_again(
    settings: SettingsWrapper, program: Program, crew_member: CrewMember
) -> None:
    settings.NOTIFICATIONS_SENDING_STALE_SECONDS = 60
    notification = _notify(program, crew_member)
    # Handed to the provider, whose answer never came back.
    handed_at = timezone.now() - timedelta(minutes=5)
    NotificationAttempt.objects.filter(notification=notification).update(
        status=AttemptStatus.SENDING, claimed_at=handed_at, provider_called_at=handed_at
    )

    result = services.sweep()

    attempt = NotificationAttempt.objects.get(notification=notification)
    assert result["attempts_abandoned"] == 1
    assert (attempt.status, attempt.error_reason) == (
        AttemptStatus.FAILED,
        "outcome unknown: the worker stopped mid-send",
    )


def test_a_send_claimed_by_a_worker_that_died_before_handing_it_over_is_queued_again(
    settings: SettingsWrapper, program: Program, crew_member: CrewMember
) -> None:
    settings.NOTIFICATIONS_SENDING_STALE_SECONDS = 60
    notification = _notify(program, crew_member)
    NotificationAttempt.objects.filter(notification=notification).update(
        status=AttemptStatus.SENDING, claimed_at=timezone.now() - timedelta(minutes=5), provider_called_at=None
    )

    result = services.sweep()

    attempt = NotificationAttempt.objects.get(notification=notification)
    assert (result["attempts_requeued"], result["attempts_abandoned"], result["attempts_dispatched"]) == (1, 0, 1)
    assert attempt.status == AttemptStatus.QUEUED and attempt.dispatched_at is not None
    assert attempt.failed_at is None


def test_delivery_summary_counts_devices_and_acknowledgements(program: Program, crew_member: CrewMember) -> None:
    partner = make_crew_member(program, unit=crew_member.unit)
    phones = [device_with_token(user, name="Phone")[0] for user in (crew_member.user, partner.user)]
    notification = services.notify(
        program=program, unit=crew_member.unit.pk, kind="assignment.offered", urgency=Urgency.URGENT, text="New"
    )
    for device in [crew_member.device, phones[0], partner.device]:
        services.receipt_record(notification_id=notification.pk, device=device, status="delivered")
    services.receipt_record(notification_id=notification.pk, device=partner.device, status="acknowledged")

    summary = selectors.delivery_summary(notification=notification)

    assert (summary.recipients, summary.devices, summary.devices_delivered) == (2, 4, 3)
    assert summary.acknowledged_by == [str(partner.user.pk)]
    assert summary.describe() == "delivered to 3 of 4 devices, acknowledged by 1"


def test_unit_member_who_left_the_program_cannot_be_notified(program: Program, crew_member: CrewMember) -> None:
    stranger = make_crew_member(program)
    UnitMemberFactory.create(unit=crew_member.unit, user=stranger.user)
    stranger.user.memberships.all().delete()

    with pytest.raises(DomainError):
        services.notify(program=program, unit=crew_member.unit.pk, kind="assignment.offered", text="New")
