from __future__ import annotations

import pytest

from apps.accounts.models import Program, Role
from apps.care.models import Encounter
from apps.common.api.errors import DomainError
from apps.sync.models import ChangeEntry, Conflict, RecordVersion
from apps.sync.services import conflict_resolve
from tests.accounts.factories import ProgramFactory
from tests.care.factories import encounter, pushed
from tests.conftest import CrewMember, make_crew_member


def conflict_on_assessment(member: CrewMember) -> Conflict:
    teammate = make_crew_member(member.unit.program, unit=member.unit)
    record_id = encounter(member, assessment="Calm, oriented.")
    pushed(member, "care.encounter", {"assessment": "Agitated."}, op="update", record_id=record_id, base_version=1)
    late = pushed(teammate, "care.encounter", {"assessment": "Calm."}, op="update", record_id=record_id, base_version=1)
    assert late["status"] == "conflict"
    return Conflict.objects.get(record_id=record_id)


def test_taking_the_devices_value_writes_it_through_the_publish_path_and_says_who_and_when(
    program: Program, crew_member: CrewMember
) -> None:
    conflict = conflict_on_assessment(crew_member)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user
    versions_before = RecordVersion.objects.filter(record_id=conflict.record_id).count()

    resolved = conflict_resolve(conflict=conflict, choice="device", resolved_by=manager)

    assert Encounter.objects.get(pk=conflict.record_id).assessment == "Calm."
    assert (resolved.resolved_by, resolved.resolution) == (manager, "Take the device's value")
    assert resolved.resolved_at is not None
    latest = RecordVersion.objects.filter(record_id=conflict.record_id).order_by("-version").first()
    assert latest is not None
    assert RecordVersion.objects.filter(record_id=conflict.record_id).count() == versions_before + 1
    assert (latest.user, latest.data["assessment"]) == (manager, "Calm.")
    assert ChangeEntry.objects.filter(record_id=conflict.record_id, version=latest.version).exists()


def test_keeping_the_servers_value_changes_nothing_but_the_conflict(program: Program, crew_member: CrewMember) -> None:
    conflict = conflict_on_assessment(crew_member)
    manager = make_crew_member(program, role=Role.SUPERVISOR).user
    versions_before = RecordVersion.objects.filter(record_id=conflict.record_id).count()

    conflict_resolve(conflict=conflict, choice="server", resolved_by=manager)

    assert Encounter.objects.get(pk=conflict.record_id).assessment == "Agitated."
    assert RecordVersion.objects.filter(record_id=conflict.record_id).count() == versions_before
    assert Conflict.objects.get(pk=conflict.pk).resolved_by == manager


def test_a_resolved_conflict_is_not_resolved_again(program: Program, crew_member: CrewMember) -> None:
    conflict = conflict_on_assessment(crew_member)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user
    conflict_resolve(conflict=conflict, choice="server", resolved_by=manager)

    with pytest.raises(DomainError) as refused:
        conflict_resolve(conflict=conflict, choice="device", resolved_by=manager)

    assert refused.value.code == "conflict_resolved"
    assert Encounter.objects.get(pk=conflict.record_id).assessment == "Agitated."


def test_a_bad_choice_is_refused_naming_the_field(program: Program, crew_member: CrewMember) -> None:
    conflict = conflict_on_assessment(crew_member)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    with pytest.raises(DomainError) as refused:
        conflict_resolve(conflict=conflict, choice="both", resolved_by=manager)

    assert (refused.value.field, refused.value.status_code) == ("choice", 400)
    assert Conflict.objects.get(pk=conflict.pk).is_open


def test_the_outsider_and_field_crew_cannot_resolve(program: Program, crew_member: CrewMember) -> None:
    conflict = conflict_on_assessment(crew_member)
    outsider = make_crew_member(ProgramFactory.create(slug="boston-pilot"), role=Role.CASE_MANAGER).user

    for stranger in (outsider, crew_member.user):
        with pytest.raises(DomainError) as refused:
            conflict_resolve(conflict=conflict, choice="device", resolved_by=stranger)
        assert refused.value.status_code == 404

    assert Conflict.objects.get(pk=conflict.pk).is_open
    assert Encounter.objects.get(pk=conflict.record_id).assessment == "Agitated."
