"""Recording access to health information. Every read and write of a person, encounter,
note or referral goes through `record_access`, in the same transaction as the write."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
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
    events = [
        AuditEvent(
            actor_id=accessor.user.pk if accessor.user else None,
            actor_username=accessor.user.get_username() if accessor.user else "",
            device_id=accessor.device_id,
            program_id=program_id,
            action=action,
            channel=accessor.channel,
            record_type=record_type,
            record_id=record_id,
            ip_address=accessor.ip_address,
        )
        for record_id in record_ids
    ]
    # One statement however many records (a sync push audits hundreds at once).
    bulk.insert(events)
    return len(events)


@transaction.atomic
def purge_expired(*, retention_days: int) -> int:
    """Delete audit events past their retention; the only deletion the trigger allows."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL tandem.audit_purge = 'on'")
    deleted, _ = AuditEvent.objects.filter(occurred_at__lt=timezone.now() - timedelta(days=retention_days)).delete()
    return deleted
