from __future__ import annotations

import uuid

import pytest
from django.db import transaction

from apps.accounts.models import Program
from apps.sync import services as sync_services
from apps.sync.models import ChangeEntry
from apps.sync.scopes import unit_scope, user_scope
from apps.teams import services
from apps.teams.models import UnitMember
from tests.conftest import CrewMember, make_crew_member
from tests.live import AsgiServer
from tests.realtime.client import authenticated_socket, receive, send
from tests.sync.helpers import SimDevice, encounter_fields

pytestmark = pytest.mark.django_db(transaction=True)


def test_leaving_a_unit_tells_the_members_devices_to_drop_its_records_at_once(crew_member: CrewMember) -> None:
    writer = SimDevice(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    record_id = uuid.uuid4()
    writer.push(writer.mutation("create", "care.encounter", record_id, encounter_fields(writer.member)))
    SimDevice(crew_member).pull()  # the member's devices have the record and a scope state

    assert services.unit_member_remove(unit=crew_member.unit, user=crew_member.user) is True

    removal = ChangeEntry.objects.get(scope=user_scope(crew_member.user.pk), record_id=record_id)
    assert removal.operation == "remove"
    assert not UnitMember.objects.filter(unit=crew_member.unit, user=crew_member.user).exists()


def test_joining_a_unit_again_is_idempotent(crew_member: CrewMember) -> None:
    first = services.unit_member_add(unit=crew_member.unit, user=crew_member.user)

    assert UnitMember.objects.filter(unit=crew_member.unit, user=crew_member.user).count() == 1
    assert first.unit_id == crew_member.unit.pk


@pytest.mark.live
def test_a_connected_device_follows_its_user_into_a_new_unit(
    asgi: AsgiServer, program: Program, crew_member: CrewMember
) -> None:
    new_crew = make_crew_member(program)
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        assert receive(socket)["entries"] == []

        services.unit_member_add(unit=new_crew.unit, user=crew_member.user)

        changed = receive(socket)
        assert changed == {"type": "scopes.changed", "removed": [], "added": [unit_scope(new_crew.unit.pk)]}
        record_id = uuid.uuid4()
        with transaction.atomic():
            sync_services.record_change(
                program_id=program.pk,
                record_type="test.note",
                record_id=record_id,
                scopes=[unit_scope(new_crew.unit.pk)],
                data={},
            )
        assert str(record_id) in [entry["id"] for entry in receive(socket)["entries"]]
