"""A real worker, prefork as the Procfile runs it, holds its tasks to the time limits of the
settings (CELERY_TASK_SOFT_TIME_LIMIT, CELERY_TASK_TIME_LIMIT): the soft one raises
SoftTimeLimitExceeded in the task, the hard one ends the child running it.

The limits are the settings', not the worker command line's: Celery gives every task the
settings' limits (Task.soft_time_limit, Task.time_limit), and a task's own limits win over the
pool's, so ``--soft-time-limit`` / ``--time-limit`` (CELERY_WORKER_SOFT_TIME_LIMIT,
CELERY_WORKER_TIME_LIMIT) change what the worker reports (inspect stats: the pool's
"timeouts") and nothing else. Nor are they only the worker's: a task queued by a process that
knows it carries the limits of that process's settings in its message, and those win over the
worker's. That is so through its task object (``delay``, ``apply_async``), and by name too
(``app.send_task``) once the process's app has registered the task: it registers the tasks of
every module imported so far when it is finalized, which the first use of a task does. Only a
message without limits (sent by name by a process that does not know the task) leaves the
worker's settings in force."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery.exceptions import TimeLimitExceeded
from celery.result import AsyncResult

from config.celery import app
from tests.common import time_limit_settings, time_limit_tasks
from tests.live import LiveProcess, celery_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

QUEUE = "time-limits"
TASKS = time_limit_tasks.__name__
SOFT_LIMIT = time_limit_settings.CELERY_TASK_SOFT_TIME_LIMIT
HARD_LIMIT = time_limit_settings.CELERY_TASK_TIME_LIMIT
COMMAND_LINE_SOFT_LIMIT = 1


@pytest.fixture
def time_limit_worker(django_db_setup: None, live_server_logs: Path) -> Iterator[LiveProcess]:
    # This process knows the tasks, as it does in the whole suite once any test has used a task
    # (the app registers the module's tasks when it is finalized), whatever ran before.
    assert f"{TASKS}.worker_pid" in app.tasks
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
    """Queues a task with no limits in its message, as a process that does not know the task
    does, so that the worker's settings' limits are the ones in force. This process knows it
    (the fixture): without the explicit None, the name alone would stamp this process's limits."""
    return app.send_task(
        f"{TASKS}.{name}", args=args, queue=QUEUE, ignore_result=False, time_limit=None, soft_time_limit=None
    )


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


@pytest.mark.parametrize(
    "queue_it",
    [
        pytest.param(
            lambda seconds: time_limit_tasks.sleep_past_soft_limit.apply_async(
                (seconds,), queue=QUEUE, ignore_result=False
            ),
            id="task-object",
        ),
        pytest.param(
            lambda seconds: app.send_task(
                f"{TASKS}.sleep_past_soft_limit", args=(seconds,), queue=QUEUE, ignore_result=False
            ),
            id="by-name",
        ),
    ],
)
def test_a_task_queued_by_a_process_that_knows_it_runs_under_the_queuing_process_limits(
    time_limit_worker: LiveProcess, queue_it: Callable[[float], AsyncResult[object]]
) -> None:
    # This process's settings (240 s) travel in the message; the worker's 2 s do not apply.
    outcome = queue_it(SOFT_LIMIT + 2).get(timeout=20)
    assert isinstance(outcome, dict)
    assert outcome["soft_limit"] is False, time_limit_worker.log()
