"""Recording access to health information. Every read and write of a person, encounter,
note or referral goes through `record_access`, in the same transaction as the write."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from apps.accounts.models import DeviceToken, User
from apps.audit.models import AccessAction, AccessChannel, AuditEvent
from apps.common import bulk


@dataclass(frozen=True)
class Accessor:
    """Who is acting, through what: taken from the request, socket or task at the edge."""

    user: User | None
    device_id: UUID | None
    channel: AccessChannel
    ip_address: str | None = None

    @classmethod
    def from_request(cls, request: object, channel: AccessChannel = AccessChannel.API) -> Accessor:
        user = getattr(request, "user", None)
        token = getattr(request, "auth", None)
        meta = getattr(request, "META", {})
        return cls(
            user=user if isinstance(user, User) else None,
            device_id=token.device_id if isinstance(token, DeviceToken) else None,
            channel=channel,
            ip_address=meta.get("REMOTE_ADDR"),
        )

    @classmethod
    def from_token(cls, token: DeviceToken, channel: AccessChannel) -> Accessor:
        return cls(user=token.device.user, device_id=token.device_id, channel=channel)


def record_access(
    *,
    accessor: Accessor,
    action: AccessAction,
    record_type: str,
    record_ids: Iterable[UUID],
    program_id: UUID | None = None,
) -> int:
    record_ids = list(record_ids)
    if not record_ids:
        return 0
    # One statement however many records (a sync push audits hundreds at once): what the
    # events share is bound once, the record ids as one array.
    with bulk.server_cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditevent (occurred_at, actor_id, actor_username, device_id, program_id, action,"
            " channel, record_type, record_id, ip_address)"
            " SELECT %s::timestamptz, %s::uuid, %s::text, %s::uuid, %s::uuid, %s::text, %s::text, %s::text,"
            " r.record_id, %s::inet"
            " FROM unnest(%b::uuid[]) AS r(record_id)",
            [
                timezone.now(),
                accessor.user.pk if accessor.user else None,
                accessor.user.get_username() if accessor.user else "",
                accessor.device_id,
                program_id,
                str(action),
                str(accessor.channel),
                record_type,
                accessor.ip_address,
                record_ids,
            ],
        )
    return len(record_ids)


def record_access_to(*, accessor: Accessor, action: AccessAction, record_type: str, record: Any) -> int:
    """``record_access`` for one record of a program (a model with ``program_id``): the write
    a domain service just made, or for a retry that wrote nothing, its read."""
    return record_access(
        accessor=accessor, action=action, record_type=record_type, record_ids=[record.pk], program_id=record.program_id
    )


# What lets a transaction delete audit events past the append-only trigger (migration 0002).
ALLOW_PURGE_SQL = "SET LOCAL tandem.audit_purge = 'on'"


@transaction.atomic
def purge_expired(*, retention_days: int) -> int:
    """Delete audit events past their retention; the only deletion the trigger allows."""
    with connection.cursor() as cursor:
        cursor.execute(ALLOW_PURGE_SQL)
    deleted, _ = AuditEvent.objects.filter(occurred_at__lt=timezone.now() - timedelta(days=retention_days)).delete()
    return deleted
