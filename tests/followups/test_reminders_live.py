"""Reminders through real processes: two beats and a worker, and a worker killed mid-send (P7)."""

from __future__ import annotations

import datetime as dt
import re
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.test import override_settings
from django.utils import timezone

from apps.followups import services
from apps.followups.models import FollowUpStep, Reminder, ReminderKind
from apps.notifications.models import Notification
from tests.care.factories import encounter, pushed
from tests.conftest import CrewMember, in_the_admin
from tests.followups.factories import case_manager
from tests.live import celery_beat, celery_worker, database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def _plan(member: CrewMember, *, first_contact_due_at: dt.datetime) -> FollowUpStep:
    """A referral whose first-contact step is due at the given time (the others much later)."""
    ended_at = first_contact_due_at - dt.timedelta(hours=24)
    encounter_id = encounter(member, ended_at=ended_at.isoformat(), disposition="referred")
    pushed(member, "care.referral", {"encounter_id": str(encounter_id), "service_type": "housing"})
    return FollowUpStep.objects.get(plan__encounter_id=encounter_id, key="first_contact")


def _wait(condition: object, timeout: float, *logs: object) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "\n".join(log.log()[-3000:] for log in logs)  # type: ignore[attr-defined]
        time.sleep(0.1)


def test_two_beats_send_one_reminder_per_due_step_and_none_for_a_step_completed_before_due(
    django_db_setup: None, live_server_logs: Path, tmp_path: Path, crew_member: CrewMember
) -> None:
    manager = case_manager(crew_member)
    now = timezone.now()
    due = [_plan(crew_member, first_contact_due_at=now - dt.timedelta(minutes=5)) for _ in range(20)]
    soon = _plan(crew_member, first_contact_due_at=now + dt.timedelta(seconds=4))
    completed = _plan(crew_member, first_contact_due_at=now + dt.timedelta(seconds=4))
    services.step_complete(
        step=completed, actor=manager.user, accessor=in_the_admin(manager.user)
    )  # just before it comes due
    owner_reminders = Reminder.objects.filter(kind=ReminderKind.OWNER_DUE, step__key="first_contact")
    env: dict[str, Any] = {
        "FOLLOWUPS_SWEEP_SECONDS": "1",
        "FOLLOWUPS_TASK_QUEUE": "followups-live",
        "CELERY_WORKER_QUEUES": "celery,followups-live",
    }

    with (
        celery_worker(live_server_logs, name="followups-worker", concurrency=2, **env) as worker,
        celery_beat(live_server_logs, name="followups-beat-1", schedule_file=tmp_path / "beat-1", **env) as beat1,
        celery_beat(live_server_logs, name="followups-beat-2", schedule_file=tmp_path / "beat-2", **env) as beat2,
    ):
        _wait(
            lambda: owner_reminders.filter(step__in=[*due, soon], sent_at__isnull=False).count() == 21,
            30,
            worker,
            beat1,
            beat2,
        )
        time.sleep(3)  # several more sweeps of both beats
        for beat in (beat1, beat2):
            assert beat.log().count("Scheduler: Sending due task followups-sweep") >= 3, beat.log()

    notifications = Notification.objects.filter(kind="followup.due")
    assert notifications.count() == 21
    for step in [*due, soon]:
        reminder = owner_reminders.get(step=step)
        assert reminder.notification_id is not None
        assert notifications.filter(pk=reminder.notification_id, link=f"/followups/steps/{step.pk}").exists()
    assert not notifications.filter(link=f"/followups/steps/{completed.pk}").exists()
    assert owner_reminders.get(step=completed).cancel_reason == "step completed"
    # Each owner got it in the app and by email.
    assert {a.channel for a in notifications.first().attempts.all()} == {"in_app", "email"}  # type: ignore[union-attr]


QUEUE = "followups-kill"
VISIBILITY_TIMEOUT = 2


def test_a_worker_killed_mid_send_leaves_exactly_one_reminder_after_redelivery(
    django_db_setup: None, live_server_logs: Path, crew_member: CrewMember
) -> None:
    case_manager(crew_member)
    step = _plan(crew_member, first_contact_due_at=timezone.now() - dt.timedelta(minutes=1))
    reminder = Reminder.objects.get(step=step, kind=ReminderKind.OWNER_DUE)
    env: dict[str, Any] = {
        "CELERY_WORKER_QUEUES": QUEUE,
        "FOLLOWUPS_TASK_QUEUE": QUEUE,
        # Solo pool: the task runs in the worker process, so one SIGKILL ends both; the short
        # visibility timeout lets Redis hand the unacknowledged task out again soon.
        "CELERY_WORKER_POOL": "solo",
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
    }
    # Hold the step's row lock from outside, so the send is caught mid-task, inside its transaction.
    # Watched from a connection of its own, in autocommit: inside the holder's transaction,
    # pg_stat_activity would show the snapshot of its first read, taken before the worker waited.
    with psycopg.connect(database_url()) as holder, psycopg.connect(database_url(), autocommit=True) as watcher:
        holder.execute("SELECT id FROM followups_followupstep WHERE id = %s FOR UPDATE", [step.pk])
        with celery_worker(live_server_logs, name="followups-kill-first", **env) as first:
            with override_settings(FOLLOWUPS_TASK_QUEUE=QUEUE):
                assert services.reminders_dispatch_due() == 1
            _wait(lambda: "send_reminders[" in first.log(), 15, first)
            _wait(
                lambda: (
                    watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    ).fetchone()[0]  # type: ignore[index]
                    == 1
                ),
                15,
                first,
            )
            taken_at = time.monotonic()
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
            [task_id] = re.findall(r"send_reminders\[([0-9a-f-]+)\] received", first.log())
        holder.rollback()

    reminder.refresh_from_db()
    assert reminder.sent_at is None and reminder.claimed_at is not None
    assert not Notification.objects.filter(kind="followup.due").exists()

    time.sleep(max(0.0, VISIBILITY_TIMEOUT + 0.5 - (time.monotonic() - taken_at)))
    with celery_worker(live_server_logs, name="followups-kill-second", **env) as second:
        _wait(lambda: f"send_reminders[{task_id}] succeeded" in second.log(), 20, second)
        assert "{'sent': 1}" in second.log()
        # A duplicate of the task (a lost-task re-dispatch, a second delivery) sends nothing more.
        from apps.followups.tasks import send_reminder

        assert (
            send_reminder.apply_async((reminder.pk,), queue=QUEUE, ignore_result=False).get(timeout=10)
            == "already_done"
        )

    reminder.refresh_from_db()
    assert reminder.sent_at is not None
    assert list(Notification.objects.filter(kind="followup.due").values_list("pk", flat=True)) == [
        reminder.notification_id
    ]
