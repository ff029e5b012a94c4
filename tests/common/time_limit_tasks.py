"""Tasks that outlast their time limits, for the live worker of tests/common/test_time_limits_live.py
(the worker imports this module with --include; no other worker knows them)."""

from __future__ import annotations

import os
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded


@shared_task
def sleep_past_soft_limit(seconds: float) -> dict[str, object]:
    """Sleeps; says whether, and after how long, its soft time limit stopped it."""
    started = time.monotonic()
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return {"soft_limit": True, "after": time.monotonic() - started, "pid": os.getpid()}
    return {"soft_limit": False, "after": time.monotonic() - started, "pid": os.getpid()}


@shared_task
def sleep_through_soft_limit(seconds: float) -> None:
    """Sleeps on past its soft time limit (caught and ignored), for the hard one to end it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(deadline - time.monotonic())
        except SoftTimeLimitExceeded:
            continue


@shared_task
def worker_pid() -> int:
    return os.getpid()
