"""Care rules under sync: signed notes and addenda, append-only outcomes, derived status."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import Program, Role
from apps.care.models import ClinicalNote, Encounter, Referral, ReferralOutcomeEvent
from apps.care.services import encounter_reassign, referral_outcome_record
from apps.common.api.errors import DomainError
from apps.sync.models import Conflict, Mutation, SyncedRecord
from apps.sync.services import conflict_resolve, publish_record
from apps.teams.models import UnitMember
from tests.accounts.factories import device_with_token
from tests.care.factories import encounter, pushed
from tests.conftest import CrewMember, in_the_admin, make_crew_member
from tests.sync.helpers import SimDevice, encounter_fields, now_iso, run_while_another_writer_holds
from tests.teams.factories import UnitFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_signed_note_never_changes_and_an_addendum_amends_it(crew_member: CrewMember) -> None:
    encounter_id = encounter(crew_member)
    note_id = uuid.uuid4()
    fields = {"encounter_id": str(encounter_id), "body": "Person calm.", "signed_at": "2026-11-20T15:00:00+00:00"}
    assert pushed(crew_member, "care.note", fields, record_id=note_id)["status"] == "applied"

    edit = pushed(
        crew_member, "care.note", {"body": "Person agitated."}, op="update", record_id=note_id, base_version=1
    )
    delete = pushed(crew_member, "care.note", {}, op="delete", record_id=note_id, base_version=1)
    unsigned = pushed(crew_member, "care.note", {"signed_at": None}, op="update", record_id=note_id, base_version=1)
    addendum = pushed(
        crew_member,
        "care.note",
        {"encounter_id": str(encounter_id), "amends_id": str(note_id), "body": "Correction: agitated on arrival."},
    )

    assert (edit["status"], edit["error"]["code"], edit["error"]["field"]) == (
        "quarantined",
        "note_signed",
        "fields.body",
    )
    # A delete is refused whole, not for a field it never sent.
    assert (delete["status"], delete["error"]["code"], delete["error"]["field"]) == ("quarantined", "note_signed", None)
    assert (unsigned["error"]["code"], unsigned["error"]["field"]) == ("note_signed", "fields.signed_at")
    assert addendum["status"] == "applied"
    note = ClinicalNote.objects.get(pk=note_id)
    assert (note.body, note.is_deleted) == ("Person calm.", False)
    assert [a.body for a in note.addenda.all()] == ["Correction: agitated on arrival."]
    # The refused text is kept, not lost.
    assert Mutation.objects.get(error_code="note_signed", payload__fields__has_key="body").payload["fields"][
        "body"
    ] == ("Person agitated.")


def test_only_the_author_edits_a_draft_note(crew_member: CrewMember) -> None:
    note_id = uuid.uuid4()
    pushed(crew_member, "care.note", {"encounter_id": str(encounter(crew_member)), "body": "Draft."}, record_id=note_id)
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)

    result = pushed(teammate, "care.note", {"body": "Rewritten."}, op="update", record_id=note_id, base_version=1)

    assert (result["status"], result["error"]["code"]) == ("quarantined", "not_author")
    assert ClinicalNote.objects.get(pk=note_id).body == "Draft."


def test_a_stale_edit_of_a_note_signed_since_is_refused_not_held_as_a_conflict(crew_member: CrewMember) -> None:
    """A signed note never changes (P3): an edit its author made on another device against the
    draft meets the signed text, and is refused as note_signed, so the device writes an
    addendum. Kept as a conflict instead, it was answered as merged, and a case manager was
    shown a change no one may apply."""
    note_id = uuid.uuid4()
    pushed(crew_member, "care.note", {"encounter_id": str(encounter(crew_member)), "body": "Draft."}, record_id=note_id)
    signed = {"body": "Calm, oriented.", "signed_at": "2026-11-20T15:00:00+00:00"}
    assert pushed(crew_member, "care.note", signed, op="update", record_id=note_id, base_version=1)["version"] == 2
    phone = dataclasses.replace(crew_member, device=device_with_token(crew_member.user, name="Phone")[0])

    result = pushed(phone, "care.note", {"body": "Agitated."}, op="update", record_id=note_id, base_version=1)

    assert (result["status"], result["error"]["code"], result["error"]["field"]) == (
        "quarantined",
        "note_signed",
        "fields.body",
    )
    assert not Conflict.objects.exists()
    assert ClinicalNote.objects.get(pk=note_id).body == "Calm, oriented."


def _draft_changed_on_the_phone(member: CrewMember) -> uuid.UUID:
    """A draft the tablet shows as "Draft.", whose text the author's phone has replaced since."""
    note_id = uuid.uuid4()
    pushed(member, "care.note", {"encounter_id": str(encounter(member)), "body": "Draft."}, record_id=note_id)
    phone = dataclasses.replace(member, device=device_with_token(member.user, name="Phone")[0])
    assert pushed(phone, "care.note", {"body": "Phone text."}, op="update", record_id=note_id, base_version=1)[
        "status"
    ] == ("applied")
    return note_id


def _signed_on_the_tablet(member: CrewMember, note_id: uuid.UUID, **fields: Any) -> dict[str, Any]:
    """The tablet signs the note as it showed it (version 1), with whatever else it sends."""
    signed = {**fields, "signed_at": "2026-11-20T15:00:00+00:00"}
    return pushed(member, "care.note", signed, op="update", record_id=note_id, base_version=1)


@pytest.mark.parametrize("sent", [{}, {"body": "Draft."}], ids=["signature alone", "with the text it saw"])
def test_a_signature_over_text_changed_since_is_kept_as_a_conflict_never_signing_unseen_text(
    crew_member: CrewMember, sent: dict[str, Any]
) -> None:
    """A signature vouches for the text its author read. Merged as a field of its own, the
    tablet's signature signed the phone's text, which the author never saw on the signing
    screen, and the note could never change again."""
    note_id = _draft_changed_on_the_phone(crew_member)

    result = _signed_on_the_tablet(crew_member, note_id, **sent)

    note = ClinicalNote.objects.get(pk=note_id)
    assert (note.body, note.is_signed) == ("Phone text.", False)
    assert result["status"] == "conflict"
    assert (result["version"], result["data"]["signed_at"]) == (2, None)
    conflict = Conflict.objects.get(record_id=note_id)
    assert (conflict.field, conflict.server_value, conflict.device_value) == (
        "signed_at",
        None,
        "2026-11-20T15:00:00Z",
    )


def test_a_signature_sent_with_new_text_over_text_changed_since_keeps_both_and_signs_neither(
    crew_member: CrewMember,
) -> None:
    """The tablet's final text and its signature meet the phone's text: the text is a conflict,
    and so is the signature, which was given over the tablet's text, not the phone's."""
    note_id = _draft_changed_on_the_phone(crew_member)

    result = _signed_on_the_tablet(crew_member, note_id, body="Final assessment.")

    note = ClinicalNote.objects.get(pk=note_id)
    assert (note.body, note.is_signed) == ("Phone text.", False)
    assert result["status"] == "conflict"
    assert sorted(Conflict.objects.values_list("field", "device_value")) == [
        ("body", "Final assessment."),
        ("signed_at", "2026-11-20T15:00:00Z"),
    ]


def test_a_signature_merges_with_text_only_its_own_device_changed(crew_member: CrewMember) -> None:
    """The rule holds signatures to the text, not to the version: a signature over text no
    one else changed still merges with another device's change of another field."""
    note_id = uuid.uuid4()
    pushed(crew_member, "care.note", {"encounter_id": str(encounter(crew_member)), "body": "Draft."}, record_id=note_id)
    pushed(crew_member, "care.note", {"body": "Final."}, op="update", record_id=note_id, base_version=1)

    result = _signed_on_the_tablet(crew_member, note_id)

    note = ClinicalNote.objects.get(pk=note_id)
    assert (result["status"], note.body, note.is_signed) == ("applied", "Final.", True)


def test_a_case_manager_cannot_give_a_signature_kept_as_a_conflict(program: Program, crew_member: CrewMember) -> None:
    """Taken, the device's side would sign the text now in the note for its author, who never
    read it: the author signs again on their device."""
    note_id = _draft_changed_on_the_phone(crew_member)
    _signed_on_the_tablet(crew_member, note_id)
    conflict = Conflict.objects.get(record_id=note_id, field="signed_at")
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user

    with pytest.raises(DomainError) as refused:
        conflict_resolve(conflict=conflict, choice="device", resolved_by=manager, accessor=in_the_admin(manager))

    assert (refused.value.code, refused.value.field) == ("signature_is_the_authors", "choice")
    assert not ClinicalNote.objects.get(pk=note_id).is_signed


def test_a_colleagues_stale_edit_or_delete_of_a_draft_note_is_refused_as_not_theirs(crew_member: CrewMember) -> None:
    """Only its author changes a draft note, whatever version the colleague's change was made
    against: one that meets the author's newer text is refused too, not held as a conflict."""
    note_id = uuid.uuid4()
    pushed(crew_member, "care.note", {"encounter_id": str(encounter(crew_member)), "body": "Draft."}, record_id=note_id)
    pushed(crew_member, "care.note", {"body": "Draft, longer."}, op="update", record_id=note_id, base_version=1)
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)

    edit = pushed(teammate, "care.note", {"body": "Rewritten."}, op="update", record_id=note_id, base_version=1)
    delete = pushed(teammate, "care.note", {}, op="delete", record_id=note_id, base_version=1)

    assert [(r["status"], r["error"]["code"]) for r in (edit, delete)] == [("quarantined", "not_author")] * 2
    assert not Conflict.objects.exists()
    note = ClinicalNote.objects.get(pk=note_id)
    assert (note.body, note.is_deleted) == ("Draft, longer.", False)


def test_an_outcome_is_never_changed_or_deleted_whatever_the_base_the_change_names(crew_member: CrewMember) -> None:
    """Outcome events are append-only: a colleague's change of one without a base (or with any
    other) is refused as append_only, not kept as a conflict or a delete against an edit."""
    referral_id = uuid.uuid4()
    pushed(
        crew_member,
        "care.referral",
        {"encounter_id": str(encounter(crew_member)), "service_type": "housing"},
        record_id=referral_id,
    )
    outcome_id = uuid.uuid4()
    outcome = {
        "referral_id": str(referral_id),
        "outcome": "scheduled",
        "observed_at": "2026-11-20T15:00:00+00:00",
        "details": "Intake Monday.",
    }
    pushed(crew_member, "care.referral_outcome", outcome, record_id=outcome_id)
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)

    edit = pushed(teammate, "care.referral_outcome", {"details": "Intake Tuesday."}, op="update", record_id=outcome_id)
    delete = pushed(teammate, "care.referral_outcome", {}, op="delete", record_id=outcome_id)

    assert [(r["status"], r["error"]["code"]) for r in (edit, delete)] == [("quarantined", "append_only")] * 2
    assert not Conflict.objects.exists()
    event = ReferralOutcomeEvent.objects.get(pk=outcome_id)
    assert (event.details, event.is_deleted) == ("Intake Monday.", False)


def test_referral_status_is_derived_from_append_only_outcome_events(crew_member: CrewMember) -> None:
    referral_id = uuid.uuid4()
    pushed(
        crew_member,
        "care.referral",
        {"encounter_id": str(encounter(crew_member)), "service_type": "housing", "reason": "Unhoused."},
        record_id=referral_id,
    )
    teammate = SimDevice(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    _, cursor = teammate.pull()
    event_id = uuid.uuid4()

    connected = pushed(
        crew_member,
        "care.referral_outcome",
        {"referral_id": str(referral_id), "outcome": "connected", "observed_at": "2026-11-21T10:00:00+00:00"},
        record_id=event_id,
    )
    # Recorded later, but it happened earlier: the status stays "connected".
    referral_outcome_record(
        referral=Referral.objects.get(pk=referral_id),
        outcome="scheduled",
        observed_at="2026-11-20T10:00:00+00:00",
        details="",
        actor=crew_member.user,
        accessor=in_the_admin(crew_member.user),
    )
    change = pushed(
        crew_member, "care.referral_outcome", {"outcome": "declined"}, op="update", record_id=event_id, base_version=1
    )
    entries, _ = teammate.pull(cursor)

    assert connected["status"] == "applied"
    assert (change["status"], change["error"]["code"]) == ("quarantined", "append_only")
    assert Referral.objects.get(pk=referral_id).status == "connected"
    assert ReferralOutcomeEvent.objects.filter(referral_id=referral_id).count() == 2
    referral_updates = [e for e in entries if e["type"] == "care.referral"]
    assert referral_updates[-1]["data"]["status"] == "connected"


def referral(member: CrewMember) -> uuid.UUID:
    referral_id = uuid.uuid4()
    fields = {"encounter_id": str(encounter(member)), "service_type": "housing", "reason": "Unhoused."}
    assert pushed(member, "care.referral", fields, record_id=referral_id)["status"] == "applied"
    return referral_id


def test_a_referral_edited_after_its_outcome_in_one_batch_keeps_the_outcomes_status_in_its_synced_copy(
    crew_member: CrewMember,
) -> None:
    referral_id = referral(crew_member)
    device = SimDevice(crew_member)
    teammate = SimDevice(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    _, cursor = teammate.pull()
    outcome = {"referral_id": str(referral_id), "outcome": "connected", "observed_at": "2026-11-21T10:00:00+00:00"}

    results = device.push(
        device.mutation("create", "care.referral_outcome", uuid.uuid4(), outcome),
        device.mutation("update", "care.referral", referral_id, {"reason": "Unhoused; a bed tonight."}, 1),
    )
    entries, _ = teammate.pull(cursor)

    assert [result["status"] for result in results] == ["applied", "applied"]
    assert (results[1]["version"], results[1]["data"]["status"]) == (3, "connected")
    assert Referral.objects.get(pk=referral_id).status == "connected"
    head = SyncedRecord.objects.get(record_id=referral_id)
    assert (head.version, head.data["status"]) == (3, "connected")
    last = [entry for entry in entries if entry["id"] == str(referral_id)][-1]
    assert (last["version"], last["data"]["status"], last["data"]["reason"]) == (
        3,
        "connected",
        "Unhoused; a bed tonight.",
    )


def test_an_outcome_pushed_while_a_colleague_edits_its_referral_keeps_the_colleagues_edit_in_its_synced_copy(
    crew_member: CrewMember,
) -> None:
    """The outcome sets its referral's status on the referral as it stands under its lock:
    a copy read before the colleague's edit committed would publish their edit undone."""
    referral_id = referral(crew_member)
    device = SimDevice(crew_member)

    def case_managers_edit() -> None:
        referral = Referral.objects.get(pk=referral_id)
        referral.priority = "urgent"
        referral.save()
        publish_record(type_name="care.referral", record=referral, user=None)

    def outcome_push() -> list[dict[str, Any]]:
        outcome = {"referral_id": str(referral_id), "outcome": "scheduled", "observed_at": "2026-11-21T10:00:00+00:00"}
        return device.push(device.mutation("create", "care.referral_outcome", uuid.uuid4(), outcome))

    results, waited_for_the_edit = run_while_another_writer_holds(referral_id, case_managers_edit, outcome_push)

    assert [result["status"] for result in results] == ["applied"]
    assert waited_for_the_edit
    stored = Referral.objects.get(pk=referral_id)
    assert (stored.priority, stored.status) == ("urgent", "scheduled")
    head = SyncedRecord.objects.get(record_id=referral_id)
    assert (head.version, head.data["priority"], head.data["status"]) == (3, "urgent", "scheduled")


def test_a_note_for_an_encounter_of_another_unit_is_not_permitted(
    crew_member: CrewMember, outsider: CrewMember
) -> None:
    theirs = encounter(outsider)

    result = pushed(crew_member, "care.note", {"encounter_id": str(theirs), "body": "Sneaky."})
    missing = pushed(crew_member, "care.note", {"encounter_id": str(uuid.uuid4()), "body": "Orphan."})

    assert (result["status"], result["error"]["code"], result["error"]["field"]) == (
        "quarantined",
        "not_permitted",
        "fields.encounter_id",
    )
    assert (missing["status"], missing["error"]["code"]) == ("quarantined", "parent_not_found")
    assert ClinicalNote.objects.count() == 0


def test_a_batch_reads_a_notes_encounter_in_part_and_again_whole_for_a_referral(
    crew_member: CrewMember, django_assert_num_queries: Any
) -> None:
    from apps.care.models import Encounter
    from apps.care.services import prepare_batch
    from apps.sync.registry import WriteContext

    encounter_id = encounter(crew_member, ended_at="2026-11-20T15:00:00+00:00", disposition="referred")
    context = WriteContext(user=crew_member.user, device=crew_member.device)
    refers_to_it = [{"encounter_id": str(encounter_id)}]

    prepare_batch(context, refers_to_it, type_name="care.note")
    read_for_notes = context.cached(Encounter, encounter_id)
    prepare_batch(context, refers_to_it, type_name="care.referral")
    read_for_referrals = context.cached(Encounter, encounter_id)
    prepare_batch(context, refers_to_it, type_name="care.note")  # a part is never read over the whole

    assert {"started_at", "ended_at", "disposition"} <= read_for_notes.get_deferred_fields()
    assert read_for_referrals.get_deferred_fields() == {"location", "assessment"}  # only the sealed text
    assert context.cached(Encounter, encounter_id) is read_for_referrals
    with django_assert_num_queries(0):  # what a referral's follow-up hooks read is there
        assert read_for_referrals.disposition == "referred"
        assert read_for_referrals.ended_at is not None


def test_a_reassigned_encounter_publishes_a_note_edit_committed_while_it_waited(
    program: Program, crew_member: CrewMember
) -> None:
    """The move publishes each record as it stands under its lock: a copy read before the
    author's edit committed would publish the edit undone on every device."""
    encounter_id = encounter(crew_member)
    note = pushed(crew_member, "care.note", {"encounter_id": str(encounter_id), "body": "first draft"})
    note_id = uuid.UUID(note["id"])
    new_unit = UnitFactory.create(program=program)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)

    def authors_edit() -> None:
        draft = ClinicalNote.objects.get(pk=note_id)
        draft.body = "finished"
        draft.save()
        publish_record(type_name="care.note", record=draft, user=crew_member.user)

    def reassign() -> None:
        encounter_reassign(
            encounter=Encounter.objects.get(pk=encounter_id),
            unit=new_unit,
            actor=supervisor.user,
            accessor=in_the_admin(supervisor.user),
        )

    _, waited_for_the_edit = run_while_another_writer_holds(note_id, authors_edit, reassign)

    assert waited_for_the_edit
    stored = ClinicalNote.objects.get(pk=note_id)
    assert (stored.body, stored.unit_id) == ("finished", new_unit.pk)
    head = SyncedRecord.objects.get(record_id=note_id)
    assert (head.version, head.data["body"], head.data["unit_id"]) == (3, "finished", str(new_unit.pk))


def test_a_note_pushed_while_its_encounter_moves_to_another_unit_is_placed_in_the_new_one(
    program: Program, crew_member: CrewMember
) -> None:
    """A note takes its encounter's unit: read before the move committed, it would land with
    the old crew, who would read it, while the new crew never got it."""
    encounter_id = encounter(crew_member)
    new_unit = UnitFactory.create(program=program)
    UnitMember.objects.create(unit=new_unit, user=crew_member.user)  # on both crews: the note applies
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    note_id = uuid.uuid4()

    def reassign() -> None:
        encounter_reassign(
            encounter=Encounter.objects.get(pk=encounter_id),
            unit=new_unit,
            actor=supervisor.user,
            accessor=in_the_admin(supervisor.user),
        )

    def push_note() -> dict[str, Any]:
        fields = {"encounter_id": str(encounter_id), "body": "Calmer."}
        return pushed(crew_member, "care.note", fields, record_id=note_id)

    result, waited_for_the_move = run_while_another_writer_holds(encounter_id, reassign, push_note)

    assert waited_for_the_move
    assert result["status"] == "applied"
    assert ClinicalNote.objects.get(pk=note_id).unit_id == new_unit.pk
    assert SyncedRecord.objects.get(record_id=note_id).data["unit_id"] == str(new_unit.pk)


def test_a_note_pushed_as_its_encounter_begins_to_move_moves_with_it(program: Program, crew_member: CrewMember) -> None:
    """The move finds the records under the encounter once it holds the encounter's lock: a
    note committed while the move waited for it goes to the new unit too."""
    encounter_id = encounter(crew_member)
    new_unit = UnitFactory.create(program=program)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    note_id = uuid.uuid4()

    def push_note() -> None:
        pushed(crew_member, "care.note", {"encounter_id": str(encounter_id), "body": "Calmer."}, record_id=note_id)

    def reassign() -> None:
        encounter_reassign(
            encounter=Encounter.objects.get(pk=encounter_id),
            unit=new_unit,
            actor=supervisor.user,
            accessor=in_the_admin(supervisor.user),
        )

    _, waited_for_the_note = run_while_another_writer_holds(encounter_id, push_note, reassign)

    assert waited_for_the_note
    assert ClinicalNote.objects.get(pk=note_id).unit_id == new_unit.pk
    assert SyncedRecord.objects.get(record_id=note_id).data["unit_id"] == str(new_unit.pk)


def test_a_referral_deleted_while_a_case_manager_moves_its_task_status_stays_deleted(
    crew_member: CrewMember,
) -> None:
    """The case manager's request found the referral live, then waited for its lock while the
    crew's delete of it committed. Publishing the referral as live would bring a deleted
    record back to every device, and a colleague's later edit of it would then apply as if
    nothing had deleted it, instead of meeting the delete as a conflict."""
    referral_id = referral(crew_member)
    case_manager = make_crew_member(crew_member.unit.program, role=Role.CASE_MANAGER)
    teammate = SimDevice(make_crew_member(crew_member.unit.program, unit=crew_member.unit))

    def crews_delete() -> None:
        deleted = pushed(crew_member, "care.referral", {}, op="delete", record_id=referral_id, base_version=1)
        assert deleted["status"] == "applied", deleted

    def move_task_status() -> Any:
        body = {"status": "received", "reason": ""}
        return case_manager.client().post(f"/api/v1/care/referrals/{referral_id}/status/", body, format="json")

    response, waited_for_the_delete = run_while_another_writer_holds(referral_id, crews_delete, move_task_status)
    [edit] = teammate.push(teammate.mutation("update", "care.referral", referral_id, {"priority": "urgent"}, 1))

    assert waited_for_the_delete
    assert response.status_code == 404, response.content
    head = SyncedRecord.objects.get(record_id=referral_id)
    assert (head.is_deleted, head.version) == (True, 2)
    assert (edit["status"], edit["conflicts"][0]["kind"]) == ("conflict", "edit_vs_delete")
    assert Referral.objects.get(pk=referral_id).priority == "routine"


def test_an_outcome_for_a_referral_deleted_while_it_waited_is_not_found_as_for_one_deleted_before(
    crew_member: CrewMember,
) -> None:
    """The answer must not depend on when the crew's delete committed: a client reads 404 as
    "gone", and would read a 409 naming a field it never sent as a rule to fix its input by."""
    referral_id = referral(crew_member)
    case_manager = make_crew_member(crew_member.unit.program, role=Role.CASE_MANAGER)
    outcome = {"outcome": "connected", "observed_at": "2026-11-21T10:00:00+00:00"}

    def crews_delete() -> None:
        deleted = pushed(crew_member, "care.referral", {}, op="delete", record_id=referral_id, base_version=1)
        assert deleted["status"] == "applied", deleted

    def record_outcome() -> Any:
        return case_manager.client().post(f"/api/v1/care/referrals/{referral_id}/outcomes/", outcome, format="json")

    response, waited_for_the_delete = run_while_another_writer_holds(referral_id, crews_delete, record_outcome)
    afterwards = record_outcome()

    assert waited_for_the_delete
    assert (response.status_code, response.json()["code"]) == (404, "not_found"), response.content
    assert afterwards.status_code == 404
    assert not ReferralOutcomeEvent.objects.exists()
    assert SyncedRecord.objects.get(record_id=referral_id).is_deleted


def test_an_outcome_said_to_happen_in_the_future_is_kept_for_review_and_does_not_set_the_status(
    crew_member: CrewMember,
) -> None:
    referral_id = referral(crew_member)
    next_year = (timezone.now() + timedelta(days=365)).isoformat()

    result = pushed(
        crew_member,
        "care.referral_outcome",
        {"referral_id": str(referral_id), "outcome": "declined", "observed_at": next_year},
    )
    later = pushed(
        crew_member,
        "care.referral_outcome",
        {"referral_id": str(referral_id), "outcome": "connected", "observed_at": now_iso()},
    )

    assert (result["status"], result["error"]["code"], result["error"]["field"]) == (
        "quarantined",
        "time_in_future",
        "fields.observed_at",
    )
    assert later["status"] == "applied"
    assert Referral.objects.get(pk=referral_id).status == "connected"


@pytest.mark.parametrize(
    ("record_type", "field"),
    [("care.encounter", "started_at"), ("care.encounter", "ended_at"), ("care.note", "signed_at")],
)
@pytest.mark.parametrize("op", ["create", "update"])
def test_an_encounter_or_signature_dated_ahead_of_the_servers_clock_is_kept_for_review(
    crew_member: CrewMember, record_type: str, field: str, op: str
) -> None:
    """A device clock years ahead: an encounter ended then put its follow-up off as long (no
    reminder for years), and a note was signed at a time not yet come."""
    next_year = (timezone.now() + timedelta(days=365)).isoformat()
    encounter_id = encounter(crew_member)
    record_id = encounter_id if (record_type, op) == ("care.encounter", "update") else uuid.uuid4()
    if (record_type, op) == ("care.note", "update"):
        pushed(crew_member, "care.note", {"encounter_id": str(encounter_id), "body": "Draft."}, record_id=record_id)
    if op == "create":
        fields = (
            encounter_fields(crew_member, **{field: next_year})
            if record_type == "care.encounter"
            else {"encounter_id": str(encounter_id), "body": "Calm.", field: next_year}
        )
        result = pushed(crew_member, record_type, fields, record_id=record_id)
    else:
        result = pushed(crew_member, record_type, {field: next_year}, op="update", record_id=record_id, base_version=1)

    assert (result["status"], result["error"]["code"], result["error"]["field"]) == (
        "quarantined",
        "time_in_future",
        f"fields.{field}",
    )
    model = Encounter if record_type == "care.encounter" else ClinicalNote
    stored = model.objects.filter(pk=record_id).values_list(field, flat=True).first()
    assert stored is None or stored < timezone.now()


def test_an_encounter_ended_within_the_allowed_clock_skew_applies(crew_member: CrewMember) -> None:
    soon = (timezone.now() + timedelta(seconds=60)).isoformat()

    result = pushed(crew_member, "care.encounter", encounter_fields(crew_member, ended_at=soon))

    assert result["status"] == "applied", result


def test_an_encounter_set_to_end_before_it_starts_is_kept_for_review_naming_the_time_set(
    crew_member: CrewMember,
) -> None:
    """A change that sets the start or the end is checked against the other as stored: an
    encounter ended before it started dated its follow-up from before the crew was there. An
    edit of neither still applies to one stored so before the rule."""
    started = timezone.now() - timedelta(hours=2)
    at = started.isoformat()
    made_backwards = pushed(
        crew_member,
        "care.encounter",
        encounter_fields(crew_member, started_at=at, ended_at=(started - timedelta(minutes=1)).isoformat()),
    )
    visit = uuid.uuid4()
    pushed(crew_member, "care.encounter", encounter_fields(crew_member, started_at=at), record_id=visit)

    def edit(version: int, **fields: Any) -> dict[str, Any]:
        return pushed(crew_member, "care.encounter", fields, op="update", record_id=visit, base_version=version)

    ended_before = edit(1, ended_at=(started - timedelta(minutes=5)).isoformat())
    ended = edit(1, ended_at=(started + timedelta(minutes=40)).isoformat())
    started_after = edit(2, started_at=(started + timedelta(minutes=60)).isoformat())
    Encounter.objects.filter(pk=visit).update(ended_at=started - timedelta(minutes=10))  # stored before the rule
    located = edit(2, location="Lenox Ave")

    refused = [
        (r["status"], r["error"]["code"], r["error"]["field"]) for r in (made_backwards, ended_before, started_after)
    ]
    assert refused == [
        ("quarantined", "invalid_fields", "fields.ended_at"),
        ("quarantined", "invalid_fields", "fields.ended_at"),
        ("quarantined", "invalid_fields", "fields.started_at"),
    ]
    assert (ended["status"], located["status"]) == ("applied", "applied")
    stored = Encounter.objects.get(pk=visit)
    assert (stored.started_at, stored.location) == (started, "Lenox Ave")


def test_a_start_whose_end_met_a_colleagues_is_checked_against_the_colleagues_end(crew_member: CrewMember) -> None:
    """The device moved the start and the end together; a colleague had moved the end, so the
    device's end is kept as a conflict. A start before the colleague's end applies with the
    conflict; one past it is refused whole, kept for review: the record never holds an end
    before its start."""
    started = timezone.now() - timedelta(hours=2)
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)

    def moved_after_a_colleague_ended_it(start_after: int) -> tuple[uuid.UUID, dict[str, Any]]:
        visit = uuid.uuid4()
        fields = encounter_fields(
            crew_member, started_at=started.isoformat(), ended_at=(started + timedelta(minutes=60)).isoformat()
        )
        pushed(crew_member, "care.encounter", fields, record_id=visit)
        colleague = {"ended_at": (started + timedelta(minutes=20)).isoformat()}
        assert (
            pushed(teammate, "care.encounter", colleague, op="update", record_id=visit, base_version=1)["status"]
            == "applied"
        )
        moved = {
            "started_at": (started + timedelta(minutes=start_after)).isoformat(),
            "ended_at": (started + timedelta(minutes=90)).isoformat(),
        }
        return visit, pushed(crew_member, "care.encounter", moved, op="update", record_id=visit, base_version=1)

    before_it, merged = moved_after_a_colleague_ended_it(10)
    past_it, refused = moved_after_a_colleague_ended_it(30)

    assert (merged["status"], [conflict["field"] for conflict in merged["conflicts"]]) == ("conflict", ["ended_at"])
    assert Encounter.objects.get(pk=before_it).started_at == started + timedelta(minutes=10)
    assert (refused["status"], refused["error"]["field"]) == ("quarantined", "fields.started_at")
    assert Encounter.objects.get(pk=past_it).started_at == started


def test_a_date_of_birth_in_the_future_is_kept_for_review_naming_it(crew_member: CrewMember) -> None:
    unit_id = str(crew_member.unit.pk)
    in_two_days = (timezone.now() + timedelta(days=2)).date().isoformat()

    unborn = pushed(crew_member, "care.person", {"unit_id": unit_id, "given_name": "Ana", "date_of_birth": in_two_days})
    born = pushed(crew_member, "care.person", {"unit_id": unit_id, "given_name": "Ana", "date_of_birth": "1990-02-03"})

    assert (unborn["status"], unborn["error"]["code"], unborn["error"]["field"]) == (
        "quarantined",
        "invalid_fields",
        "fields.date_of_birth",
    )
    assert born["status"] == "applied"


def test_times_and_dates_in_another_scripts_digits_are_refused_naming_the_field(crew_member: CrewMember) -> None:
    """Django's parser reads any script's digits: ٢٠٢٦ was taken for 2026, a date of birth in
    full-width digits for 1990, a value no other reader of the record would take."""
    unit_id = str(crew_member.unit.pk)
    device = SimDevice(crew_member)

    started, born, observed = device.push(
        device.mutation(
            "create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member, started_at="٢٠٢٦-11-20T14:05:00Z")
        ),
        device.mutation(
            "create",
            "care.person",
            uuid.uuid4(),
            {"unit_id": unit_id, "given_name": "Ana", "date_of_birth": "\uff11\uff19\uff19\uff10-01-01"},
        ),
        {
            **device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member)),
            "observed_at": "٢٠٢٦-11-20T14:06:00Z",
        },
    )

    assert (started["error"]["code"], started["error"]["field"]) == ("invalid_fields", "fields.started_at")
    assert (born["error"]["code"], born["error"]["field"]) == ("invalid_fields", "fields.date_of_birth")
    assert observed["error"]["code"] == "invalid_observed_at"
    assert {result["status"] for result in (started, born, observed)} == {"quarantined"}


@pytest.mark.parametrize(
    "appointment_at",
    ["0001-01-01T00:00:00+00:00", "0001-01-01T03:00:00+05:00", "9999-12-31T22:00:00-05:00", "1850-06-01T09:00:00Z"],
)
def test_a_referral_appointment_outside_the_calendar_a_program_works_in_is_refused_naming_the_field(
    crew_member: CrewMember, appointment_at: str
) -> None:
    fields = {
        "encounter_id": str(encounter(crew_member)),
        "service_type": "housing",
        "appointment_at": appointment_at,
        "consent_to_contact": True,
    }

    result = pushed(crew_member, "care.referral", fields)

    assert (result["status"], result["error"]["code"], result["error"]["field"]) == (
        "quarantined",
        "invalid_fields",
        "fields.appointment_at",
    )
    assert "between the years 1900 and 2999" in result["error"]["detail"]


def test_a_referrals_task_events_read_through_the_api_are_audited_as_read(crew_member: CrewMember) -> None:
    """The referral's answer carries its task timeline, a service's reasons included (often
    clinical): each event shown is read, once, by whom and from which device."""
    from apps.audit.models import AuditEvent

    referral_id = referral(crew_member)
    case_manager = make_crew_member(crew_member.unit.program, role=Role.CASE_MANAGER)
    client = case_manager.client()
    body = {"status": "rejected", "reason": "Beds full; needs detox first."}
    moved = client.post(f"/api/v1/care/referrals/{referral_id}/status/", body, format="json")
    [event_id] = [event["id"] for event in moved.json()["task_timeline"]]

    shown = client.get(f"/api/v1/care/referrals/{referral_id}/")

    assert [event["reason"] for event in shown.json()["task_timeline"]] == ["Beds full; needs detox first."]
    rows = AuditEvent.objects.filter(record_type="care.referral_task_event").order_by("occurred_at", "id")
    # Created by the status change (its answer shows what it wrote), read with the referral's.
    assert list(rows.values_list("action", "record_id", "actor_id", "device_id")) == [
        (action, uuid.UUID(event_id), case_manager.user.pk, case_manager.device.pk) for action in ("create", "read")
    ]
