"""In-app delivery over the device's websocket, through the channel layer.

The channel layer delivers at most once and only to sockets open right now, so a send here
means "handed to the layer"; the device's receipt says it arrived.
"""

from __future__ import annotations

from collections.abc import Sequence

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from apps.accounts.services import device_group_name
from apps.notifications.channels.base import Message, SendResult


def send_in_app_many(sends: Sequence[tuple[object, Message]]) -> list[SendResult]:
    """Hand each (device, message) to the device's group; one event loop hop for the whole chunk."""
    if not sends:
        return []
    channel_layer = get_channel_layer()
    if channel_layer is None:
        return [SendResult.failed("in_app: no channel layer configured") for _ in sends]

    async def send_all() -> list[SendResult]:
        results = []
        for device_id, message in sends:
            try:
                await channel_layer.group_send(
                    device_group_name(device_id), {"type": "realtime.event", "payload": message.in_app_payload()}
                )
            except OSError as error:
                results.append(SendResult.retry(f"in_app: {type(error).__name__}"))
            else:
                results.append(SendResult.sent())
        return results

    return async_to_sync(send_all)()
