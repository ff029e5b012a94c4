"""Receipts over the websocket: the same rule as the REST endpoint, for an app that is open.

client → {"type": "notification.receipt", "id": "<notification id>", "status": "delivered"}
server → {"type": "notification.receipt.ok", "id": "<notification id>", "status": "delivered"}
"""

from __future__ import annotations

import uuid
from typing import Any

from apps.accounts.models import DeviceToken
from apps.notifications import services
from apps.realtime.handlers import HandlerError

RECEIPT_STATUSES = ("delivered", "opened", "acknowledged")


def handle_receipt(token: DeviceToken, message: dict[str, Any]) -> dict[str, Any]:
    raw_id = message.get("id")
    try:
        notification_id = uuid.UUID(raw_id) if isinstance(raw_id, str) else None
    except ValueError:
        notification_id = None
    if notification_id is None:
        raise HandlerError("invalid_message", "'id' must be a notification id.", field="id")
    status = message.get("status")
    if status not in RECEIPT_STATUSES:
        raise HandlerError("invalid_message", f"'status' is one of {', '.join(RECEIPT_STATUSES)}.", field="status")
    try:
        services.receipt_record(notification_id=notification_id, device=token.device, status=status)
    except services.NotificationNotFound:
        raise HandlerError("not_found", "Not found.", field="id") from None
    return {"type": "notification.receipt.ok", "id": str(notification_id), "status": status}
