from __future__ import annotations

from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "apps.realtime"
    label = "realtime"

    def ready(self) -> None:
        from apps.accounts.services import on_access_change
        from apps.realtime.services import refresh_device_scopes

        # Open sockets follow their user's crews and roles at once, not at the next reconnect.
        on_access_change(lambda user_id: refresh_device_scopes(user_id=user_id))
