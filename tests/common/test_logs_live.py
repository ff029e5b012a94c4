"""A real Celery worker's log of a task the database refused: the constraint, never the row."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.result import AsyncResult

from apps.notifications.models import NotificationPreference
from config.celery import app
from tests.live import LiveProcess, celery_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

QUEUE = "db-errors"
PHONE = "+12125550123"


@pytest.fixture
def db_error_worker(django_db_setup: None, live_server_logs: Path) -> Iterator[LiveProcess]:
    """A worker of its own, on its own queue, that knows the test's task."""
    with celery_worker(
        live_server_logs, name="db-errors-worker", queues=QUEUE, include="tests.common.db_error_tasks"
    ) as process:
        yield process


def test_a_task_refused_by_a_constraint_is_logged_by_the_constraint_not_the_row(
    db_error_worker: LiveProcess,
) -> None:
    preference = NotificationPreference.objects.create(phone_number=PHONE)

    result: AsyncResult[None] = app.send_task(
        "tests.common.db_error_tasks.copy_preference", args=[str(preference.pk)], queue=QUEUE
    )
    with pytest.raises(Exception, match="preference_phone"):
        result.get(timeout=30)
    deadline = time.monotonic() + 10
    while "raised unexpected" not in db_error_worker.log():
        assert time.monotonic() < deadline, db_error_worker.log()
        time.sleep(0.1)

    log = db_error_worker.log()
    # Both lines went through the project's LOGGING (its format names the logger).
    assert " ERROR tests.common.db_error_tasks preference " in log
    assert " ERROR celery.app.trace Task tests.common.db_error_tasks.copy_preference[" in log
    assert "raised unexpected: django.db.utils.IntegrityError: SQLSTATE 23505, constraint preference_phone" in log
    assert PHONE not in log
    assert "already exists" not in log
