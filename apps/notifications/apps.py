from __future__ import annotations

import logging

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "apps.notifications"
    label = "notifications"

    def ready(self) -> None:
        from apps.notifications.handlers import handle_receipt
        from apps.realtime.handlers import register

        register("notification.receipt", handle_receipt)
        # httpx logs every request URL at INFO, and an APNs URL ends in the device's push
        # token: keep tokens out of the logs.
        logging.getLogger("httpx").setLevel(logging.WARNING)
