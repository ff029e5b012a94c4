"""A task that the database refuses, for the live worker of tests/common/test_logs_live.py (the
worker imports this module with --include; no other worker knows the task), and the refused
write itself, for its live web process."""

from __future__ import annotations

from celery import shared_task
from celery.utils.log import get_task_logger

from apps.notifications.models import NotificationPreference

logger = get_task_logger(__name__)


def copy_preference_row(preference_id: str) -> None:
    """Stores a copy of a preference, which the unique phone number refuses: the row's phone
    number reaches the process only in what PostgreSQL says of the refusal."""
    preference = NotificationPreference.objects.get(pk=preference_id)
    preference.pk = None
    preference.save()


@shared_task
def copy_preference(preference_id: str) -> None:
    try:
        copy_preference_row(preference_id)
    except Exception:
        # As a task that logs a fault before failing would, with Celery's task logger.
        logger.exception("preference %s could not be copied", preference_id)
        raise
