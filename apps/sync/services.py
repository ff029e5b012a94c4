"""Writes to the change feed. Domain services call these inside their own transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from apps.sync.models import ChangeEntry, ChangeOperation
from apps.sync.scopes import feed_group_name


def record_change(
    *,
    program_id: UUID,
    record_type: str,
    record_id: UUID,
    scopes: Iterable[str],
    data: dict[str, Any],
    operation: ChangeOperation = ChangeOperation.UPSERT,
    origin_device_id: UUID | None = None,
) -> list[ChangeEntry]:
    """Append a change to the feed of every scope that may see it.

    Must run inside the transaction that made the change: the entries commit (or roll
    back) with it, and connected devices are nudged only after the commit.
    """
    scopes = sorted(set(scopes))
    entries = ChangeEntry.objects.bulk_create(
        [
            ChangeEntry(
                program_id=program_id,
                scope=scope,
                record_type=record_type,
                record_id=record_id,
                operation=operation,
                data=data,
                origin_device_id=origin_device_id,
            )
            for scope in scopes
        ]
    )
    transaction.on_commit(lambda: nudge_scopes(scopes))
    return entries


def nudge_scopes(scopes: Iterable[str]) -> None:
    """Tell connected devices reading these scopes to pull. Carries no data: a lost nudge
    delays a device until its next pull, it never loses a change."""
    channel_layer = get_channel_layer()
    if channel_layer is None:
        return
    send = async_to_sync(channel_layer.group_send)
    for scope in scopes:
        send(feed_group_name(scope), {"type": "feed.nudge"})
