from __future__ import annotations

from django.apps import AppConfig


class SyncConfig(AppConfig):
    name = "apps.sync"
    label = "sync"

    def ready(self) -> None:
        from apps.sync.services import user_scopes_refresh_by_id
        from apps.teams.services import on_crew_change

        # A member who left a unit is told to drop its records; one who joined gets them.
        on_crew_change(user_scopes_refresh_by_id)
