"""The beat schedule: a periodic sweep's message that waited too long is dropped, not run late.

Sweeps read their work from the database, so one that is late is replaced by the next one and
nothing is lost; without an expiry, an hour's worker outage queues hundreds of them ahead of
real sends on the shared queue. What is checked is what each scheduler sends with the task:
django-celery-beat's (the deployed one, which keeps only some options) and Celery's own.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from celery.beat import ScheduleEntry
from django.conf import settings
from django_celery_beat.schedulers import ModelEntry

from config.celery import app
from tests.live import LiveProcess

SCHEDULE = settings.CELERY_BEAT_SCHEDULE


def _interval(entry: dict[str, object]) -> float:
    schedule = entry["schedule"]
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    assert isinstance(schedule, int | float), schedule
    return float(schedule)


def _assert_expires_with_its_interval(name: str, expires: object, interval: float) -> None:
    # Late by more than its interval (a minute at least, for queues briefly busy with sends):
    # the next one is already on its way.
    assert isinstance(expires, int | float), (name, expires)
    assert min(interval, 60) <= expires <= max(interval, 60), (name, expires, interval)


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(SCHEDULE))
def test_the_deployed_scheduler_sends_every_periodic_task_with_an_expiry(name: str) -> None:
    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"
    entry = ModelEntry.from_entry(name, app=app, **SCHEDULE[name])

    _assert_expires_with_its_interval(name, entry.options.get("expires"), _interval(SCHEDULE[name]))


@pytest.mark.parametrize("name", sorted(SCHEDULE))
def test_celerys_own_scheduler_sends_every_periodic_task_with_an_expiry(name: str) -> None:
    entry = ScheduleEntry(name=name, app=app, **SCHEDULE[name])  # type: ignore[arg-type]

    _assert_expires_with_its_interval(name, (entry.options or {}).get("expires"), _interval(SCHEDULE[name]))


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", sorted(SCHEDULE))
def test_a_periodic_task_run_by_beat_stores_no_result_nobody_reads(name: str, worker: LiveProcess) -> None:
    """Every 5 s for an hour (CELERY_RESULT_EXPIRES), the sweeps' results filled Redis."""
    result = app.send_task(str(SCHEDULE[name]["task"]))  # as beat sends a task it has not imported
    deadline = time.monotonic() + 30
    while f"[{result.id}] succeeded" not in worker.log():
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.1)

    with redis.Redis.from_url(settings.CELERY_RESULT_BACKEND) as backend:
        assert backend.keys(f"*{result.id}*") == []
