from __future__ import annotations

from django.apps import AppConfig


class DispatchConfig(AppConfig):
    name = "apps.dispatch"
    label = "dispatch"

    def ready(self) -> None:
        # Crews acknowledge and check in over their websocket as well as over REST.
        from apps.audit.registry import register_health_record
        from apps.dispatch import handlers, sync
        from apps.dispatch.models import Assignment, Incident
        from apps.dispatch.services import ASSIGNMENT_RECORD, INCIDENT_RECORD
        from apps.sync import registry as sync_registry

        handlers.register_all()
        # Status times a crew recorded offline arrive with the rest of the tablet's outbox.
        sync.register_synced_types()
        # A call's callback number, address and nature are health information: reading an
        # incident (or an assignment, which carries its incident) is audited like a note.
        register_health_record(INCIDENT_RECORD, Incident)
        register_health_record(ASSIGNMENT_RECORD, Assignment)
        # The same fields travel in the change feed, so its stored copies seal them too, as
        # they do a dispatcher's and a crew's reasons, sealed in their own columns.
        sync_registry.declare_health_fields(
            "nature", "callback_number", "unserved_note", "address", "override_reason", "end_reason"
        )
