from __future__ import annotations

from django.apps import AppConfig


class CareConfig(AppConfig):
    name = "apps.care"
    label = "care"

    def ready(self) -> None:
        # Tell the sync mechanism which care records devices sync, and how.
        from apps.care import sync

        sync.register_synced_types()
