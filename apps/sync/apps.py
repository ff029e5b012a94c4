from __future__ import annotations

from django.apps import AppConfig


class SyncConfig(AppConfig):
    name = "apps.sync"
    label = "sync"

    def ready(self) -> None:
        from apps.common.resealing import register_reseal_hook
        from apps.sync.services import reseal_stored_copies, user_scopes_refresh_by_id
        from apps.teams.services import on_crew_change

        # A member who left a unit is told to drop its records; one who joined gets them.
        on_crew_change(user_scopes_refresh_by_id)
        # Key rotation (reseal_health_information) also reseals sync's JSON copies of records.
        register_reseal_hook(reseal_stored_copies)
