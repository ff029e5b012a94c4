"""Health records opened or listed in the admin are reads like any other (DESIGN.md P8)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


def log_admin_action(request: HttpRequest, *, description: str, logged: Sequence[Model]) -> None:
    """A write made from the admin (a form on the timeline, a bulk action), in the admin's own
    history: a log entry on each record the action was taken on says what was done in words
    (ids only, never the text written).

    Who wrote which health record is in the audit trail already: the domain service that made
    the write recorded it with the accessor passed to it, in the write's transaction (P8)."""
    if logged and isinstance(request.user, User):
        LogEntry.objects.log_actions(
            user_id=request.user.pk,
            queryset=logged,
            action_flag=CHANGE,
            change_message=description,
            single_object=False,
        )
