"""The whole path through a real Celery worker whose adapters talk to the provider stand-ins."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from apps.accounts.models import Program
from apps.notifications import services
from apps.notifications.models import (
    AttemptStatus,
    Channel,
    Notification,
    NotificationAttempt,
    PushRegistration,
    Urgency,
)
from apps.notifications.tasks import send_attempt, sweep
from config.celery import app
from tests.conftest import CrewMember
from tests.live import LiveProcess, celery_worker
from tests.notifications.conftest import provider_settings
from tests.notifications.factories import PushRegistrationFactory
from tests.notifications.standins import ApnsStandIn, StandIn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

QUEUE = "notifications-providers"


@pytest.fixture(scope="module")
def provider_worker(
    django_db_setup: None, live_server_logs: Path, http_stand_in: StandIn, apns_stand_in: ApnsStandIn
) -> Iterator[LiveProcess]:
    """A worker of its own, on its own queue, so the shared worker never picks up these sends."""
    env = {
        **provider_settings(http_stand_in, apns_stand_in),
        "CELERY_WORKER_QUEUES": QUEUE,
        "NOTIFICATIONS_TASK_QUEUE": QUEUE,
        "NOTIFICATIONS_RETRY_BASE_SECONDS": "1",
    }
    with celery_worker(live_server_logs, name="notifications-providers", **cast(dict[str, Any], env)) as process:
        # celery_worker returns once any worker answers a ping, and the session's shared worker
        # may be the one that did: wait for this one, or the first test's 2-second fallback
        # deadline can pass while its sends sit in the queue.
        hostname = f"notifications-providers-{os.getpid()}@{socket.gethostname()}"
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[hostname], timeout=0.5):
            assert time.monotonic() < deadline, process.log()
        yield process


@pytest.fixture
def stand_ins(
    provider_worker: LiveProcess, settings: SettingsWrapper, http_stand_in: StandIn, apns_stand_in: ApnsStandIn
) -> Iterator[StandIn]:
    settings.NOTIFICATIONS_TASK_QUEUE = QUEUE
    http_stand_in.reset()
    apns_stand_in.reset()
    yield http_stand_in
    assert http_stand_in.violations == []
    assert apns_stand_in.violations == []


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _status(attempt: NotificationAttempt) -> str:
    return NotificationAttempt.objects.get(pk=attempt.pk).status


def _urgent(program: Program, member: CrewMember) -> Notification:
    return services.notify(
        program=program,
        recipients=[member.user.pk],
        kind="assignment.offered",
        urgency=Urgency.URGENT,
        text="New assignment offered to your unit",
        link="/assignments/7",
    )


def test_unconfirmed_push_falls_back_to_sms_after_the_configured_time(
    stand_ins: StandIn, settings: SettingsWrapper, program: Program, crew_member: CrewMember
) -> None:
    settings.NOTIFICATIONS_URGENT_FALLBACK_SECONDS = 2
    crew_member.user.phone_number = "+15005550006"
    crew_member.user.save()
    PushRegistrationFactory.create(device=crew_member.device, token="fcm-ok-chain")
    started = time.monotonic()

    notification = _urgent(program, crew_member)

    assert sweep.apply_async(queue=QUEUE, ignore_result=False).get(timeout=10)["fallbacks_started"] == 0  # not yet due
    assert time.monotonic() - started < 2  # (so the sweep above really ran before the deadline)
    push = NotificationAttempt.objects.get(notification=notification, channel=Channel.PUSH)
    wait_for(lambda: _status(push) == AttemptStatus.SENT)
    assert stand_ins.of("twilio") == []
    time.sleep(max(0.0, 2.1 - (time.monotonic() - started)))

    assert sweep.apply_async(queue=QUEUE, ignore_result=False).get(timeout=10)["fallbacks_started"] == 1

    sms = NotificationAttempt.objects.get(notification=notification, channel=Channel.SMS)
    wait_for(lambda: _status(sms) == AttemptStatus.SENT)
    [request] = stand_ins.of("twilio")
    assert request.content["To"] == "+15005550006"
    assert len(stand_ins.of("fcm")) == 1


def test_confirmed_push_sends_no_sms(
    stand_ins: StandIn, settings: SettingsWrapper, program: Program, crew_member: CrewMember
) -> None:
    settings.NOTIFICATIONS_URGENT_FALLBACK_SECONDS = 1
    crew_member.user.phone_number = "+15005550006"
    crew_member.user.save()
    PushRegistrationFactory.create(device=crew_member.device, token="fcm-ok-confirmed")
    notification = _urgent(program, crew_member)
    push = NotificationAttempt.objects.get(notification=notification, channel=Channel.PUSH)
    wait_for(lambda: _status(push) == AttemptStatus.SENT)

    response = crew_member.client().post(
        f"/api/v1/notifications/{notification.pk}/receipts/", {"status": "delivered"}, format="json"
    )
    time.sleep(1.1)
    result = sweep.apply_async(queue=QUEUE, ignore_result=False).get(timeout=10)

    assert response.status_code == 200
    assert result["fallbacks_started"] == 0
    assert not NotificationAttempt.objects.filter(notification=notification, channel=Channel.SMS).exists()
    assert stand_ins.of("twilio") == []
    assert _status(push) == AttemptStatus.DELIVERED


def test_invalid_push_token_reported_to_the_worker_is_disabled(
    stand_ins: StandIn, apns_stand_in: ApnsStandIn, program: Program, crew_member: CrewMember
) -> None:
    registration = PushRegistrationFactory.create(device=crew_member.device, provider="apns", token="dead" * 16)

    notification = _urgent(program, crew_member)

    push = NotificationAttempt.objects.get(notification=notification, channel=Channel.PUSH)
    wait_for(lambda: _status(push) == AttemptStatus.FAILED)
    registration = PushRegistration.objects.get(pk=registration.pk)
    assert registration.disabled_reason == "apns 410 Unregistered"
    assert len(apns_stand_in.received) == 1


def test_a_retried_or_duplicated_send_task_sends_one_sms(stand_ins: StandIn, program: Program) -> None:
    services.preference_set(phone_number="+15005550006", quiet_hours=("00:00", "23:59"))
    notification = services.notify(
        program=program,
        contacts=[services.Contact(phone_number="+15005550006")],
        kind="followup.reminder",
        text="Your care team will call you today",
    )
    attempt = NotificationAttempt.objects.get(notification=notification)
    assert attempt.dispatched_at is None  # held by quiet hours: no task queued yet
    NotificationAttempt.objects.filter(pk=attempt.pk).update(due_at=timezone.now())

    results = [send_attempt.apply_async((str(attempt.pk),), queue=QUEUE, ignore_result=False) for _ in range(3)]

    assert sorted(result.get(timeout=10) for result in results) == ["not_claimed", "not_claimed", "sent"]
    assert len(stand_ins.of("twilio")) == 1
    assert _status(attempt) == AttemptStatus.SENT


def test_throttled_sms_is_sent_again_by_the_sweep_after_its_backoff(stand_ins: StandIn, program: Program) -> None:
    notification = services.notify(
        program=program,
        contacts=[services.Contact(phone_number="+15005550429")],
        kind="followup.reminder",
        text="Your care team will call you today",
    )
    attempt = NotificationAttempt.objects.get(notification=notification)
    wait_for(lambda: NotificationAttempt.objects.get(pk=attempt.pk).tries == 1 and _status(attempt) == "queued")

    time.sleep(1.1)
    assert sweep.apply_async(queue=QUEUE, ignore_result=False).get(timeout=10)["attempts_dispatched"] == 1

    wait_for(lambda: _status(attempt) == AttemptStatus.SENT)
    assert len(stand_ins.of("twilio")) == 2
    assert NotificationAttempt.objects.get(pk=attempt.pk).tries == 2
