from __future__ import annotations

from django.apps import AppConfig


class DispatchConfig(AppConfig):
    name = "apps.dispatch"
    label = "dispatch"

    def ready(self) -> None:
        # Crews acknowledge and check in over their websocket as well as over REST.
        from apps.dispatch import handlers

        handlers.register_all()
