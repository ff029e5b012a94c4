"""Health records opened or listed in the admin are reads like any other (DESIGN.md P8)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.admin.models import CHANGE, LogEntry
from django.db.models import Model
from django.http import HttpRequest

from apps.accounts.models import User
from apps.audit import registry as health_records
from apps.audit.models import AccessAction, AccessChannel
from apps.audit.services import Accessor, record_access
from apps.sync import audit as sync_audit
from apps.sync import registry
from apps.sync.models import Conflict, Mutation


def health_record_type(model: type[Model]) -> str | None:
    """The audit name of a model holding health information, or None for other models."""
    for synced_type in registry.all_types():
        if synced_type.model is model:
            return synced_type.name
    return health_records.health_record_type_of(model)


def record_admin_reads(request: HttpRequest, model: type[Model], records: Iterable[Any]) -> None:
    accessor = Accessor.from_request(request, AccessChannel.ADMIN)
    if model is Mutation or model is Conflict:
        sync_audit.record_kept_copy_reads(accessor=accessor, kept=records)
        return
    record_type = health_record_type(model)
    record_ids = [record.pk for record in records]
    if record_type is not None and record_ids:
        record_access(accessor=accessor, action=AccessAction.READ, record_type=record_type, record_ids=record_ids)


def record_admin_action(
    request: HttpRequest,
    *,
    record_type: str,
    record_ids: list[Any],
    action: AccessAction,
    description: str,
    program_id: Any = None,
    logged: list[Model] | None = None,
) -> None:
    """A write made from the admin (a form on the timeline, a bulk action), in the audit trail.

    The audit event says who wrote which health record, when and from where (P8); the admin's
    own log entry, on the record the action was taken on, says what was done in words (ids
    only, never the text written)."""
    if record_ids:
        record_access(
            accessor=Accessor.from_request(request, AccessChannel.ADMIN),
            action=action,
            record_type=record_type,
            record_ids=record_ids,
            program_id=program_id,
        )
    if logged and isinstance(request.user, User):
        LogEntry.objects.log_actions(
            user_id=request.user.pk,
            queryset=logged,
            action_flag=CHANGE,
            change_message=description,
            single_object=False,
        )
