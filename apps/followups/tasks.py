from __future__ import annotations

from celery import shared_task

from apps.followups import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def sweep_due_reminders() -> int:
    """Periodic (beat): claim due reminders and queue their sends; safe with several beats."""
    return services.reminders_dispatch_due()


@shared_task(acks_late=True, reject_on_worker_lost=True)
def send_reminder(reminder_id: int) -> str:
    """Send one claimed reminder; a redelivered or duplicate task finds it sent and does nothing."""
    return services.reminder_send(reminder_id=reminder_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def send_reminders(reminder_ids: list[int]) -> dict[str, int]:
    """Send a chunk of claimed reminders; a redelivered chunk sends only what was not committed."""
    return services.reminders_send(reminder_ids=reminder_ids)
