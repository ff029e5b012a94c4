"""Test settings with time limits short enough for a test to outlast (tests/common/test_time_limits_live.py)."""

from __future__ import annotations

from config.settings.test import *  # noqa: F403

CELERY_TASK_SOFT_TIME_LIMIT = 2
CELERY_TASK_TIME_LIMIT = 4
