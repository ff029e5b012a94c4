from __future__ import annotations

from celery import shared_task
from django.conf import settings

from apps.audit import services


@shared_task
def purge_expired_audit_events() -> int:
    return services.purge_expired(retention_days=settings.AUDIT_RETENTION_DAYS)
