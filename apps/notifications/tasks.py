from __future__ import annotations

from celery import shared_task

from apps.notifications import services


@shared_task(acks_late=True)
def send_attempt(attempt_id: str) -> str:
    """Send one attempt; a duplicate or redelivered task finds it claimed and sends nothing."""
    return services.attempt_send(attempt_id=attempt_id)


@shared_task(acks_late=True)
def sweep() -> dict[str, int]:
    """Periodic: start fallbacks past their deadline, re-queue due retries, close dead sends."""
    return services.sweep()
