"""Writes that reach connected devices."""

from __future__ import annotations

import logging
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from apps.sync.scopes import feed_group_name, user_scope

logger = logging.getLogger(__name__)


def refresh_device_scopes(*, user_id: UUID) -> None:
    """Every open socket of this user re-reads which scopes it may see, after commit.

    Call it inside the transaction that changed what the user may see (joined or left a
    unit, gained or lost a program role). A socket that loses a scope stops receiving its
    entries at once and is told which scopes it lost, so the device can drop their records
    (P5); one that gains a scope starts receiving its new entries.
    """
    transaction.on_commit(lambda: _tell_sockets(user_id))


def _tell_sockets(user_id: UUID) -> None:
    channel_layer = get_channel_layer()
    if channel_layer is None:
        return
    # Every socket of the user has joined its user scope's feed group.
    try:
        async_to_sync(channel_layer.group_send)(feed_group_name(user_scope(user_id)), {"type": "scopes.changed"})
    except Exception:
        # Sent after commit: the change stands, and each socket's next feed read (a nudge, the
        # safety poll) finds the user's scopes as stored. Raised, it would make the committed
        # change look failed to whoever made it.
        logger.exception("scope change of user %s could not be told to their sockets", user_id)
