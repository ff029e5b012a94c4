from __future__ import annotations

from django.apps import AppConfig


class CareConfig(AppConfig):
    name = "apps.care"
    label = "care"

    def ready(self) -> None:
        # Tell the sync mechanism which care records devices sync, and how.
        from apps.audit.registry import register_health_record
        from apps.care import services, sync
        from apps.care.models import ReferralTaskEvent

        sync.register_synced_types()
        # Not synced, but a service's reason for refusing a referral often says why clinically:
        # reading or moving a referral's task events is audited.
        register_health_record(services.TASK_EVENT_RECORD, ReferralTaskEvent)
