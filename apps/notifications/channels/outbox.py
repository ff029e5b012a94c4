"""The no-account backends: write what would be sent to a local folder, or log ids only."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.notifications.channels.base import Message, PushTarget, SendResult

logger = logging.getLogger(__name__)


def _write(channel: str, message: Message, record: dict[str, Any]) -> SendResult:
    folder = Path(settings.NOTIFICATIONS_OUTBOX_DIR) / channel
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{message.attempt_id}.json"
    # One file per attempt: a retried send overwrites, it does not add a second message.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"channel": channel, "notification_id": message.notification_id, **record}, indent=1))
    tmp.replace(path)
    return SendResult.sent(f"outbox:{channel}/{path.name}")


class OutboxPushBackend:
    def send(self, target: PushTarget, message: Message) -> SendResult:
        return _write(
            f"push-{target.provider}",
            message,
            {"title": "Tandem", "body": message.text, "data": message.data(), "urgency": message.urgency},
        )


class OutboxSmsBackend:
    def send(self, address: str, message: Message) -> SendResult:
        return _write("sms", message, {"to": address, "body": message.sms_body()})


class OutboxEmailBackend:
    def send(self, address: str, message: Message) -> SendResult:
        return _write(
            "email", message, {"to": address, "subject": message.email_subject(), "body": message.email_body()}
        )


class ConsolePushBackend:
    def send(self, target: PushTarget, message: Message) -> SendResult:
        logger.info(
            "push (%s) notification=%s attempt=%s", target.provider, message.notification_id, message.attempt_id
        )
        return SendResult.sent("console")


class ConsoleAddressBackend:
    def __init__(self, channel: str) -> None:
        self.channel = channel

    def send(self, address: str, message: Message) -> SendResult:
        logger.info("%s notification=%s attempt=%s", self.channel, message.notification_id, message.attempt_id)
        return SendResult.sent("console")
