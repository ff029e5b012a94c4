"""A worker killed with SIGKILL in the middle of an SMS send: the redelivered task sends nothing."""

from __future__ import annotations

import re
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from django.test import override_settings
from django.utils import timezone

from apps.accounts.models import Program
from apps.notifications import services
from apps.notifications.models import AttemptStatus, NotificationAttempt
from apps.notifications.tasks import send_attempts
from tests.live import celery_worker
from tests.notifications.conftest import provider_settings
from tests.notifications.standins import HELD_NUMBER, ApnsStandIn, StandIn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

QUEUE = "notifications-kill"
VISIBILITY_TIMEOUT = 2
SOFT_LIMIT = 2


def test_sms_send_killed_mid_flight_is_not_sent_again_on_redelivery(
    django_db_setup: None,
    live_server_logs: Path,
    http_stand_in: StandIn,
    apns_stand_in: ApnsStandIn,
    program: Program,
) -> None:
    http_stand_in.reset()
    env = {
        **provider_settings(http_stand_in, apns_stand_in),
        "CELERY_WORKER_QUEUES": QUEUE,
        "NOTIFICATIONS_TASK_QUEUE": QUEUE,
        # The solo pool runs the task in the worker process itself, so one SIGKILL ends both;
        # the short visibility timeout lets the broker hand the unacknowledged task out again soon.
        "CELERY_WORKER_POOL": "solo",
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
    }
    with celery_worker(live_server_logs, name="notifications-kill-first", **cast(dict[str, Any], env)) as first:
        # Overridden only here: the workers must start with this process's own settings module.
        with override_settings(NOTIFICATIONS_TASK_QUEUE=QUEUE):
            notification = services.notify(
                program=program,
                contacts=[services.Contact(phone_number=HELD_NUMBER)],
                kind="followup.reminder",
                text="Your care team will call you today",
            )
        assert http_stand_in.held.wait(15), first.log()
        taken_at = time.monotonic()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        [task_id] = re.findall(r"send_attempts\[([0-9a-f-]+)\] received", first.log())
    http_stand_in.release()
    attempt = NotificationAttempt.objects.get(notification=notification)
    assert attempt.status == AttemptStatus.SENDING  # claimed, provider called, answer never recorded

    time.sleep(max(0.0, VISIBILITY_TIMEOUT + 0.5 - (time.monotonic() - taken_at)))
    with celery_worker(live_server_logs, name="notifications-kill-second", **cast(dict[str, Any], env)) as second:
        deadline = time.monotonic() + 20
        while f"send_attempts[{task_id}] succeeded" not in second.log():
            assert time.monotonic() < deadline, second.log()
            time.sleep(0.1)
        assert f"send_attempts[{task_id}] succeeded" in second.log() and "{'not_claimed': 1}" in second.log()

    assert len(http_stand_in.of("twilio")) == 1
    assert NotificationAttempt.objects.get(pk=attempt.pk).status == AttemptStatus.SENDING
    # Later the sweep closes it as unknown rather than risk a second text.
    with override_settings(NOTIFICATIONS_SENDING_STALE_SECONDS=0):
        assert services.attempts_abandon_stale(now=timezone.now()) == 1
    assert NotificationAttempt.objects.get(pk=attempt.pk).status == AttemptStatus.FAILED
    assert len(http_stand_in.of("twilio")) == 1


def test_a_send_its_killed_worker_never_handed_to_the_provider_goes_out_once_after_all(
    django_db_setup: None,
    live_server_logs: Path,
    http_stand_in: StandIn,
    apns_stand_in: ApnsStandIn,
    program: Program,
) -> None:
    """Only the send in flight has an unknown outcome: the rest of the chunk, claimed but never
    handed to the provider, is known not sent, and goes out (once) rather than being lost."""
    http_stand_in.reset()
    env = {
        **provider_settings(http_stand_in, apns_stand_in),
        "CELERY_WORKER_QUEUES": QUEUE,
        "NOTIFICATIONS_TASK_QUEUE": QUEUE,
        "CELERY_WORKER_POOL": "solo",
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
    }
    # Planned one after the other (the chunk sends in that order) with their own tasks parked
    # on a queue no worker takes; the test sends the two as one chunk.
    with override_settings(NOTIFICATIONS_TASK_QUEUE="notifications-kill-parked"):
        held, waiting = (
            services.notify(
                program=program,
                contacts=[services.Contact(phone_number=number)],
                kind="followup.reminder",
                text="Your care team will call you today",
            )
            for number in (HELD_NUMBER, "+12125550142")
        )
    held_attempt, waiting_attempt = (NotificationAttempt.objects.get(notification=n) for n in (held, waiting))
    with celery_worker(live_server_logs, name="notifications-kill-chunk-first", **cast(dict[str, Any], env)) as first:
        send_attempts.apply_async(([str(held_attempt.pk), str(waiting_attempt.pk)],), queue=QUEUE)
        assert http_stand_in.held.wait(15), first.log()
        taken_at = time.monotonic()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        [task_id] = re.findall(r"send_attempts\[([0-9a-f-]+)\] received", first.log())
    http_stand_in.release()
    assert [request.content["To"] for request in http_stand_in.of("twilio")] == [HELD_NUMBER]

    time.sleep(max(0.0, VISIBILITY_TIMEOUT + 0.5 - (time.monotonic() - taken_at)))
    with celery_worker(live_server_logs, name="notifications-kill-chunk-second", **cast(dict[str, Any], env)) as second:
        deadline = time.monotonic() + 20
        while f"send_attempts[{task_id}] succeeded" not in second.log():
            assert time.monotonic() < deadline, second.log()
            time.sleep(0.1)
        assert "{'not_claimed': 2}" in second.log()  # the redelivered chunk sends nothing itself

        # The sweep, once the claim is stale: the held send is unknown, the other goes out.
        with override_settings(NOTIFICATIONS_SENDING_STALE_SECONDS=0, NOTIFICATIONS_TASK_QUEUE=QUEUE):
            assert services.sweep(now=timezone.now() + timedelta(seconds=1))["attempts_abandoned"] == 1
            services.attempts_dispatch_due(now=timezone.now() + timedelta(seconds=1))
        deadline = time.monotonic() + 20
        # The redelivered chunk, then the one the dispatch queued, and nothing after them.
        while len(re.findall(r"send_attempts\[[0-9a-f-]+\] succeeded", second.log())) < 2:
            assert time.monotonic() < deadline, second.log()
            time.sleep(0.1)
        assert "{'sent': 1}" in second.log()
        assert NotificationAttempt.objects.get(pk=waiting_attempt.pk).status == AttemptStatus.SENT

    assert NotificationAttempt.objects.get(pk=held_attempt.pk).status == AttemptStatus.FAILED
    assert sorted(request.content["To"] for request in http_stand_in.of("twilio")) == sorted(
        [HELD_NUMBER, "+12125550142"]
    )


def test_a_chunk_past_its_soft_time_limit_keeps_what_went_out_and_sends_the_rest_soon(
    django_db_setup: None,
    live_server_logs: Path,
    http_stand_in: StandIn,
    apns_stand_in: ApnsStandIn,
    program: Program,
) -> None:
    """A slow provider makes a chunk outlast the task's soft time limit: the text that went out
    is recorded sent (with the id its delivery report will carry), the one held at the provider
    is of unknown outcome, and the one never handed over is queued again for the next sweep."""
    http_stand_in.reset()
    env = {
        **provider_settings(http_stand_in, apns_stand_in),
        "CELERY_WORKER_QUEUES": QUEUE,
        "NOTIFICATIONS_TASK_QUEUE": QUEUE,
    }
    numbers = ("+12125550141", HELD_NUMBER, "+12125550143")
    with override_settings(NOTIFICATIONS_TASK_QUEUE="notifications-kill-parked"):
        notifications = [
            services.notify(
                program=program,
                contacts=[services.Contact(phone_number=number)],
                kind="followup.reminder",
                text="Your care team will call you today",
            )
            for number in numbers
        ]
    sent, held, waiting = (NotificationAttempt.objects.get(notification=n) for n in notifications)
    try:
        with celery_worker(live_server_logs, name="notifications-soft-limit", **cast(dict[str, Any], env)) as worker:
            # Limits of its own, carried in the message (as the sender's settings' limits are).
            send_attempts.apply_async(
                ([str(sent.pk), str(held.pk), str(waiting.pk)],),
                queue=QUEUE,
                soft_time_limit=SOFT_LIMIT,
                time_limit=SOFT_LIMIT + 2,
            )
            assert http_stand_in.held.wait(15), worker.log()
            held_at = time.monotonic()
            # The soft time limit, reached while the send waits on its socket: the pool's timer
            # signals the child, and SoftTimeLimitExceeded is raised in the socket read, long
            # before the provider's HTTP timeout (NOTIFICATIONS_HTTP_TIMEOUT_SECONDS, 10 s).
            while "SoftTimeLimitExceeded" not in worker.log():
                assert time.monotonic() - held_at < SOFT_LIMIT + 3, worker.log()
                time.sleep(0.1)

            rows = {a.address: a for a in NotificationAttempt.objects.filter(pk__in=[sent.pk, held.pk, waiting.pk])}
            assert rows[numbers[0]].status == AttemptStatus.SENT
            assert rows[numbers[0]].provider_message_id.startswith("SM")
            assert rows[HELD_NUMBER].status == AttemptStatus.FAILED
            assert rows[HELD_NUMBER].error_reason.startswith("outcome unknown")
            assert (rows[numbers[2]].status, rows[numbers[2]].dispatched_at) == (AttemptStatus.QUEUED, None)

            # The next sweep (no stale window to wait out) sends it, once.
            with override_settings(NOTIFICATIONS_TASK_QUEUE=QUEUE):
                assert services.sweep()["attempts_dispatched"] == 1
            deadline = time.monotonic() + 20
            while not NotificationAttempt.objects.filter(pk=waiting.pk, status=AttemptStatus.SENT).exists():
                assert time.monotonic() < deadline, worker.log()
                time.sleep(0.1)
    finally:
        http_stand_in.release()
    assert sorted(request.content["To"] for request in http_stand_in.of("twilio")) == sorted(numbers)
