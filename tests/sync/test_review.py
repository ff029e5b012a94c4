"""A supervisor applies again, after review, quarantined mutations that should stand."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from apps.accounts.models import Program, Role
from apps.audit.models import AccessChannel, AuditEvent
from apps.audit.services import Accessor
from apps.care.models import ClinicalNote, Encounter
from apps.common.api.errors import DomainError
from apps.sync import push, review
from apps.sync.models import Conflict, Mutation, MutationStatus
from apps.teams.models import UnitMember
from tests.accounts.factories import ProgramFactory
from tests.care.factories import encounter
from tests.conftest import (
    CrewMember,
    audit_trail_refusing,
    deactivate_user,
    in_the_admin,
    make_crew_member,
    revoke_device,
)
from tests.sync.helpers import SimDevice, encounter_fields, run_while_another_writer_holds, sync_client

APPLY = "/api/v1/sync/quarantine/apply/"


def _quarantined_ids(reviewer: CrewMember) -> list[int]:
    """What the reviewer's quarantine list shows, oldest first."""
    listed = sync_client(reviewer).get("/api/v1/sync/quarantine/").json()["results"]
    return sorted(mutation["id"] for mutation in listed)


def _apply(reviewer: CrewMember, ids: list[int], expect: int = 200) -> Any:
    response = sync_client(reviewer).post(APPLY, {"ids": ids}, format="json")
    assert response.status_code == expect, response.content
    return response.json()


def _refused_off_the_crew(device: SimDevice, mutation: dict[str, Any]) -> dict[str, Any]:
    """Push the mutation while its writer is off their unit's crew (quarantined,
    ``not_permitted``), then put them back on it."""
    member = device.member
    UnitMember.objects.filter(user=member.user).delete()
    [refused] = device.push(mutation)
    UnitMember.objects.create(unit=member.unit, user=member.user)
    return refused


def _change(device: SimDevice, op: str, record_id: uuid.UUID, assessment: str) -> dict[str, Any]:
    """An update of the encounter's assessment, or its delete, against version 1."""
    fields = {"assessment": assessment} if op == "update" else None
    return device.mutation(op, "care.encounter", record_id, fields, 1)


def test_a_supervisor_applies_a_revoked_tablets_handed_over_work_after_review(
    program: Program, crew_member: CrewMember
) -> None:
    record_id = encounter(crew_member, assessment="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    note_id, new_record_id = uuid.uuid4(), uuid.uuid4()
    outbox = [
        device.mutation("update", "care.encounter", record_id, {"assessment": "written offline"}, 1),
        device.mutation("create", "care.note", note_id, {"encounter_id": str(record_id), "body": "Safety plan made."}),
        # A record made offline, and a change of it that waited behind its create.
        device.mutation("create", "care.encounter", new_record_id, encounter_fields(crew_member, location="first")),
        device.mutation("update", "care.encounter", new_record_id, {"location": "second"}, 1),
    ]
    revoke_device(crew_member)
    handed_over = device.push(*outbox)
    assert {result["error"]["code"] for result in handed_over} == {"device_revoked"}

    answer = _apply(supervisor, _quarantined_ids(supervisor))
    replayed = device.push(*outbox)

    assert [(r["mutation_id"], r["status"]) for r in answer["results"]] == [
        (m["mutation_id"], "applied") for m in outbox
    ]
    assert answer["results"][0]["data"]["assessment"] == "written offline"  # as any push result
    assert Encounter.objects.get(pk=record_id).assessment == "written offline"
    note = ClinicalNote.objects.get(pk=note_id)
    assert (note.body, note.created_by) == ("Safety plan made.", crew_member.user)  # the writer's, as sent
    assert Encounter.objects.get(pk=new_record_id).location == "second"
    assert [(r["status"], r["original_status"]) for r in replayed] == [("duplicate", "applied")] * 4
    assert _quarantined_ids(supervisor) == []
    # The supervisor's release of each record is in the audit trail, from their device.
    released = AuditEvent.objects.filter(
        actor_id=supervisor.user.pk, device_id=supervisor.device.pk, channel="sync"
    ).exclude(action="read")
    assert sorted(released.values_list("action", "record_id")) == sorted(
        [("update", record_id), ("create", note_id), ("create", new_record_id), ("update", new_record_id)]
    )


def _note_kept_with_an_encounter_refused(
    crew_member: CrewMember,
) -> tuple[SimDevice, uuid.UUID, uuid.UUID, dict[str, Any]]:
    """An encounter refused while its writer was out of the unit (not_permitted), and a note
    written under it kept as parent_quarantined; the writer back in the unit: the device, the
    encounter's id, the note's, and the note's create."""
    device = SimDevice(crew_member)
    encounter_id, note_id = uuid.uuid4(), uuid.uuid4()
    refused = device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))
    note = device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Plan made."})
    UnitMember.objects.filter(user=crew_member.user).delete()
    first = device.push(refused, note)
    UnitMember.objects.create(unit=crew_member.unit, user=crew_member.user)
    assert [r["error"]["code"] for r in first] == ["not_permitted", "parent_quarantined"]
    return device, encounter_id, note_id, note


def test_a_note_kept_with_the_encounter_a_supervisor_applies_applies_with_it_as_its_writers(
    program: Program, crew_member: CrewMember
) -> None:
    """The supervisor reviews the refused encounter; the note written under it was kept only
    because the encounter was: it applies with it, as the clinician's own write."""
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device, encounter_id, note_id, note = _note_kept_with_an_encounter_refused(crew_member)
    encounter_kept, _note_kept = _quarantined_ids(supervisor)

    [result] = _apply(supervisor, [encounter_kept])["results"]
    [again] = device.push(note)

    assert result["status"] == "applied"
    assert ClinicalNote.objects.get(pk=note_id).encounter_id == encounter_id
    assert _quarantined_ids(supervisor) == []
    assert (again["status"], again["original_status"]) == ("duplicate", "applied")
    writes = AuditEvent.objects.exclude(action="read").values_list("actor_id", "device_id", "action", "record_id")
    assert sorted(writes) == sorted(
        [
            (supervisor.user.pk, supervisor.device.pk, "create", encounter_id),
            (crew_member.user.pk, crew_member.device.pk, "create", note_id),
        ]
    )


def test_a_note_kept_with_the_encounter_a_supervisor_applies_with_the_notes_edit_stays_for_review(
    program: Program, crew_member: CrewMember
) -> None:
    """The supervisor reviews the refused encounter and the clinician's later edit of the note
    kept under it, together: the edit is a change of the note applied with the encounter, so
    the note's kept create is not released behind it (nor its record locked as if it were):
    the note's changes stay in quarantine, for review together."""
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device, encounter_id, note_id, _note = _note_kept_with_an_encounter_refused(crew_member)
    [edited] = device.push(device.mutation("update", "care.note", note_id, {"body": "Wrong person."}))
    encounter_kept, note_kept, edit_kept = _quarantined_ids(supervisor)
    applied_with = list(Mutation.objects.filter(pk__in=[encounter_kept, edit_kept]))

    released_by_review = push.children_waiting_on(applied_with, reviewed=frozenset([encounter_kept, edit_kept]))
    results = _apply(supervisor, [encounter_kept, edit_kept])["results"]

    assert edited["error"]["code"] == "record_quarantined"
    assert released_by_review == []
    assert [(r["status"], r.get("error", {}).get("code")) for r in results] == [
        ("applied", None),
        ("quarantined", "record_quarantined"),
    ]
    assert Encounter.objects.filter(pk=encounter_id).exists()
    assert not ClinicalNote.objects.filter(pk=note_id).exists()
    assert _quarantined_ids(supervisor) == [note_kept, edit_kept]
    assert Mutation.objects.get(pk=note_kept).error_code == "parent_quarantined"


@pytest.mark.parametrize("locked_out_by", [revoke_device, deactivate_user], ids=["revoked", "deactivated"])
def test_a_note_kept_with_the_encounter_a_supervisor_applies_stays_when_its_writer_is_locked_out(
    program: Program, crew_member: CrewMember, locked_out_by: Callable[[CrewMember], Any]
) -> None:
    """Least privilege: the supervisor reviewed the encounter, not the note under it; the
    tablet that wrote the note is revoked, or its writer deactivated, so nothing of its own
    applies by itself: the note stays for review."""
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    _device, encounter_id, note_id, _note = _note_kept_with_an_encounter_refused(crew_member)
    encounter_kept, note_kept = _quarantined_ids(supervisor)
    locked_out_by(crew_member)

    [result] = _apply(supervisor, [encounter_kept])["results"]

    assert result["status"] == "applied"
    assert Encounter.objects.filter(pk=encounter_id).exists()
    assert not ClinicalNote.objects.filter(pk=note_id).exists()
    assert _quarantined_ids(supervisor) == [note_kept]


def test_a_change_applied_after_review_whose_audit_row_cannot_be_written_stays_in_quarantine(
    program: Program, crew_member: CrewMember
) -> None:
    """P8: the supervisor's release is audited in the transaction of its apply, so a release
    whose audit row cannot be written applies nothing and leaves the change for review."""
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    revoke_device(crew_member)
    device.push(device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member)))
    client = sync_client(supervisor)
    client.raise_request_exception = False

    with audit_trail_refusing("create", "care.encounter"):
        response = client.post(APPLY, {"ids": _quarantined_ids(supervisor)}, format="json")

    assert response.status_code == 500
    assert not Encounter.objects.filter(pk=record_id).exists()
    assert len(_quarantined_ids(supervisor)) == 1
    assert not AuditEvent.objects.exclude(action="read").exists()


def test_a_watermelondb_create_applied_after_review_is_audited_as_a_create(
    program: Program, crew_member: CrewMember
) -> None:
    record_id = encounter(crew_member)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    note_id = str(uuid.uuid4())
    revoke_device(crew_member)
    # A WatermelonDB client does not number its changes: the ledger keys them by content.
    created = {"id": note_id, "encounter_id": str(record_id), "body": "Calm; safety plan made."}
    sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/",
        {"changes": {"notes": {"created": [created], "updated": [], "deleted": []}}, "lastPulledAt": None},
        format="json",
    )

    [result] = _apply(supervisor, _quarantined_ids(supervisor))["results"]

    assert result["status"] == "applied"
    released = AuditEvent.objects.filter(actor_id=supervisor.user.pk, channel="sync").exclude(action="read")
    assert list(released.values_list("action", "record_type", "record_id")) == [
        ("create", "care.note", uuid.UUID(note_id))
    ]


def test_an_edit_applied_after_review_merges_with_what_changed_since(program: Program, crew_member: CrewMember) -> None:
    record_id = encounter(crew_member, assessment="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    offline = device.mutation("update", "care.encounter", record_id, {"assessment": "A: written offline"}, 1)
    revoke_device(crew_member)
    device.push(offline)
    colleague = SimDevice(make_crew_member(program, unit=crew_member.unit))
    colleague.push(colleague.mutation("update", "care.encounter", record_id, {"assessment": "B: later"}, 1))

    [result] = _apply(supervisor, _quarantined_ids(supervisor))["results"]

    assert result["status"] == "conflict"  # neither note is lost: the later one stands
    assert Encounter.objects.get(pk=record_id).assessment == "B: later"
    assert Conflict.objects.get(record_id=record_id).device_value == "A: written offline"


def test_an_edit_applied_after_review_does_not_replace_its_writers_own_later_edit(
    program: Program, crew_member: CrewMember
) -> None:
    record_id = encounter(crew_member, assessment="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    refused = _refused_off_the_crew(device, _change(device, "update", record_id, "A: earlier"))
    [later] = device.push(device.mutation("update", "care.encounter", record_id, {"assessment": "B: later"}, 1))

    [result] = _apply(supervisor, _quarantined_ids(supervisor))["results"]

    assert (refused["status"], later["status"]) == ("quarantined", "applied")
    # The writer's latest word stands; the earlier one is kept beside it, not applied over it.
    assert result["status"] == "conflict"
    assert Encounter.objects.get(pk=record_id).assessment == "B: later"
    assert Conflict.objects.get(record_id=record_id).device_value == "A: earlier"


def test_a_delete_applied_after_review_does_not_delete_over_its_writers_own_later_edit(
    program: Program, crew_member: CrewMember
) -> None:
    """The writer's later edit was made after the delete (the record came back to their
    device when the delete was refused): applied after review, the delete meets an edit it
    never saw, as a conflict, and must not remove the record from every device unseen."""
    record_id = encounter(crew_member, location="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    refused = _refused_off_the_crew(device, device.mutation("delete", "care.encounter", record_id, base_version=1))
    [later] = device.push(device.mutation("update", "care.encounter", record_id, {"location": "B: later"}, 1))

    [result] = _apply(supervisor, _quarantined_ids(supervisor))["results"]

    assert (refused["status"], later["status"]) == ("quarantined", "applied")
    assert result["status"] == "conflict" and result["conflicts"][0]["kind"] == "delete_vs_edit"
    assert result["data"]["deleted"] is False
    encounter_row = Encounter.objects.get(pk=record_id)
    assert (encounter_row.is_deleted, encounter_row.location) == (False, "B: later")


@pytest.mark.parametrize("op", ["update", "delete"])
def test_a_change_sent_out_of_order_and_applied_after_review_does_not_replace_its_writers_later_edit(
    program: Program, crew_member: CrewMember, op: str
) -> None:
    """Made before the edit that reached the server first, it arrived after it (and was kept
    as out of order): by the device's own numbering it was made first, so the later edit is
    one it never saw."""
    record_id = encounter(crew_member, assessment="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    earlier = _change(device, op, record_id, "A: earlier")
    later = device.mutation("update", "care.encounter", record_id, {"assessment": "B: later"}, 1)
    assert device.push(later)[0]["status"] == "applied"
    assert device.push(earlier)[0]["error"]["code"] == "mutation_out_of_order"

    [result] = _apply(supervisor, _quarantined_ids(supervisor))["results"]

    assert result["status"] == "conflict", result
    encounter_row = Encounter.objects.get(pk=record_id)
    assert (encounter_row.assessment, encounter_row.is_deleted) == ("B: later", False)


@pytest.mark.parametrize("op", ["update", "delete"])
def test_a_writers_change_made_after_a_refusal_meets_what_a_review_applied_later_as_a_conflict(
    program: Program, crew_member: CrewMember, op: str
) -> None:
    """The device was told its first edit was refused and took the server's copy back: its
    next change was made without that edit, which a supervisor applies meanwhile. Merged as
    the device's own write, the review's text would be replaced (or deleted) unseen."""
    record_id = encounter(crew_member, assessment="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    refused = _refused_off_the_crew(device, _change(device, "update", record_id, "A: offline"))
    made_on_the_servers_copy = _change(device, op, record_id, "B: rewritten")
    [reviewed] = _apply(supervisor, _quarantined_ids(supervisor))["results"]

    [result] = device.push(made_on_the_servers_copy)

    assert (refused["status"], reviewed["status"], reviewed["version"]) == ("quarantined", "applied", 2)
    assert result["status"] == "conflict", result
    encounter_row = Encounter.objects.get(pk=record_id)
    assert (encounter_row.assessment, encounter_row.is_deleted) == ("A: offline", False)


@pytest.mark.django_db(transaction=True)  # the feed serves only committed transactions
def test_what_applies_after_review_reaches_its_writers_device(program: Program, crew_member: CrewMember) -> None:
    """A quarantined change is dropped from the outbox and the server's copy replaces the
    device's; a created record it lost is dropped. What a supervisor then applies is written
    as that device's own write, which the feed does not send back to it: the device would
    keep the copy without the change (and, sending it whole, would undo it) and never get
    the record it created."""
    record_id = encounter(crew_member, location="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    new_record_id = uuid.uuid4()
    late = [
        device.mutation("update", "care.encounter", record_id, {"location": "written offline"}, 1),
        device.mutation("create", "care.encounter", new_record_id, encounter_fields(crew_member, location="new")),
    ]
    device.push(device.mutation("update", "care.encounter", record_id, {"assessment": "Calm."}, 1))
    refused = device.push(*late)  # numbered below what the device sent already: kept for review
    _, cursor = device.pull()

    results = _apply(supervisor, _quarantined_ids(supervisor))["results"]
    entries, _ = device.pull(cursor)

    assert [r["error"]["code"] for r in refused] == ["mutation_out_of_order"] * 2
    assert [r["status"] for r in results] == ["applied", "applied"]
    latest = {entry["id"]: (entry["version"], entry["data"]["location"]) for entry in entries}
    assert latest == {str(record_id): (3, "written offline"), str(new_record_id): (1, "new")}


def test_what_still_cannot_apply_is_quarantined_again_saying_why(program: Program, crew_member: CrewMember) -> None:
    record_id = encounter(crew_member)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    UnitMember.objects.filter(user=crew_member.user).delete()
    device = SimDevice(crew_member)
    [refused] = device.push(device.mutation("update", "care.encounter", record_id, {"location": "x"}, 1))
    assert refused["error"]["code"] == "not_permitted"

    [result] = _apply(supervisor, _quarantined_ids(supervisor))["results"]

    assert (result["status"], result["error"]["code"]) == ("quarantined", "not_permitted")
    assert _quarantined_ids(supervisor) == [result["quarantine_id"]]


def _handed_over_edit(
    program: Program, crew_member: CrewMember, fields: dict[str, Any]
) -> tuple[uuid.UUID, CrewMember]:
    """A crew's edit of an encounter, handed over by its revoked tablet (so kept, not applied);
    and a supervisor of the program."""
    record_id = encounter(crew_member)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    revoke_device(crew_member)
    device.push(device.mutation("update", "care.encounter", record_id, fields, 1))
    return record_id, supervisor


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"op": "remove"}, "invalid_op", "mutations.0.op"),
        ({"fields": {"location": "nul\x00here"}}, "invalid_text", "mutations.0.fields.location"),
        ({"observed_at": "yesterday"}, "invalid_observed_at", "mutations.0.observed_at"),
        ({"color": "red"}, "unknown_field", "mutations.0.color"),
    ],
)
def test_a_change_the_server_could_not_read_as_sent_stays_quarantined_after_review(
    program: Program, crew_member: CrewMember, change: dict[str, Any], code: str, field: str
) -> None:
    record_id = encounter(crew_member, location="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    [refused] = device.push({**device.mutation("update", "care.encounter", record_id, {"location": "x"}, 1), **change})
    assert (refused["error"]["code"], refused["error"]["field"]) == (code, field)

    [result] = _apply(supervisor, _quarantined_ids(supervisor))["results"]

    assert (result["status"], result["error"]["code"], result["error"]["field"]) == ("quarantined", code, field)
    assert Encounter.objects.get(pk=record_id).location == "as first written"
    assert _quarantined_ids(supervisor) == [result["quarantine_id"]]


def test_only_a_supervisor_of_the_records_program_applies_it_again(program: Program, crew_member: CrewMember) -> None:
    _record_id, supervisor = _handed_over_edit(program, crew_member, {"location": "x"})
    [mutation_id] = _quarantined_ids(supervisor)
    case_manager = make_crew_member(program, role=Role.CASE_MANAGER)
    other_programs_supervisor = make_crew_member(ProgramFactory.create(), role=Role.SUPERVISOR)

    answers = [
        _apply(reviewer, [mutation_id], expect=404)
        for reviewer in (case_manager, other_programs_supervisor, make_crew_member(program, unit=crew_member.unit))
    ]
    not_quarantined = _apply(supervisor, [mutation_id + 1000], expect=404)

    assert [(a["code"], a["errors"][0]["field"]) for a in [*answers, not_quarantined]] == [("not_found", "ids.0")] * 4
    assert Mutation.objects.get(pk=mutation_id).status == MutationStatus.QUARANTINED


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": "1"}, "ids"),
        ({"ids": []}, "ids"),
        ({"ids": [1, 1]}, "ids"),
        ({"ids": [0]}, "ids.0"),
        ({"ids": ["13"]}, "ids.0"),
        ({"ids": [1, 2.0]}, "ids.1"),
        ({"ids": list(range(1, 202))}, "ids"),
        ({"ids": [1], "also": 2}, "also"),
    ],
)
def test_a_malformed_review_is_a_400_naming_the_field(crew_member: CrewMember, body: Any, field: str) -> None:
    response = sync_client(crew_member).post(APPLY, body, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field


def test_the_records_a_review_answers_with_are_a_read_by_the_reviewer(
    program: Program, crew_member: CrewMember
) -> None:
    record_id, supervisor = _handed_over_edit(program, crew_member, {"assessment": "Written offline."})
    ids = list(Mutation.objects.filter(status=MutationStatus.QUARANTINED).values_list("pk", flat=True))

    [result] = _apply(supervisor, ids)["results"]

    assert result["data"]["assessment"] == "Written offline."
    reads = AuditEvent.objects.filter(actor_id=supervisor.user.pk, action="read", channel="sync")
    assert list(reads.values_list("record_type", "record_id")) == [("care.encounter", record_id)]


def test_listing_the_quarantine_is_a_read_of_the_records_it_holds(program: Program, crew_member: CrewMember) -> None:
    record_id, supervisor = _handed_over_edit(program, crew_member, {"assessment": "Written offline."})

    assert len(_quarantined_ids(supervisor)) == 1

    reads = AuditEvent.objects.filter(actor_id=supervisor.user.pk, action="read", channel="sync")
    assert list(reads.values_list("record_type", "record_id", "device_id")) == [
        ("care.encounter", record_id, supervisor.device.pk)
    ]


def test_a_change_another_supervisor_applied_meanwhile_is_not_applied_or_credited_twice(
    program: Program, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two supervisors release the same handed-over change at once (a double click, two
    tabs): the second finds it applied by the first once it holds the device's lock. It is no
    longer in quarantine, so the second answers 404 and the audit trail does not name the
    second as a writer of the record."""
    record_id, second = _handed_over_edit(program, crew_member, {"assessment": "Written offline."})
    first = make_crew_member(program, role=Role.SUPERVISOR)
    [mutation_id] = _quarantined_ids(second)
    real_unreadable_as_sent = push.unreadable_as_sent

    def read_once_the_first_supervisor_has_applied_it(mutation: Mutation) -> bool:
        monkeypatch.setattr(push, "unreadable_as_sent", real_unreadable_as_sent)
        review.apply_after_review(
            mutation_ids=[mutation_id],
            reviewer=first.user,
            accessor=Accessor(user=first.user, device_id=first.device.pk, channel=AccessChannel.SYNC),
        )
        return real_unreadable_as_sent(mutation)

    # The second supervisor has found it reviewable; the first one's release commits now.
    monkeypatch.setattr(push, "unreadable_as_sent", read_once_the_first_supervisor_has_applied_it)

    answer = _apply(second, [mutation_id], expect=404)

    assert (answer["code"], answer["errors"][0]["field"]) == ("not_found", "ids.0")
    assert Mutation.objects.get(pk=mutation_id).status == MutationStatus.APPLIED
    released = AuditEvent.objects.filter(record_id=record_id, action="update")
    assert list(released.values_list("actor_id", flat=True)) == [first.user.pk]


@pytest.mark.django_db(transaction=True)  # the sweep runs on its own connection, as the beat's task does
def test_the_stranded_sweep_does_not_take_a_reviewed_change_from_under_its_review(
    program: Program, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep that applies mutations a dying server left received runs every minute, and a
    change put back for review was received long ago: if it could see the change between
    being put back and being applied, it would apply it as an ordinary write of its device,
    which the feed never sends back to that device, which had dropped it as refused."""
    record_id = encounter(crew_member, location="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    late = device.mutation("update", "care.encounter", record_id, {"location": "offline"}, 1)
    device.push(device.mutation("update", "care.encounter", record_id, {"assessment": "Calm."}, 1))
    [refused] = device.push(late)  # numbered below what the device sent already: kept for review
    _, cursor = device.pull()
    Mutation.objects.filter(status=MutationStatus.QUARANTINED).update(received_at=timezone.now() - timedelta(hours=1))
    real_apply_received = push.apply_received

    def apply_after_a_sweep_has_run(**arguments: Any) -> push.Applied:
        monkeypatch.setattr(push, "apply_received", real_apply_received)

        def sweep() -> None:
            try:
                push.apply_stranded(older_than=timedelta(minutes=1))
            finally:
                connection.close()

        sweeper = threading.Thread(target=sweep)
        sweeper.start()
        sweeper.join(timeout=30)
        return real_apply_received(**arguments)

    monkeypatch.setattr(push, "apply_received", apply_after_a_sweep_has_run)

    [result] = _apply(supervisor, _quarantined_ids(supervisor))["results"]
    entries, _ = device.pull(cursor)

    assert (refused["error"]["code"], result["status"]) == ("mutation_out_of_order", "applied")
    assert [(entry["version"], entry["data"]["location"]) for entry in entries] == [(3, "offline")]


DISMISS = "/api/v1/sync/quarantine/dismiss/"


def test_a_supervisor_sets_a_change_aside_saying_why_and_its_writer_sees_it(
    program: Program, crew_member: CrewMember
) -> None:
    """A change no review can make applicable (sent with a misspelt key) leaves the
    reviewers' queue once a supervisor sets it aside; it stays in the ledger as sent, and its
    writer sees who set it aside and why."""
    record_id = encounter(crew_member, assessment="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    manager = make_crew_member(program, role=Role.CASE_MANAGER)
    device = SimDevice(crew_member)
    mutation = device.mutation("update", "care.encounter", record_id, {"assessment": "typo'd offline"}, 1)
    mutation["assesment_note"] = "misspelt"
    [kept] = device.push(mutation)
    assert kept["status"] == "quarantined"
    [kept_id] = _quarantined_ids(supervisor)

    blank = sync_client(supervisor).post(DISMISS, {"ids": [kept_id], "reason": "  "}, format="json")
    by_writer = sync_client(crew_member).post(DISMISS, {"ids": [kept_id], "reason": "Mine"}, format="json")
    by_manager = sync_client(manager).post(DISMISS, {"ids": [kept_id], "reason": "Not mine"}, format="json")
    set_aside = sync_client(supervisor).post(
        DISMISS, {"ids": [kept_id], "reason": "Re-entered online by the crew"}, format="json"
    )
    again = sync_client(supervisor).post(DISMISS, {"ids": [kept_id], "reason": "Twice"}, format="json")
    apply_after = _apply(supervisor, [kept_id], expect=404)

    assert (blank.status_code, blank.json()["errors"][0]["field"]) == (400, "reason")
    assert [answer.status_code for answer in (by_writer, by_manager)] == [404, 404]
    assert set_aside.status_code == 204
    assert (again.status_code, again.json()["errors"][0]["field"]) == (404, "ids.0")
    assert apply_after["errors"][0]["field"] == "ids.0"
    assert _quarantined_ids(supervisor) == []
    [seen_by_writer] = sync_client(crew_member).get("/api/v1/sync/quarantine/").json()["results"]
    assert seen_by_writer["id"] == kept_id
    assert seen_by_writer["dismissed"]["by"] == str(supervisor.user.pk)
    assert seen_by_writer["dismissed"]["reason"] == "Re-entered online by the crew"
    assert seen_by_writer["dismissed"]["code"] == "reviewed"
    stored = Mutation.objects.get(pk=kept_id)
    assert (stored.status, stored.payload["assesment_note"]) == (MutationStatus.QUARANTINED, "misspelt")
    assert Encounter.objects.get(pk=record_id).assessment == "as first written"


def test_a_review_of_more_changes_than_one_review_takes_is_refused_before_any_device_is_locked(
    program: Program, crew_member: CrewMember
) -> None:
    """The API's body is capped; the admin's selection ("select all" over a long queue) is
    not, and a review holds every device it takes from for as long as it applies."""
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    accessor = Accessor(user=supervisor.user, device_id=None, channel=AccessChannel.ADMIN)
    too_many = list(range(1, review.MAX_REVIEWED + 2))

    with pytest.raises(DomainError) as applying:
        review.apply_after_review(mutation_ids=too_many, reviewer=supervisor.user, accessor=accessor)
    with pytest.raises(DomainError) as setting_aside:
        review.dismiss_after_review(mutation_ids=too_many, reviewer=supervisor.user, reason="Duplicates")

    assert [(e.value.status_code, e.value.code, e.value.field) for e in (applying, setting_aside)] == [
        (400, "max_length", "ids")
    ] * 2


def test_a_change_another_supervisor_set_aside_meanwhile_is_not_applied(
    program: Program, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One supervisor applies a change again while another sets it aside: the second one's
    decision commits once the first has found the change reviewable, before it holds the
    device's lock. Under the lock the change is no longer waiting for review: nothing is
    applied, and it stays set aside as its writer was told."""
    record_id, applying = _handed_over_edit(program, crew_member, {"location": "written offline"})
    setting_aside = make_crew_member(program, role=Role.SUPERVISOR)
    [mutation_id] = _quarantined_ids(applying)
    real_unreadable_as_sent = push.unreadable_as_sent

    def read_once_the_other_supervisor_has_set_it_aside(mutation: Mutation) -> bool:
        monkeypatch.setattr(push, "unreadable_as_sent", real_unreadable_as_sent)
        review.dismiss_after_review(mutation_ids=[mutation_id], reviewer=setting_aside.user, reason="A duplicate")
        return real_unreadable_as_sent(mutation)

    monkeypatch.setattr(push, "unreadable_as_sent", read_once_the_other_supervisor_has_set_it_aside)

    answer = _apply(applying, [mutation_id], expect=404)

    assert (answer["code"], answer["errors"][0]["field"]) == ("not_found", "ids.0")
    stored = Mutation.objects.get(pk=mutation_id)
    assert (stored.status, stored.dismissed_by_id) == (MutationStatus.QUARANTINED, setting_aside.user.pk)
    assert Encounter.objects.get(pk=record_id).location != "written offline"
    assert not AuditEvent.objects.filter(record_id=record_id, actor_id=applying.user.pk).exclude(action="read").exists()


@pytest.mark.django_db(transaction=True)  # two writers, each on its own connection
def test_a_change_applied_after_review_while_a_colleague_edits_the_record_reaches_devices_after_the_edit(
    program: Program, crew_member: CrewMember
) -> None:
    """The review marked the mutation received, a write that took its transaction's id, before
    it waited for the record's lock: its newer version was served before the colleague's
    older one, and a device keeping the last it is sent (WatermelonDB, protocol 1) ended
    without the reviewed change."""
    record_id = encounter(crew_member, location="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    colleague, reader = (SimDevice(make_crew_member(program, unit=crew_member.unit)) for _ in range(2))
    writer = SimDevice(crew_member)
    refused = _refused_off_the_crew(writer, _change(writer, "update", record_id, "Written offline."))
    kept = _quarantined_ids(supervisor)
    _, cursor = reader.pull()

    def edit() -> None:
        [edited] = colleague.push(colleague.mutation("update", "care.encounter", record_id, {"location": "Home"}, 1))
        assert edited["status"] == "applied", edited

    results, waited = run_while_another_writer_holds(
        record_id,
        edit,
        lambda: review.apply_after_review(
            mutation_ids=kept, reviewer=supervisor.user, accessor=in_the_admin(supervisor.user)
        ),
        edit_once_waited=True,
    )
    entries, _ = reader.pull(cursor)

    assert (refused["error"]["code"], waited, [result["status"] for result in results]) == (
        "not_permitted",
        True,
        ["applied"],
    )
    assert [entry["version"] for entry in entries if entry["id"] == str(record_id)] == [2, 3]
    assert entries[-1]["data"]["assessment"] == "Written offline."
