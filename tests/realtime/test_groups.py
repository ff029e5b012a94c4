"""The channel layer's groups, as the device sockets use them."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any
from unittest import mock

from channels.layers import get_channel_layer
from django.conf import settings

from apps.sync.scopes import feed_group_name, unit_scope


def test_a_socket_open_for_days_is_still_nudged() -> None:
    """A socket lives as long as its token, up to DEVICE_TOKEN_TTL_DAYS (a tablet mounted in a
    response vehicle stays connected across shifts). The channel layer dropped a socket from
    its groups a day after it joined them: from then on no offer to its crew was nudged to
    it (only the safety poll found it, up to FEED_SAFETY_POLL_SECONDS late), and no word of
    a revocation or a change of crew reached it."""
    group = feed_group_name(unit_scope(uuid.uuid4()))
    lifetime = timedelta(days=settings.DEVICE_TOKEN_TTL_DAYS) - timedelta(minutes=1)

    async def nudge_after_a_long_connection() -> Any:
        layer = get_channel_layer()
        assert layer is not None
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        try:
            # The layer's clock, as it will read when the socket has been open that long.
            with mock.patch("channels_redis.core.time.time", return_value=time.time() + lifetime.total_seconds()):
                await layer.group_send(group, {"type": "feed.nudge"})
            return await asyncio.wait_for(layer.receive(channel), timeout=2)
        finally:
            await layer.group_discard(group, channel)

    assert asyncio.run(nudge_after_a_long_connection()) == {"type": "feed.nudge"}
