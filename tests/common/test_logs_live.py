"""The logs of a real Celery worker and a real uvicorn process when the database refuses a
write: the constraint, never the row."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from celery.result import AsyncResult

from apps.notifications.models import NotificationPreference
from config.celery import app
from tests.common.db_error_web import OUTSIDE_DJANGO
from tests.live import AsgiServer, LiveProcess, asgi_server, celery_worker

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
        "tests.common.db_error_tasks.copy_preference", args=[str(preference.pk)], queue=QUEUE, ignore_result=False
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


@pytest.fixture
def db_error_web(django_db_setup: None, live_server_logs: Path) -> Iterator[AsgiServer]:
    """uvicorn as the Procfile runs it, serving the project with a view the database refuses."""
    with asgi_server(
        live_server_logs,
        name="db-errors-web",
        app="tests.common.db_error_web:application",
        DJANGO_SETTINGS_MODULE="tests.common.db_error_settings",
    ) as server:
        yield server


def test_a_request_refused_by_a_constraint_is_logged_by_the_constraint_not_the_row(
    db_error_web: AsgiServer,
) -> None:
    preference = NotificationPreference.objects.create(phone_number=PHONE)

    # Django's 500, logged by django.request; then an error out of the ASGI application, logged
    # by uvicorn itself.
    for url in (f"/test/copy-preference/{preference.pk}", f"{OUTSIDE_DJANGO}{preference.pk}"):
        assert httpx.get(f"{db_error_web.http_url}{url}", timeout=10).status_code == 500
    deadline = time.monotonic() + 10
    while db_error_web.live.log().count("constraint preference_phone") < 4:  # two lines each
        assert time.monotonic() < deadline, db_error_web.live.log()
        time.sleep(0.1)

    log = db_error_web.live.log()
    assert f" ERROR django.request Internal Server Error: /test/copy-preference/{preference.pk}\n" in log
    assert " ERROR uvicorn.error Exception in ASGI application\n" in log
    assert " INFO uvicorn.error Started server process " in log
    assert '"GET /test/' not in log  # the access log stays off, as the Procfile says
    assert PHONE not in log
    assert "already exists" not in log
