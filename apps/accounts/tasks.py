from __future__ import annotations

from celery import shared_task
from django.conf import settings

from apps.accounts import services


@shared_task(acks_late=True)
def revoke_unseen_devices() -> int:
    """Periodic: a device nobody has used for a long time is treated as lost."""
    return services.devices_revoke_unseen(unseen_for_days=settings.DEVICE_REVOKE_UNSEEN_DAYS)


@shared_task(acks_late=True)
def prune_rotated_tokens() -> int:
    """Periodic: the rows of tokens rotated away long ago are deleted."""
    return services.device_tokens_prune()


@shared_task(acks_late=True)
def clear_ended_sessions() -> None:
    """Periodic: the rows of admin sessions that have ended (signed out by their idle timeout,
    which leaves the row) are deleted; a session is only ever read while it lasts."""
    services.sessions_clear_ended()
