"""Notifications in bulk: notify_many plans like notify, and a chunk of sends goes out once."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from apps.accounts import services as accounts_services
from apps.accounts.models import Program
from apps.common.api.errors import DomainError
from apps.notifications import services
from apps.notifications.channels import SendResult
from apps.notifications.models import AttemptStatus, Channel, Notification, NotificationAttempt, Urgency
from apps.notifications.services import Contact, NotificationRequest
from tests.conftest import CrewMember, make_crew_member
from tests.notifications.factories import PushRegistrationFactory
from tests.notifications.smtp_standin import running_smtp_stand_in


@pytest.fixture(autouse=True)
def _outbox(settings: SettingsWrapper, tmp_path: Path) -> None:
    settings.NOTIFICATIONS_OUTBOX_DIR = str(tmp_path)


def _request(program: Program, **fields: object) -> NotificationRequest:
    values: dict[str, object] = {"kind": "followup.due", "text": "A follow-up contact is due.", "link": "/followups/1"}
    return NotificationRequest(program=program, **{**values, **fields})  # type: ignore[arg-type]


def _plan(notification: Notification) -> list[tuple[str, object, str, str]]:
    return sorted(
        (attempt.channel, attempt.device_id, attempt.address, attempt.status)
        for attempt in NotificationAttempt.objects.filter(notification=notification)
    )


def test_notify_many_plans_each_notification_as_notify_would(program: Program, crew_member: CrewMember) -> None:
    PushRegistrationFactory.create(device=crew_member.device)
    no_device = make_crew_member(program)
    no_device.user.phone_number = "+15005550006"
    no_device.user.save()
    accounts_services.device_revoke(device=no_device.device, revoked_by=None, reason="lost")
    requests = [
        _request(program, recipients=[crew_member.user.pk], urgency=Urgency.URGENT),
        _request(program, recipients=[no_device.user.pk], urgency=Urgency.URGENT),
        _request(program, contacts=[Contact(email="someone@example.org")], urgency=Urgency.LOW),
        _request(program, contacts=[Contact(phone_number="+12125550101")], urgency=Urgency.NORMAL),
    ]

    batch = services.notify_many(requests=requests)
    one_by_one = [
        services.notify(
            program=r.program,
            kind=r.kind,
            text=r.text,
            link=r.link,
            urgency=r.urgency,
            recipients=r.recipients,
            contacts=r.contacts,
        )
        for r in requests
    ]

    assert [_plan(n) for n in batch] == [_plan(n) for n in one_by_one]
    assert [_plan(n) for n in batch] == [
        [("in_app", crew_member.device.pk, "", "queued"), ("push", crew_member.device.pk, "", "queued")],
        [("sms", None, "+15005550006", "queued")],
        [("email", None, "someone@example.org", "queued")],
        [("sms", None, "+12125550101", "queued")],
    ]


def test_notify_many_takes_the_same_number_of_queries_for_ten_or_a_hundred(
    program: Program, crew_member: CrewMember
) -> None:
    def queries(count: int, prefix: str) -> int:
        requests = [
            _request(
                program,
                recipients=[crew_member.user.pk],
                contacts=[Contact(email=f"cm{i}@example.org")],
                urgency=Urgency.LOW,
                dedupe_key=f"{prefix}-{i}",
            )
            for i in range(count)
        ]
        with CaptureQueriesContext(connection) as captured:
            services.notify_many(requests=requests)
        return len(captured)

    assert queries(10, "ten") == queries(100, "hundred")
    assert Notification.objects.count() == 110
    assert NotificationAttempt.objects.filter(channel=Channel.EMAIL).count() == 110


def test_dedupe_keys_in_a_batch_return_the_first_notification_and_plan_nothing_more(
    program: Program, crew_member: CrewMember
) -> None:
    first = services.notify_many(requests=[_request(program, recipients=[crew_member.user.pk], dedupe_key="a")])[0]

    again = services.notify_many(
        requests=[
            _request(program, recipients=[crew_member.user.pk], dedupe_key="a"),
            _request(program, recipients=[crew_member.user.pk], dedupe_key="b"),
            _request(program, recipients=[crew_member.user.pk], dedupe_key="b"),
        ]
    )

    assert again[0].pk == first.pk
    assert again[1].pk == again[2].pk != first.pk
    assert Notification.objects.count() == 2
    assert NotificationAttempt.objects.count() == 2  # one in-app attempt each


def test_a_batch_with_one_outsider_is_refused_whole_and_creates_nothing(
    program: Program, crew_member: CrewMember, foreign_dispatcher: CrewMember
) -> None:
    with pytest.raises(DomainError) as refused:
        services.notify_many(
            requests=[
                _request(program, recipients=[crew_member.user.pk]),
                _request(program, recipients=[foreign_dispatcher.user.pk]),
            ]
        )

    assert refused.value.field == "recipients"
    assert not Notification.objects.exists()
    assert not NotificationAttempt.objects.exists()


def _sms_attempts(program: Program, count: int) -> list[str]:
    notifications = services.notify_many(
        requests=[
            _request(program, contacts=[Contact(phone_number=f"+1212555{i:04d}")], urgency=Urgency.NORMAL)
            for i in range(count)
        ]
    )
    return [str(NotificationAttempt.objects.get(notification=n).pk) for n in notifications]


def test_a_chunk_sent_again_sends_none_of_it_twice(program: Program, tmp_path: Path) -> None:
    ids = _sms_attempts(program, 5)

    first = services.attempts_send(attempt_ids=ids)
    again = services.attempts_send(attempt_ids=ids)

    assert first == {"sent": 5}
    assert again == {"not_claimed": 5}
    assert sorted(path.name for path in (tmp_path / "sms").iterdir()) == sorted(f"{pk}.json" for pk in ids)
    assert set(NotificationAttempt.objects.values_list("status", "tries")) == {(AttemptStatus.SENT, 1)}


def test_the_rate_limit_counts_every_attempt_of_a_chunk(
    settings: SettingsWrapper, program: Program, crew_member: CrewMember
) -> None:
    settings.NOTIFICATIONS_RATE_LIMIT_SMS = 3
    settings.NOTIFICATIONS_RATE_WINDOW_SECONDS = 1_000_000
    crew_member.user.phone_number = f"+1646{int(time.time()) % 10_000_000:07d}"
    crew_member.user.save()
    accounts_services.device_revoke(device=crew_member.device, revoked_by=None, reason="no device: SMS at once")
    notifications = services.notify_many(
        requests=[_request(program, recipients=[crew_member.user.pk], urgency=Urgency.URGENT) for _ in range(10)]
    )
    ids = [str(NotificationAttempt.objects.get(notification=n, channel=Channel.SMS).pk) for n in notifications]

    assert services.attempts_send(attempt_ids=ids) == {"sent": 3, "suppressed": 7}
    assert set(
        NotificationAttempt.objects.filter(status=AttemptStatus.SUPPRESSED).values_list("error_reason", flat=True)
    ) == {"rate limited"}


def test_an_opted_out_contact_in_a_chunk_is_suppressed_and_the_others_go(program: Program) -> None:
    ids = _sms_attempts(program, 3)
    services.sms_inbound_record(from_number="+12125550001", body="STOP")

    assert services.attempts_send(attempt_ids=ids) == {"sent": 2, "suppressed": 1}
    suppressed = NotificationAttempt.objects.get(status=AttemptStatus.SUPPRESSED)
    assert (suppressed.address, suppressed.error_reason) == ("+12125550001", "recipient opted out of this channel")


def test_a_chunk_of_emails_goes_through_one_smtp_session(settings: SettingsWrapper, program: Program) -> None:
    settings.NOTIFICATIONS_EMAIL_BACKEND = "django"
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    notifications = services.notify_many(
        requests=[
            _request(program, contacts=[Contact(email=f"cm{i}@example.org")], urgency=Urgency.LOW) for i in range(4)
        ]
    )
    ids = [str(NotificationAttempt.objects.get(notification=n).pk) for n in notifications]

    with running_smtp_stand_in() as smtp:
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
        outcome = services.attempts_send(attempt_ids=ids)

    assert outcome == {"sent": 4}
    [session] = smtp.sessions
    assert len(session) == 4
    assert set(NotificationAttempt.objects.values_list("status", flat=True)) == {AttemptStatus.SENT}


def test_a_chunk_slowed_by_its_provider_is_not_taken_for_a_dead_worker(
    settings: SettingsWrapper, program: Program, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stale sweep is for sends whose worker died; a live worker still going through a slow
    chunk must keep its sends: the one it sent recorded as sent, the throttled one retried."""
    stale = timedelta(seconds=settings.NOTIFICATIONS_SENDING_STALE_SECONDS + 1)

    addresses: list[str] = []

    class SlowThenThrottled:
        def send(self, address: str, message: object) -> SendResult:
            addresses.append(address)
            if len(addresses) == 1:
                # This first send took longer than the stale window (the provider timing out).
                NotificationAttempt.objects.filter(status=AttemptStatus.SENDING).update(
                    claimed_at=F("claimed_at") - stale
                )
                return SendResult.sent("SM-slow")
            services.attempts_abandon_stale(now=timezone.now())  # the sweep runs meanwhile
            return SendResult.retry("twilio 429 20429")

    monkeypatch.setattr(services.registry, "sms_backend", SlowThenThrottled)
    notifications = services.notify_many(
        requests=[
            _request(program, contacts=[Contact(phone_number="+12125550101")]),
            _request(program, contacts=[Contact(phone_number="+12125550102")]),
        ]
    )
    chunk = [str(NotificationAttempt.objects.get(notification=n).pk) for n in notifications]

    services.attempts_send(attempt_ids=chunk)

    slow, throttled = (NotificationAttempt.objects.get(address=address) for address in addresses)
    assert (slow.status, slow.provider_message_id) == (AttemptStatus.SENT, "SM-slow")
    assert (throttled.status, throttled.error_reason) == (AttemptStatus.QUEUED, "twilio 429 20429")


def test_each_answer_of_a_chunk_is_recorded_as_it_comes(program: Program, monkeypatch: pytest.MonkeyPatch) -> None:
    """A send that went out is recorded before the next one is made: a chunk stopped later
    (its time limit, its worker) leaves it sent, with the id a delivery report will carry."""
    seen_before_each_send: list[list[tuple[str, str]]] = []
    order: list[str] = []

    class Recording:
        def send(self, address: str, message: object) -> SendResult:
            order.append(address)
            seen_before_each_send.append(
                sorted(
                    NotificationAttempt.objects.exclude(status=AttemptStatus.SENDING).values_list(
                        "address", "provider_message_id"
                    )
                )
            )
            return SendResult.sent(f"SM-{address[-4:]}")

    monkeypatch.setattr(services.registry, "sms_backend", Recording)
    ids = _sms_attempts(program, 3)

    assert services.attempts_send(attempt_ids=ids) == {"sent": 3}
    answered = [(address, f"SM-{address[-4:]}") for address in order]
    assert seen_before_each_send == [[], answered[:1], sorted(answered[:2])]


def test_a_chunk_stopped_mid_send_leaves_its_unsent_rest_queued_and_the_send_in_flight_unknown(
    program: Program, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever stops a chunk mid-call (the task's soft time limit, an adapter's bug): what went
    out stays sent, the send in flight is of unknown outcome, and the sends never handed over go
    back to the queue for the next sweep, not after NOTIFICATIONS_SENDING_STALE_SECONDS."""

    order: list[str] = []

    class StoppedOnTheSecond:
        def send(self, address: str, message: object) -> SendResult:
            order.append(address)
            if len(order) == 2:
                raise RuntimeError("stopped mid-call")
            return SendResult.sent(f"SM-{address[-4:]}")

    monkeypatch.setattr(services.registry, "sms_backend", StoppedOnTheSecond)
    ids = _sms_attempts(program, 4)

    with pytest.raises(RuntimeError, match="stopped mid-call"):
        services.attempts_send(attempt_ids=ids)

    rows = {
        attempt.address: (attempt.status, attempt.provider_message_id, attempt.provider_called_at is not None)
        for attempt in NotificationAttempt.objects.all()
    }
    first, stopped = order
    assert rows.pop(first) == (AttemptStatus.SENT, f"SM-{first[-4:]}", True)
    assert rows.pop(stopped) == (AttemptStatus.FAILED, "", True)
    assert list(rows.values()) == [(AttemptStatus.QUEUED, "", False)] * 2
    assert NotificationAttempt.objects.get(address=stopped).error_reason.startswith("outcome unknown")
    # The next sweep sends the two again, once: the chunk's stale claim needs no waiting for.
    assert services.attempts_dispatch_due(now=timezone.now()) == 2
    assert services.attempts_send(attempt_ids=ids) == {"sent": 2, "not_claimed": 2}
    assert sorted(order[2:]) == sorted(rows)
