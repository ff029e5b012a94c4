from __future__ import annotations

from datetime import timedelta

from celery import shared_task

from apps.sync import conf, push, services


@shared_task(acks_late=True)
def prune_feed() -> int:
    """Periodic: drop feed entries older than the retention (their cursors then get 410)."""
    return services.feed_prune(older_than=timedelta(days=conf.FEED_RETENTION_DAYS))


@shared_task(acks_late=True)
def apply_stranded_mutations() -> int:
    """Periodic: apply mutations stored but never applied (the server died mid-batch and the
    device did not come back). Idempotent: the ledger applies each mutation once."""
    return push.apply_stranded(older_than=timedelta(minutes=1))
