"""A real worker, prefork as the Procfile runs it, holds its tasks to the time limits of the
settings (CELERY_TASK_SOFT_TIME_LIMIT, CELERY_TASK_TIME_LIMIT): the soft one raises
SoftTimeLimitExceeded in the task, the hard one ends the child running it.

The limits are the settings', not the worker command line's: Celery gives every task the
settings' limits (Task.soft_time_limit, Task.time_limit), and a task's own limits win over the
pool's, so ``--soft-time-limit`` / ``--time-limit`` (CELERY_WORKER_SOFT_TIME_LIMIT,
CELERY_WORKER_TIME_LIMIT) change what the worker reports (inspect stats: the pool's
"timeouts") and nothing else. Nor are they only the worker's: a task queued through its task
object (``delay``, ``apply_async``) carries the limits of the queuing process's settings in its
message, and those win over the worker's."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.exceptions import TimeLimitExceeded
from celery.result import AsyncResult

from config.celery import app
from tests.common import time_limit_settings, time_limit_tasks
from tests.live import LiveProcess, celery_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

QUEUE = "time-limits"
SOFT_LIMIT = time_limit_settings.CELERY_TASK_SOFT_TIME_LIMIT
HARD_LIMIT = time_limit_settings.CELERY_TASK_TIME_LIMIT
COMMAND_LINE_SOFT_LIMIT = 1


@pytest.fixture
def time_limit_worker(django_db_setup: None, live_server_logs: Path) -> Iterator[LiveProcess]:
    with celery_worker(
        live_server_logs,
        name="time-limits-worker",
        queues=QUEUE,
        include="tests.common.time_limit_tasks",
        DJANGO_SETTINGS_MODULE="tests.common.time_limit_settings",
        # Shorter than the settings' limits, and overridden by them.
        CELERY_WORKER_SOFT_TIME_LIMIT=str(COMMAND_LINE_SOFT_LIMIT),
        CELERY_WORKER_TIME_LIMIT=str(COMMAND_LINE_SOFT_LIMIT + 0.5),
    ) as process:
        yield process


def _send(name: str, *args: object) -> AsyncResult[object]:
    return app.send_task(f"tests.common.time_limit_tasks.{name}", args=args, queue=QUEUE, ignore_result=False)


def test_a_task_past_its_soft_time_limit_is_stopped_by_it(time_limit_worker: LiveProcess) -> None:
    started = time.monotonic()
    outcome = _send("sleep_past_soft_limit", 30).get(timeout=20)
    assert isinstance(outcome, dict)
    assert outcome["soft_limit"] is True, time_limit_worker.log()
    # The settings' limit, not the command line's shorter one.
    assert SOFT_LIMIT - 0.2 < float(outcome["after"]) < SOFT_LIMIT + 1.5
    assert time.monotonic() - started < SOFT_LIMIT + 5


def test_a_task_past_its_hard_time_limit_fails_and_its_child_is_replaced(time_limit_worker: LiveProcess) -> None:
    first_pid = _send("worker_pid").get(timeout=20)
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        _send("sleep_through_soft_limit", 30).get(timeout=20)
    assert time.monotonic() - started < HARD_LIMIT + 5
    deadline = time.monotonic() + 10  # the failure is stored before the worker logs it
    while f"Hard time limit ({HARD_LIMIT}s) exceeded" not in time_limit_worker.log():
        assert time.monotonic() < deadline, time_limit_worker.log()
        time.sleep(0.1)
    # Marked failed and acknowledged, not redelivered (task_reject_on_worker_lost is for a child
    # that dies, not one ended by its limit): the next task runs, in a new child.
    assert _send("worker_pid").get(timeout=20) != first_pid
    time.sleep(1)
    assert len(re.findall(r"sleep_through_soft_limit\[[0-9a-f-]+\] received", time_limit_worker.log())) == 1


def test_a_task_queued_through_its_task_object_runs_under_the_queuing_process_limits(
    time_limit_worker: LiveProcess,
) -> None:
    # This process's settings (240 s) travel in the message; the worker's 2 s do not apply.
    outcome = time_limit_tasks.sleep_past_soft_limit.apply_async((SOFT_LIMIT + 2,), queue=QUEUE, ignore_result=False)
    assert outcome.get(timeout=20)["soft_limit"] is False, time_limit_worker.log()
