from __future__ import annotations

from celery import shared_task

from apps.notifications import services


@shared_task(acks_late=True)
def send_attempt(attempt_id: str) -> str:
    """Send one attempt; a duplicate or redelivered task finds it claimed and sends nothing.

    Kept for tasks queued before sends went out in chunks (``send_attempts``).
    """
    return services.attempt_send(attempt_id=attempt_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def send_attempts(attempt_ids: list[str]) -> dict[str, int]:
    """Send a chunk of attempts; a redelivered chunk finds them claimed and sends none of them again."""
    return services.attempts_send(attempt_ids=attempt_ids)


@shared_task(acks_late=True)
def sweep() -> dict[str, int]:
    """Periodic: start fallbacks past their deadline, re-queue due retries, close dead sends."""
    return services.sweep()
