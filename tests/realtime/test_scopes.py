from __future__ import annotations

import uuid

import pytest
from django.db import transaction

from apps.accounts.models import Program
from apps.realtime.services import refresh_device_scopes
from apps.sync import services
from apps.sync.scopes import unit_scope
from apps.teams.models import UnitMember
from tests.conftest import CrewMember, make_crew_member
from tests.live import AsgiServer
from tests.realtime.client import authenticated_socket, receive, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def note_for(member: CrewMember) -> str:
    record_id = uuid.uuid4()
    with transaction.atomic():
        services.record_change(
            program_id=member.unit.program_id,
            record_type="test.note",
            record_id=record_id,
            scopes=[unit_scope(member.unit.pk)],
            data={},
        )
    return str(record_id)


def test_a_member_moved_to_another_unit_follows_the_new_unit_only(
    asgi: AsgiServer, program: Program, crew_member: CrewMember
) -> None:
    old_unit = crew_member.unit
    new_crew = make_crew_member(program)
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        assert receive(socket)["entries"] == []

        with transaction.atomic():
            UnitMember.objects.filter(user=crew_member.user, unit=old_unit).update(unit=new_crew.unit)
            refresh_device_scopes(user_id=crew_member.user.pk)
        changed = receive(socket)
        assert changed == {
            "type": "scopes.changed",
            "removed": [unit_scope(old_unit.pk)],
            "added": [unit_scope(new_crew.unit.pk)],
        }

        note_for(crew_member)  # the old unit: no longer theirs
        new_note = note_for(new_crew)
        message = receive(socket)

    assert [entry["id"] for entry in message["entries"]] == [new_note]
