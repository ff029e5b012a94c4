from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.audit.models import AccessAction, AccessChannel, AuditEvent
from apps.audit.services import Accessor, purge_expired, record_access
from tests.conftest import CrewMember

pytestmark = pytest.mark.django_db


def accessor_of(member: CrewMember) -> Accessor:
    return Accessor(user=member.user, device_id=member.device.pk, channel=AccessChannel.API, ip_address="10.0.0.7")


def test_access_is_recorded_with_who_what_and_from_which_device(crew_member: CrewMember) -> None:
    record_ids = [uuid.uuid4(), uuid.uuid4()]

    count = record_access(
        accessor=accessor_of(crew_member), action=AccessAction.READ, record_type="care.encounter", record_ids=record_ids
    )

    assert count == 2
    events = list(
        AuditEvent.objects.order_by("id").values("actor_id", "device_id", "action", "record_id", "ip_address")
    )
    assert events == [
        {
            "actor_id": crew_member.user.pk,
            "device_id": crew_member.device.pk,
            "action": "read",
            "record_id": record_id,
            "ip_address": "10.0.0.7",
        }
        for record_id in record_ids
    ]


def test_audit_events_cannot_be_changed_or_deleted(crew_member: CrewMember) -> None:
    record_access(
        accessor=accessor_of(crew_member),
        action=AccessAction.UPDATE,
        record_type="care.note",
        record_ids=[uuid.uuid4()],
    )

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.update(actor_username="someone else")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.all().delete()

    assert AuditEvent.objects.get().actor_username == crew_member.user.username


def test_retention_purge_removes_only_expired_events(crew_member: CrewMember) -> None:
    record_access(
        accessor=accessor_of(crew_member), action=AccessAction.READ, record_type="care.note", record_ids=[uuid.uuid4()]
    )
    fresh_id = uuid.uuid4()
    record_access(
        accessor=accessor_of(crew_member), action=AccessAction.READ, record_type="care.note", record_ids=[fresh_id]
    )
    oldest = AuditEvent.objects.order_by("id").first()
    assert oldest is not None
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(
            "UPDATE audit_auditevent SET occurred_at = %s WHERE id = %s",
            [timezone.now() - timedelta(days=400), oldest.pk],
        )
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")

    deleted = purge_expired(retention_days=365)

    assert deleted == 1
    assert list(AuditEvent.objects.values_list("record_id", flat=True)) == [fresh_id]
