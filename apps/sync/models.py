from __future__ import annotations

from django.db import models
from django.db.models.expressions import RawSQL

from apps.accounts.models import Program


class ChangeOperation(models.TextChoices):
    UPSERT = "upsert", "Created or changed"
    REMOVE = "remove", "Removed from this scope (deleted, or no longer visible)"


class ChangeEntry(models.Model):
    """One change to a record, addressed to one scope (a unit, a user, a program's staff).

    The feed is ordered by (transaction_id, id). Entries are served only once every
    transaction that could still add an earlier entry has finished, so a pull from a
    cursor never skips a change that commits late (DESIGN.md P4).
    """

    id = models.BigAutoField(primary_key=True)
    # The writing transaction's 64-bit id (xid8 as bigint), assigned by PostgreSQL.
    transaction_id = models.BigIntegerField(db_default=RawSQL("pg_current_xact_id()::text::bigint", []))
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    scope = models.CharField(max_length=80)
    record_type = models.CharField(max_length=64)
    record_id = models.UUIDField()
    operation = models.CharField(max_length=8, choices=ChangeOperation.choices)
    data = models.JSONField(default=dict)
    # Which device made the change, so its own writes are not sent back to it as news.
    origin_device_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["scope", "transaction_id", "id"], name="change_entry_scope_order"),
        ]

    def __str__(self) -> str:
        return f"{self.record_type} {self.record_id} {self.operation} → {self.scope}"
