from __future__ import annotations

from django.apps import AppConfig


class SyncConfig(AppConfig):
    name = "apps.sync"
    label = "sync"

    def ready(self) -> None:
        from apps.accounts.services import on_access_change
        from apps.common.resealing import register_reseal_hook
        from apps.sync.services import reseal_stored_copies, user_scopes_refresh_by_id

        # A user who left a unit or lost a role is told to drop what they may no longer
        # see; one who joined or gained one gets it.
        on_access_change(user_scopes_refresh_by_id)
        # Key rotation (reseal_health_information) also reseals sync's JSON copies of records.
        register_reseal_hook(reseal_stored_copies)
