from __future__ import annotations

from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "apps.realtime"
    label = "realtime"

    def ready(self) -> None:
        from apps.realtime.services import refresh_device_scopes
        from apps.teams.services import on_crew_change

        # Open sockets follow their user's crews at once, not at the next reconnect.
        on_crew_change(lambda user_id: refresh_device_scopes(user_id=user_id))
