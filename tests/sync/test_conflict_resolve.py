from __future__ import annotations

import uuid

import pytest
from django.db import connection, transaction

from apps.accounts.models import Program, Role
from apps.care.models import ClinicalNote, Encounter
from apps.care.services import encounter_reassign
from apps.common.api.errors import DomainError
from apps.sync.models import ChangeEntry, Conflict, RecordVersion, SyncedRecord
from apps.sync.selectors import open_conflicts_visible_to
from apps.sync.services import WrittenSinceTransactionBegan, conflict_resolve, lock_records, publish_record
from apps.teams.models import UnitMember
from tests.accounts.factories import ProgramFactory, device_with_token
from tests.care.factories import encounter, pushed
from tests.conftest import CrewMember, in_the_admin, make_crew_member
from tests.sync.helpers import SimDevice, now_iso, run_while_another_writer_holds
from tests.teams.factories import UnitFactory


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

    resolved = conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))

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

    conflict_resolve(conflict=conflict, choice="server", resolved_by=manager, accessor=in_the_admin(manager))

    assert Encounter.objects.get(pk=conflict.record_id).assessment == "Agitated."
    assert RecordVersion.objects.filter(record_id=conflict.record_id).count() == versions_before
    assert Conflict.objects.get(pk=conflict.pk).resolved_by == manager


def test_a_resolved_conflict_is_not_resolved_again(program: Program, crew_member: CrewMember) -> None:
    conflict = conflict_on_assessment(crew_member)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user
    conflict_resolve(conflict=conflict, choice="server", resolved_by=manager, accessor=in_the_admin(manager))

    with pytest.raises(DomainError) as refused:
        conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))

    assert refused.value.code == "conflict_resolved"
    assert Encounter.objects.get(pk=conflict.record_id).assessment == "Agitated."


def test_a_bad_choice_is_refused_naming_the_field(program: Program, crew_member: CrewMember) -> None:
    conflict = conflict_on_assessment(crew_member)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    with pytest.raises(DomainError) as refused:
        conflict_resolve(conflict=conflict, choice="both", resolved_by=manager, accessor=in_the_admin(manager))

    assert (refused.value.field, refused.value.status_code) == ("choice", 400)
    assert Conflict.objects.get(pk=conflict.pk).is_open


def test_the_outsider_and_field_crew_cannot_resolve(program: Program, crew_member: CrewMember) -> None:
    conflict = conflict_on_assessment(crew_member)
    outsider = make_crew_member(ProgramFactory.create(slug="boston-pilot"), role=Role.CASE_MANAGER).user

    for stranger in (outsider, crew_member.user):
        with pytest.raises(DomainError) as refused:
            conflict_resolve(conflict=conflict, choice="device", resolved_by=stranger, accessor=in_the_admin(stranger))
        assert refused.value.status_code == 404

    assert Conflict.objects.get(pk=conflict.pk).is_open
    assert Encounter.objects.get(pk=conflict.record_id).assessment == "Agitated."


def test_the_devices_value_is_not_taken_over_a_value_written_since_the_conflict(
    program: Program, crew_member: CrewMember
) -> None:
    conflict = conflict_on_assessment(crew_member)  # "Agitated." against the device's "Calm."
    newer = "Agitated; calmer after 20 minutes, safety plan made."
    edit = pushed(
        crew_member, "care.encounter", {"assessment": newer}, op="update", record_id=conflict.record_id, base_version=2
    )
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    with pytest.raises(DomainError) as refused:
        conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))

    assert (edit["status"], refused.value.code, refused.value.field) == ("applied", "conflict_stale", "choice")
    assert Encounter.objects.get(pk=conflict.record_id).assessment == newer
    assert Conflict.objects.get(pk=conflict.pk).is_open
    # Keeping the server's value still closes it, and changes nothing.
    conflict_resolve(conflict=conflict, choice="server", resolved_by=manager, accessor=in_the_admin(manager))
    assert Encounter.objects.get(pk=conflict.record_id).assessment == newer


def test_the_devices_value_does_not_bring_back_a_record_deleted_since_the_conflict(
    program: Program, crew_member: CrewMember
) -> None:
    conflict = conflict_on_assessment(crew_member)
    deleted = pushed(crew_member, "care.encounter", {}, op="delete", record_id=conflict.record_id, base_version=2)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    with pytest.raises(DomainError) as refused:
        conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))

    assert (deleted["status"], refused.value.code) == ("applied", "record_deleted")
    head = SyncedRecord.objects.get(record_id=conflict.record_id)
    assert (head.is_deleted, head.version) == (True, deleted["version"])
    assert Encounter.objects.get(pk=conflict.record_id).is_deleted


def test_a_writer_off_the_crew_no_longer_reads_a_colleagues_value_in_their_own_conflict(
    program: Program, crew_member: CrewMember
) -> None:
    conflict = conflict_on_assessment(crew_member)  # the teammate's "Calm." met "Agitated."
    writer = conflict.user
    listed_before = [c.server_value for c in open_conflicts_visible_to(user=writer)]

    UnitMember.objects.filter(user=writer).delete()

    assert listed_before == ["Agitated."]
    assert list(open_conflicts_visible_to(user=writer)) == []
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user
    assert list(open_conflicts_visible_to(user=manager)) == [conflict]


def second_device_of(member: CrewMember) -> CrewMember:
    device, token = device_with_token(member.user, name="Second tablet")
    return CrewMember(member.user, member.unit, device, token)


def conflict_on_note_body(member: CrewMember) -> Conflict:
    """The note's author edits its draft on two tablets from the same version."""
    other_tablet = second_device_of(member)
    note_id = uuid.uuid4()
    pushed(member, "care.note", {"encounter_id": str(encounter(member)), "body": "Draft."}, record_id=note_id)
    pushed(member, "care.note", {"body": "Seen at home, calm."}, op="update", record_id=note_id, base_version=1)
    device_text = {"body": "Seen at home; voices, no plan."}
    late = pushed(other_tablet, "care.note", device_text, op="update", record_id=note_id, base_version=1)
    assert late["status"] == "conflict", late
    return Conflict.objects.get(record_id=note_id)


def test_a_case_manager_takes_the_devices_text_of_a_draft_note_its_author_wrote_on_two_tablets(
    program: Program, crew_member: CrewMember
) -> None:
    conflict = conflict_on_note_body(crew_member)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))

    note = ClinicalNote.objects.get(pk=conflict.record_id)
    assert (note.body, note.created_by) == ("Seen at home; voices, no plan.", crew_member.user)
    head = SyncedRecord.objects.get(record_id=conflict.record_id)
    assert head.data["body"] == "Seen at home; voices, no plan."
    assert RecordVersion.objects.get(record_id=conflict.record_id, version=head.version).user == manager
    assert ChangeEntry.objects.filter(record_id=conflict.record_id, version=head.version).exists()
    assert Conflict.objects.get(pk=conflict.pk).resolved_by == manager


def test_the_devices_text_of_a_note_signed_since_the_conflict_is_added_as_an_addendum_never_over_it(
    program: Program, crew_member: CrewMember
) -> None:
    conflict = conflict_on_note_body(crew_member)
    signed = pushed(
        crew_member, "care.note", {"signed_at": now_iso()}, op="update", record_id=conflict.record_id, base_version=2
    )
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    resolved = conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))

    note = ClinicalNote.objects.get(pk=conflict.record_id)
    assert (signed["status"], note.body, note.is_signed) == ("applied", "Seen at home, calm.", True)
    addendum = ClinicalNote.objects.get(amends=note)
    assert (addendum.body, addendum.is_signed, addendum.created_by) == ("Seen at home; voices, no plan.", True, manager)
    assert ChangeEntry.objects.filter(record_id=addendum.pk, operation="upsert").exists()
    assert resolved.written == (("care.note", addendum.pk, "create"),)
    assert Conflict.objects.get(pk=conflict.pk).resolved_by == manager


def conflict_of_a_delete_meeting_an_edit(member: CrewMember) -> Conflict:
    teammate = make_crew_member(member.unit.program, unit=member.unit)
    record_id = encounter(member, assessment="Calm, oriented.")
    edit = {"assessment": "Calm; lives alone."}
    pushed(teammate, "care.encounter", edit, op="update", record_id=record_id, base_version=1)
    deleted = pushed(member, "care.encounter", {}, op="delete", record_id=record_id, base_version=1)
    assert deleted["status"] == "conflict", deleted
    return Conflict.objects.get(record_id=record_id)


def test_taking_the_devices_side_of_a_delete_that_met_an_edit_deletes_the_record_for_every_device(
    program: Program, crew_member: CrewMember
) -> None:
    conflict = conflict_of_a_delete_meeting_an_edit(crew_member)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))

    assert Encounter.objects.get(pk=conflict.record_id).is_deleted
    head = SyncedRecord.objects.get(record_id=conflict.record_id)
    assert (head.is_deleted, head.version) == (True, conflict.server_version + 1)
    latest = RecordVersion.objects.get(record_id=conflict.record_id, version=head.version)
    assert (latest.user, latest.is_deleted) == (manager, True)
    assert ChangeEntry.objects.filter(record_id=conflict.record_id, version=head.version, operation="remove").exists()
    assert Conflict.objects.get(pk=conflict.pk).resolution == "Take the device's value"


def test_a_delete_is_not_taken_over_an_edit_written_since_the_conflict(
    program: Program, crew_member: CrewMember
) -> None:
    conflict = conflict_of_a_delete_meeting_an_edit(crew_member)
    later = pushed(
        crew_member,
        "care.encounter",
        {"assessment": "Calm; lives alone; sister visits daily."},
        op="update",
        record_id=conflict.record_id,
        base_version=conflict.server_version,
    )
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    with pytest.raises(DomainError) as refused:
        conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))

    assert (later["status"], refused.value.code, refused.value.field) == ("applied", "conflict_stale", "choice")
    assert not Encounter.objects.get(pk=conflict.record_id).is_deleted
    assert Conflict.objects.get(pk=conflict.pk).is_open


def test_a_delete_of_a_draft_note_that_met_its_authors_edit_is_carried_out_as_the_authors(
    program: Program, crew_member: CrewMember
) -> None:
    note_id = uuid.uuid4()
    pushed(crew_member, "care.note", {"encounter_id": str(encounter(crew_member)), "body": "Draft."}, record_id=note_id)
    pushed(crew_member, "care.note", {"body": "Seen at home."}, op="update", record_id=note_id, base_version=1)
    deleted = pushed(second_device_of(crew_member), "care.note", {}, op="delete", record_id=note_id, base_version=1)
    conflict = Conflict.objects.get(record_id=note_id)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))

    assert (deleted["status"], conflict.kind) == ("conflict", "delete_vs_edit")
    assert ClinicalNote.objects.get(pk=note_id).is_deleted
    assert SyncedRecord.objects.get(record_id=note_id).is_deleted


def test_an_edit_that_met_a_delete_keeps_the_devices_text_in_the_conflict_and_closes_only_by_keeping_the_deletion(
    program: Program, crew_member: CrewMember
) -> None:
    teammate = make_crew_member(program, unit=crew_member.unit)
    record_id = encounter(crew_member, assessment="Calm.")
    pushed(teammate, "care.encounter", {}, op="delete", record_id=record_id, base_version=1)
    pushed(
        crew_member,
        "care.encounter",
        {"assessment": "Calm; safety plan made."},
        op="update",
        record_id=record_id,
        base_version=1,
    )
    conflict = Conflict.objects.get(record_id=record_id)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    with pytest.raises(DomainError) as refused:
        conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))
    conflict_resolve(conflict=conflict, choice="server", resolved_by=manager, accessor=in_the_admin(manager))

    assert (conflict.kind, refused.value.code, refused.value.field) == (
        "edit_vs_delete",
        "unsupported_resolution",
        "choice",
    )
    assert Conflict.objects.get(pk=conflict.pk).device_value == "Calm; safety plan made."
    assert Encounter.objects.get(pk=record_id).is_deleted


def conflict_on_a_moved_encounters_unit(program: Program, crew_member: CrewMember) -> Conflict:
    """A supervisor moves the encounter; a case manager's tablet, which had it from before
    and knows no base, sends it back with its old unit."""
    record_id = encounter(crew_member, assessment="Calm.")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    encounter_reassign(
        encounter=Encounter.objects.get(pk=record_id),
        unit=UnitFactory.create(program=program),
        actor=supervisor.user,
        accessor=in_the_admin(supervisor.user),
    )
    tablet = make_crew_member(program, role=Role.CASE_MANAGER)
    sent = pushed(tablet, "care.encounter", {"unit_id": str(crew_member.unit.pk)}, op="update", record_id=record_id)
    assert sent["status"] == "conflict", sent
    return Conflict.objects.get(record_id=record_id, field="unit_id")


def test_a_supervisor_takes_a_devices_unit_of_an_encounter_by_moving_it_with_everything_under_it(
    program: Program, crew_member: CrewMember
) -> None:
    conflict = conflict_on_a_moved_encounters_unit(program, crew_member)
    note_id = uuid.uuid4()
    pushed(
        make_crew_member(program, role=Role.CASE_MANAGER),
        "care.note",
        {"encounter_id": str(conflict.record_id), "body": "Called."},
        record_id=note_id,
    )
    supervisor = make_crew_member(program, role=Role.SUPERVISOR).user

    conflict_resolve(conflict=conflict, choice="device", resolved_by=supervisor, accessor=in_the_admin(supervisor))

    assert Encounter.objects.get(pk=conflict.record_id).unit_id == crew_member.unit.pk
    assert ClinicalNote.objects.get(pk=note_id).unit_id == crew_member.unit.pk
    head = SyncedRecord.objects.get(record_id=conflict.record_id)
    assert head.data["unit_id"] == str(crew_member.unit.pk)
    assert ChangeEntry.objects.filter(record_id=conflict.record_id, version=head.version, operation="upsert").exists()
    assert Conflict.objects.get(pk=conflict.pk).resolved_by == supervisor


def test_a_case_manager_cannot_move_an_encounter_by_taking_a_devices_unit(
    program: Program, crew_member: CrewMember
) -> None:
    conflict = conflict_on_a_moved_encounters_unit(program, crew_member)
    moved_to = Encounter.objects.get(pk=conflict.record_id).unit_id
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    with pytest.raises(DomainError) as refused:
        conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))

    assert (refused.value.code, refused.value.status_code) == ("permission_denied", 403)
    assert Encounter.objects.get(pk=conflict.record_id).unit_id == moved_to
    assert Conflict.objects.get(pk=conflict.pk).is_open


@pytest.mark.django_db(transaction=True)
def test_two_case_managers_resolving_one_conflict_at_once_resolve_it_once(
    program: Program, crew_member: CrewMember
) -> None:
    conflict = conflict_on_assessment(crew_member)
    first, second = (make_crew_member(program, role=Role.CASE_MANAGER).user for _ in range(2))

    def second_takes_the_device_value() -> str:
        try:
            conflict_resolve(
                conflict=Conflict.objects.get(pk=conflict.pk),
                choice="device",
                resolved_by=second,
                accessor=in_the_admin(second),
            )
        except DomainError as refused:
            return refused.code
        return "resolved"

    def first_keeps_the_servers_value() -> None:
        conflict_resolve(
            conflict=Conflict.objects.get(pk=conflict.pk),
            choice="server",
            resolved_by=first,
            accessor=in_the_admin(first),
        )

    outcome, waited = run_while_another_writer_holds(
        conflict.record_id, first_keeps_the_servers_value, second_takes_the_device_value
    )

    assert (outcome, waited) == ("conflict_resolved", True)
    assert Conflict.objects.get(pk=conflict.pk).resolved_by == first
    assert Encounter.objects.get(pk=conflict.record_id).assessment == "Agitated."


def test_resolving_audits_what_it_wrote_as_the_resolvers_each_record_once(
    program: Program, crew_member: CrewMember
) -> None:
    """The resolution writes and audits in one transaction, whoever asks for it: a device's
    unit of an encounter taken moves it with its note, each moved record one write."""
    from apps.audit.models import AuditEvent

    conflict = conflict_on_a_moved_encounters_unit(program, crew_member)
    colleague = make_crew_member(program, role=Role.CASE_MANAGER)
    note = pushed(colleague, "care.note", {"encounter_id": str(conflict.record_id), "body": "Called."})
    assert note["status"] == "applied", note
    supervisor = make_crew_member(program, role=Role.SUPERVISOR).user

    conflict_resolve(conflict=conflict, choice="device", resolved_by=supervisor, accessor=in_the_admin(supervisor))

    written = AuditEvent.objects.filter(actor_id=supervisor.pk).order_by("record_type")
    assert list(written.values_list("action", "record_type", "record_id", "program_id", "channel")) == [
        ("update", "care.encounter", conflict.record_id, program.pk, "admin"),
        ("update", "care.note", uuid.UUID(note["id"]), program.pk, "admin"),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_note_edited_while_a_resolution_moves_its_encounter_leaves_the_old_units_devices(
    program: Program, crew_member: CrewMember
) -> None:
    """The resolution locked its conflict's row before it waited for the note's lock: a row lock
    is a write, and took its transaction's id, which dates its changes in the feed. The crew's
    edit of the note, younger, was served after the move's removal of it, and the old unit's
    tablets kept a note that had left their unit."""
    conflict = conflict_on_a_moved_encounters_unit(program, crew_member)
    old_unit = Encounter.objects.get(pk=conflict.record_id).unit
    writer, reader = (make_crew_member(program, unit=old_unit) for _ in range(2))
    note_id = uuid.uuid4()
    pushed(writer, "care.note", {"encounter_id": str(conflict.record_id), "body": "Draft."}, record_id=note_id)
    tablet = SimDevice(reader)
    _, cursor = tablet.pull()
    supervisor = make_crew_member(program, role=Role.SUPERVISOR).user

    def edit() -> None:
        edited = pushed(writer, "care.note", {"body": "Draft, edited."}, op="update", record_id=note_id, base_version=1)
        assert edited["status"] == "applied", edited

    _, waited = run_while_another_writer_holds(
        note_id,
        edit,
        lambda: conflict_resolve(
            conflict=conflict, choice="device", resolved_by=supervisor, accessor=in_the_admin(supervisor)
        ),
        edit_once_waited=True,
    )
    later, _ = tablet.pull(cursor)

    assert waited
    assert ClinicalNote.objects.get(pk=note_id).unit_id == crew_member.unit.pk
    assert [(entry["op"], entry["version"]) for entry in later if entry["id"] == str(note_id)] == [
        ("upsert", 2),
        ("remove", 3),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_change_written_after_a_younger_writer_of_its_record_is_refused_saving_nothing(
    crew_member: CrewMember,
) -> None:
    """The safety net for a writer that wrote before taking a record's lock: its version would
    be served before the younger writer's, and devices would end on the older. It is refused,
    to be tried again, instead."""
    record_id = encounter(crew_member, assessment="Calm.")
    colleague = make_crew_member(crew_member.unit.program, unit=crew_member.unit)

    def late_writer() -> None:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_current_xact_id()")  # its id, as a first write takes it
            lock_records([record_id])
            record = Encounter.objects.get(pk=record_id)
            record.assessment = "Agitated."
            record.save()
            publish_record(type_name="care.encounter", record=record, user=crew_member.user)

    def edit() -> None:
        pushed(colleague, "care.encounter", {"location": "Home"}, op="update", record_id=record_id, base_version=1)

    with pytest.raises(WrittenSinceTransactionBegan):
        run_while_another_writer_holds(record_id, edit, late_writer, edit_once_waited=True)

    head = SyncedRecord.objects.get(record_id=record_id)
    assert (head.version, head.data["assessment"], head.data["location"]) == (2, "Calm.", "Home")
    assert Encounter.objects.get(pk=record_id).assessment == "Calm."
