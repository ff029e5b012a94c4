from __future__ import annotations

from celery import shared_task

from apps.dispatch import services


@shared_task(acks_late=True)
def sweep_deadlines() -> dict[str, int]:
    """Periodic (every few seconds, from beat): act on overdue acknowledgements and missed
    check-ins. Safe to run twice at once or again after a crash: the due rows are claimed in
    the database (see services.sweep_deadlines)."""
    return services.sweep_deadlines().as_dict()
