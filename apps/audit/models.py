from __future__ import annotations

from django.db import models


class AccessAction(models.TextChoices):
    READ = "read", "Read"
    CREATE = "create", "Create"
    UPDATE = "update", "Update"
    DELETE = "delete", "Delete"
    EXPORT = "export", "Export"


class AccessChannel(models.TextChoices):
    API = "api", "REST API"
    WEBSOCKET = "websocket", "Websocket"
    SYNC = "sync", "Offline sync"
    ADMIN = "admin", "Admin"
    TASK = "task", "Background task"


class AuditEvent(models.Model):
    """Who read or wrote which health record, when, from where (DESIGN.md P8).

    Append-only: a database trigger refuses UPDATE and DELETE, except the retention purge.
    The actor is kept by id and name, not by foreign key, so the trail outlives the account.
    """

    id = models.BigAutoField(primary_key=True)
    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor_id = models.UUIDField(null=True, blank=True, db_index=True)
    actor_username = models.CharField(max_length=150, blank=True)
    device_id = models.UUIDField(null=True, blank=True)
    program_id = models.UUIDField(null=True, blank=True)
    action = models.CharField(max_length=16, choices=AccessAction.choices)
    channel = models.CharField(max_length=16, choices=AccessChannel.choices)
    record_type = models.CharField(max_length=64)
    record_id = models.UUIDField()
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["record_type", "record_id", "occurred_at"], name="audit_record_history")]

    def __str__(self) -> str:
        return f"{self.actor_username or 'system'} {self.action} {self.record_type} {self.record_id}"
