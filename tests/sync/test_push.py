from __future__ import annotations

import base64
import json
import uuid
from typing import Any
from unittest.mock import ANY

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import Program, Role
from apps.audit.models import AuditEvent
from apps.care.models import ClinicalNote, Encounter, Person, Referral
from apps.common.api.errors import DomainError
from apps.sync import conf, push, review
from apps.sync.models import ChangeEntry, Conflict, Mutation, MutationStatus, RecordVersion, SyncedRecord
from apps.sync.services import RecordIdHeld, publish_record
from tests.accounts.factories import ProgramFactory, device_with_token
from tests.conftest import CrewMember, make_crew_member
from tests.sync.helpers import (
    SimDevice,
    encounter_fields,
    now_iso,
    run_while_another_writer_holds,
    stored_unapplied,
    sync_client,
)
from tests.teams.factories import UnitMemberFactory

# The feed serves only what every older transaction has finished, so these tests commit.
pytestmark = pytest.mark.django_db(transaction=True)


def teammate_device(member: CrewMember) -> SimDevice:
    """Another device of the same unit's crew."""
    return SimDevice(make_crew_member(member.unit.program, unit=member.unit))


def created(device: SimDevice, **overrides: Any) -> tuple[uuid.UUID, dict[str, Any]]:
    record_id = uuid.uuid4()
    [result] = device.push(
        device.mutation("create", "care.encounter", record_id, encounter_fields(device.member, **overrides))
    )
    assert result["status"] == "applied", result
    return record_id, result


def test_a_created_record_is_applied_versioned_and_fed_to_the_crew_but_not_echoed(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    teammate = teammate_device(crew_member)

    record_id, result = created(device, location="Marcus Garvey Park")

    assert result["version"] == 1 and result["data"]["location"] == "Marcus Garvey Park"
    assert Encounter.objects.get(pk=record_id).created_by == crew_member.user
    entries, _ = teammate.pull()
    assert [(e["id"], e["op"], e["version"]) for e in entries] == [(str(record_id), "upsert", 1)]
    assert device.pull()[0] == []  # its own write does not come back


def test_replayed_batch_returns_the_stored_results_and_changes_nothing(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    batch = [
        device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member)),
        device.mutation("update", "care.encounter", record_id, {"location": "Harlem Hospital"}, base_version=1),
    ]
    first = device.push(*batch)
    counts = (Mutation.objects.count(), RecordVersion.objects.count(), ChangeEntry.objects.count())

    again = device.push(*batch)

    assert [r["status"] for r in first] == ["applied", "applied"]
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]
    assert [r["original_status"] for r in again] == ["applied", "applied"]
    assert [r["version"] for r in again] == [r["version"] for r in first] == [1, 2]
    assert [r["data"] for r in again] == [r["data"] for r in first]
    assert again[1]["data"]["location"] == "Harlem Hospital"
    assert (Mutation.objects.count(), RecordVersion.objects.count(), ChangeEntry.objects.count()) == counts
    # The ledger names each result's version; its data is the version's, not stored twice.
    assert [sorted(m.result) for m in Mutation.objects.order_by("id")] == [sorted(set(first[0]) - {"data"})] * 2


def test_a_replay_gives_every_result_naming_one_version_its_data(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    fields = encounter_fields(crew_member)
    batch = [
        device.mutation("create", "care.encounter", record_id, fields),
        # Changes nothing: applied at the version the create made.
        device.mutation("update", "care.encounter", record_id, {"location": fields["location"]}, base_version=1),
    ]
    first = device.push(*batch)

    again = device.push(*batch)

    assert [r["version"] for r in first] == [1, 1]
    assert [r["data"] for r in again] == [r["data"] for r in first]


def test_a_reused_mutation_id_with_other_content_is_rejected_and_the_first_stands(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    record_id, _ = created(device, location="first")
    reused = device.mutation("update", "care.encounter", record_id, {"location": "second"}, base_version=1)
    reused["mutation_id"] -= 1

    [result] = device.push(reused)

    assert result["status"] == "rejected" and result["error"]["code"] == "mutation_id_reused"
    assert Encounter.objects.get(pk=record_id).location == "first"


def last_mutation_id(device: SimDevice) -> int:
    response = device.client().get("/api/v1/sync/push/")
    assert response.status_code == 200, response.content
    position: int = response.json()["last_mutation_id"]
    return position


def test_a_device_whose_counter_went_back_learns_where_its_numbering_continues(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    teammate = teammate_device(crew_member)
    assert last_mutation_id(device) == 0
    first_id, first = created(device, location="first")
    created(device, location="second")
    stored = device.next_mutation_id - 1
    created(teammate)  # another device's numbering is its own
    assert last_mutation_id(device) == stored

    # Its local database restored from a backup: the counter starts again at the first id.
    restored = device.mutation("update", "care.encounter", first_id, {"location": "third"}, base_version=1)
    restored["mutation_id"] = first["mutation_id"]
    [reused] = device.push(restored)
    assert reused["error"]["code"] == "mutation_id_reused"
    assert last_mutation_id(device) == stored  # a rejected mutation is not stored

    restored["mutation_id"] = last_mutation_id(device) + 1
    [result] = device.push(restored)

    assert result["status"] == "applied", result
    assert Encounter.objects.get(pk=first_id).location == "third"
    assert last_mutation_id(device) == restored["mutation_id"]


def test_the_push_position_needs_a_device_token(crew_member: CrewMember) -> None:
    assert APIClient().get("/api/v1/sync/push/").status_code == 401


def test_a_refused_change_of_a_record_the_writer_sees_brings_the_servers_copy_back(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    teammate = teammate_device(crew_member)
    encounter_id, _ = created(device, location="first")
    note_id = uuid.uuid4()
    signed = {"encounter_id": str(encounter_id), "body": "Safety plan agreed.", "signed_at": now_iso()}
    device.push(device.mutation("create", "care.note", note_id, signed))
    _entries, cursor = device.pull()
    _entries, teammates_cursor = teammate.pull()
    unknown_key = device.mutation("update", "care.encounter", encounter_id, {"location": "third"}, base_version=1)
    unknown_key["colour"] = "red"

    results = device.push(
        # Refused as it is read and stored, while the batch applies, and by the domain alone.
        unknown_key,
        device.mutation("update", "care.encounter", encounter_id, {"disposition": "no_such_choice"}, 1),
        device.mutation("delete", "care.note", note_id, base_version=1),
    )

    assert [(r["status"], r["error"]["code"]) for r in results] == [
        ("quarantined", "unknown_field"),
        ("quarantined", "invalid_fields"),
        ("quarantined", "note_signed"),
    ]
    entries, _ = device.pull(cursor)
    assert sorted((e["id"], e["op"], e["version"]) for e in entries) == sorted(
        [(str(encounter_id), "upsert", 1)] * 2 + [(str(note_id), "upsert", 1)]
    )
    assert {e["data"]["location"] for e in entries if e["id"] == str(encounter_id)} == {"first"}
    assert [e["data"]["deleted"] for e in entries if e["id"] == str(note_id)] == [False]
    # Only the writer's devices: nothing changed for the crew.
    assert teammate.pull(teammates_cursor)[0] == []


def test_publishing_a_record_under_an_id_another_type_or_program_holds_is_refused_and_writes_nothing(
    crew_member: CrewMember,
) -> None:
    """A domain service that created a record under an id a client chose, without asking whose
    it was, published over the other record's head: a person became a status time in every
    feed, or moved to another program's. Sync refuses the publish, whatever service calls it,
    as a domain error (409 id_in_use naming the id, not a 500) that does not say whose the
    record holding the id is."""
    device = SimDevice(crew_member)
    encounter_id, _ = created(device)
    head_before = SyncedRecord.objects.values_list("record_type", "program_id", "version", "data").get(
        record_id=encounter_id
    )
    entries_before = ChangeEntry.objects.count()
    other_program = ProgramFactory.create(slug="boston-pilot", name="Boston pilot")
    of_another_type = Person(
        pk=encounter_id,
        program=crew_member.unit.program,
        unit=crew_member.unit,
        created_by=crew_member.user,
        given_name="Ana",
    )
    in_another_program = Encounter.objects.get(pk=encounter_id)
    in_another_program.program = other_program

    refusals = []
    for type_name, record in (("care.person", of_another_type), ("care.encounter", in_another_program)):
        with pytest.raises(RecordIdHeld) as refusal, transaction.atomic():
            publish_record(type_name=type_name, record=record, user=crew_member.user)
        refusals.append(refusal.value)

    assert [(error.status_code, error.code, error.field) for error in refusals] == [(409, "id_in_use", "id")] * 2
    assert all(isinstance(error, DomainError) for error in refusals)
    assert not [error for error in refusals if str(crew_member.unit.program_id) in error.detail]
    assert (
        SyncedRecord.objects.values_list("record_type", "program_id", "version", "data").get(record_id=encounter_id)
        == head_before
    )
    assert RecordVersion.objects.filter(record_id=encounter_id).count() == 1
    assert ChangeEntry.objects.count() == entries_before


def test_a_refused_change_sends_back_the_copy_a_concurrent_writer_commits_not_the_one_before(
    crew_member: CrewMember,
) -> None:
    """The copy sent back is read under the record's lock: read while a case manager's edit is
    still open, it would reach the feed after that edit and leave the tablet a stale copy."""
    device = SimDevice(crew_member)
    encounter_id, _ = created(device, location="first")
    _entries, cursor = device.pull()

    def case_managers_edit() -> None:
        encounter = Encounter.objects.get(pk=encounter_id)
        encounter.location = "second"
        encounter.save()
        publish_record(type_name="care.encounter", record=encounter, user=None)

    def refused_push() -> list[dict[str, Any]]:
        refused = device.mutation("update", "care.encounter", encounter_id, {"location": "third"}, 1)
        refused["colour"] = "red"
        return device.push(refused)

    results, waited_for_the_edit = run_while_another_writer_holds(encounter_id, case_managers_edit, refused_push)

    assert [result["error"]["code"] for result in results] == ["unknown_field"]
    assert waited_for_the_edit
    entries, _ = device.pull(cursor)
    last = [entry for entry in entries if entry["id"] == str(encounter_id)][-1]
    assert (last["version"], last["data"]["location"]) == (2, "second")


def test_a_refused_change_of_a_record_the_writer_may_not_see_sends_nothing_back(crew_member: CrewMember) -> None:
    outsider = SimDevice(make_crew_member(Program.objects.create(slug="other", name="Other")))
    encounter_id, _ = created(SimDevice(crew_member))
    _entries, cursor = outsider.pull()

    [result] = outsider.push(
        outsider.mutation("update", "care.encounter", encounter_id, {"location": "elsewhere"}, base_version=1)
    )

    assert (result["status"], result["error"]["code"]) == ("quarantined", "not_permitted")
    assert outsider.pull(cursor)[0] == []


def test_out_of_order_mutation_is_quarantined_and_visible_to_the_user_and_a_supervisor(
    program: Program, crew_member: CrewMember, outsider: CrewMember
) -> None:
    device = SimDevice(crew_member)
    created(device)
    late = device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member))
    late["mutation_id"] = 5
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)

    [result] = device.push(late)

    assert result["status"] == "quarantined" and result["error"]["code"] == "mutation_out_of_order"
    assert Encounter.objects.count() == 1
    own = crew_member.client().get("/api/v1/sync/quarantine/").json()["results"]
    supervised = supervisor.client().get("/api/v1/sync/quarantine/").json()["results"]
    outsiders = outsider.client().get("/api/v1/sync/quarantine/").json()["results"]
    assert [m["mutation_id"] for m in own] == [m["mutation_id"] for m in supervised] == [5]
    assert own[0]["payload"]["fields"]["location"] == late["fields"]["location"]  # kept, not lost
    assert outsiders == []


@pytest.mark.parametrize("split", [False, True], ids=["one batch", "two batches"])
def test_a_mutation_below_one_kept_for_its_shape_is_out_of_order_however_the_batch_is_split(
    crew_member: CrewMember, split: bool
) -> None:
    """A mutation kept in quarantine for its shape was still sent: one numbered below it came
    out of order, in the same batch as in a later one. Otherwise how the client happened to
    split its outbox would decide whether a change made "before" it applies."""
    device = SimDevice(crew_member)
    created(device)
    highest = device.next_mutation_id - 1
    misshapen = device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member))
    misshapen["op"] = "upsert"
    misshapen["mutation_id"] = highest + 10
    late_id = uuid.uuid4()
    late = device.mutation("create", "care.encounter", late_id, encounter_fields(crew_member))
    late["mutation_id"] = highest + 5

    results = device.push(misshapen) + device.push(late) if split else device.push(misshapen, late)

    assert [(r["status"], (r.get("error") or {}).get("code")) for r in results] == [
        ("quarantined", "invalid_op"),
        ("quarantined", "mutation_out_of_order"),
    ]
    assert not Encounter.objects.filter(pk=late_id).exists()


def test_the_quarantine_and_conflict_lists_page_newest_first_through_every_entry(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    missing = [
        device.mutation("update", "care.encounter", uuid.uuid4(), {"location": "x"}, base_version=1) for _ in range(205)
    ]
    device.push(*missing)
    record_id, _ = created(device)
    stale = {"assessment": "Calm.", "location": "Home", "disposition": "declined_services"}
    newer = {"assessment": "Agitated.", "location": "Street", "disposition": "referred"}
    device.push(device.mutation("update", "care.encounter", record_id, newer, 1))
    teammate = teammate_device(crew_member)
    teammate.push(teammate.mutation("update", "care.encounter", record_id, stale, 1))
    client = crew_member.client()

    first = client.get("/api/v1/sync/quarantine/").json()
    second = client.get("/api/v1/sync/quarantine/", {"cursor": first["cursor"]}).json()
    loser = teammate.member.client()  # the conflicts are the teammate's, whose edits lost
    conflict_pages = [loser.get("/api/v1/sync/conflicts/", {"limit": 2}).json()]
    conflict_pages.append(
        loser.get("/api/v1/sync/conflicts/", {"limit": 2, "cursor": conflict_pages[0]["cursor"]}).json()
    )

    listed = [m["mutation_id"] for m in first["results"] + second["results"]]
    assert [len(first["results"]), len(second["results"])] == [200, 5]
    assert [first["has_more"], second["has_more"]] == [True, False]
    assert second["cursor"] is None
    assert listed == sorted((m["mutation_id"] for m in missing), reverse=True)  # newest first, each once
    conflicts = [c["id"] for page in conflict_pages for c in page["results"]]
    assert [page["has_more"] for page in conflict_pages] == [True, False]
    assert sorted(conflicts) == sorted(str(pk) for pk in Conflict.objects.values_list("id", flat=True))
    assert len(conflicts) == 3


@pytest.mark.parametrize(
    "query",
    [
        {"cursor": "not a cursor"},
        {"cursor": base64.urlsafe_b64encode(b"1.99999999999999999999").decode()},  # an id out of range
        {"cursor": base64.urlsafe_b64encode(b"9999999999999999999.1").decode()},  # a time out of range
        {"limit": 0},
        {"limit": 201},
        {"page": 2},
    ],
)
def test_a_bad_list_query_is_refused_naming_its_field(crew_member: CrewMember, query: dict[str, Any]) -> None:
    for path in ("/api/v1/sync/quarantine/", "/api/v1/sync/conflicts/"):
        response = crew_member.client().get(path, query)

        assert response.status_code == 400, (path, response.content)
        assert response.json()["errors"][0]["field"] == next(iter(query))


def test_bad_mutations_are_quarantined_one_by_one_and_never_block_the_good_ones(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    good_id = uuid.uuid4()
    mutations = [
        device.mutation("create", "care.unknown_thing", uuid.uuid4(), {}),
        device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member, started_at=12)),
        device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member, mood="calm")),
        device.mutation("update", "care.encounter", uuid.uuid4(), {"location": "x"}, base_version=1),
        device.mutation("create", "care.encounter", good_id, encounter_fields(crew_member)),
        {"mutation_id": "seven", "type": "care.encounter", "id": str(uuid.uuid4()), "op": "create"},
        device.mutation("create", "care.encounter", "not-a-uuid", {}),
        device.mutation("explode", "care.encounter", uuid.uuid4(), {}),
    ]

    results = device.push(*mutations)

    assert [(r["status"], r.get("error", {}).get("code")) for r in results] == [
        ("quarantined", "unknown_record_type"),
        ("quarantined", "invalid_fields"),
        ("quarantined", "invalid_fields"),
        ("quarantined", "record_not_found"),
        ("applied", None),
        ("rejected", "invalid_mutation_id"),
        ("quarantined", "invalid_id"),
        ("quarantined", "invalid_op"),
    ]
    assert results[1]["error"]["field"] == "fields.started_at"
    assert results[2]["error"]["field"] == "fields.mood"
    assert list(Encounter.objects.values_list("pk", flat=True)) == [good_id]
    # The device's next sync is not blocked by what was quarantined.
    [later] = device.push(device.mutation("update", "care.encounter", good_id, {"location": "y"}, base_version=1))
    assert later["status"] == "applied"


def test_a_batch_with_a_refused_change_applies_the_rest_in_the_order_they_were_made(crew_member: CrewMember) -> None:
    """P2/P3: a domain refusal in a batch sends it one mutation at a time; the others must
    still apply in the order the user made them. Out of order, an edit would meet a record
    its create has not made yet (and be quarantined), or an older edit would land last and
    silently replace the user's latest value."""
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    mutations = [
        device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member, location="first")),
        device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(uuid.uuid4()), "body": "Seen."}),
        device.mutation("update", "care.encounter", record_id, {"location": "second"}, base_version=1),
        device.mutation("update", "care.encounter", record_id, {"location": "latest"}, base_version=1),
    ]

    results = device.push(*mutations)

    assert [(r["status"], r.get("error", {}).get("code")) for r in results] == [
        ("applied", None),
        ("quarantined", "parent_not_found"),
        ("applied", None),
        ("applied", None),
    ]
    assert Encounter.objects.get(pk=record_id).location == "latest"
    assert [r["version"] for r in results] == [1, None, 2, 3]


def test_changes_of_a_record_whose_create_is_quarantined_say_so_and_wait_with_it(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    refused = device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member, started_at=12))
    edit = device.mutation("update", "care.encounter", record_id, {"location": "x"}, base_version=1)
    # In the batch of the create, and in later ones (read from the ledger).
    same_batch = device.push(refused, edit)
    later_edit = device.mutation("update", "care.encounter", record_id, {"disposition": "referred"}, base_version=1)
    note = device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(record_id), "body": "Seen."})
    later = device.push(later_edit, note)
    unrelated = device.push(device.mutation("update", "care.encounter", uuid.uuid4(), {"location": "y"}, 1))

    assert [(r["status"], r["error"]["code"], r["error"]["field"]) for r in same_batch + later + unrelated] == [
        ("quarantined", "invalid_fields", "fields.started_at"),
        ("quarantined", "record_quarantined", "id"),
        ("quarantined", "record_quarantined", "id"),
        ("quarantined", "parent_quarantined", "fields.encounter_id"),
        ("quarantined", "record_not_found", "id"),
    ]
    assert f"mutation_id {refused['mutation_id']}" in same_batch[1]["error"]["detail"]
    assert f"mutation_id {refused['mutation_id']}" in later[1]["error"]["detail"]


def _pushed_whole(device: SimDevice, *mutations: dict[str, Any]) -> dict[str, Any]:
    """The push's whole answer: its results, and what it released."""
    response = device.client().post("/api/v1/sync/push/", {"mutations": list(mutations)}, format="json")
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def test_changes_kept_because_their_encounter_was_refused_apply_once_the_device_sends_it_again_fixed(
    crew_member: CrewMember,
) -> None:
    """A clinician's note, referral and the referral's outcome, written under an encounter the
    server refused, are not left for a supervisor once the encounter is fixed: they apply
    with it, in the order they were made, and come to the device that holds them as refused."""
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    encounter_id, note_id, referral_id, outcome_id = (uuid.uuid4() for _ in range(4))
    refused = device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member, started_at=12))
    under_it = [
        device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Plan made."}),
        device.mutation(
            "create", "care.referral", referral_id, {"encounter_id": str(encounter_id), "service_type": "detox"}
        ),
        device.mutation(
            "create",
            "care.referral_outcome",
            outcome_id,
            {"referral_id": str(referral_id), "outcome": "scheduled", "observed_at": now_iso()},
        ),
    ]
    first = device.push(refused, *under_it)
    _, cursor = device.pull()
    _, teammate_cursor = teammate.pull()
    fixed = device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))

    answer = _pushed_whole(device, fixed)

    assert [r["error"]["code"] for r in first] == ["invalid_fields", *["parent_quarantined"] * 3]
    assert [(r["mutation_id"], r["status"]) for r in answer["results"]] == [(fixed["mutation_id"], "applied")]
    assert [(r["mutation_id"], r["status"], r["version"]) for r in answer["released"]] == [
        (m["mutation_id"], "applied", 1) for m in under_it
    ]
    assert answer["released"][0]["data"]["body"] == "Plan made."
    assert ClinicalNote.objects.get(pk=note_id).encounter_id == encounter_id
    assert Referral.objects.get(pk=referral_id).status == "scheduled"
    # The device took them for refused: they come to it, as its own writes would not.
    released = [
        ("care.note", str(note_id), 1),
        ("care.referral", str(referral_id), 1),
        ("care.referral", str(referral_id), 2),  # its status, from the outcome
        ("care.referral_outcome", str(outcome_id), 1),
    ]
    assert [(e["type"], e["id"], e["version"]) for e in device.pull(cursor)[0]] == released
    assert [(e["type"], e["id"], e["version"]) for e in teammate.pull(teammate_cursor)[0]] == [
        ("care.encounter", str(encounter_id), 1),
        *released,
    ]
    # Its writer's own changes, released by their own fix: in the audit trail as theirs, from
    # the request that released them.
    assert set(
        AuditEvent.objects.filter(record_id__in=[note_id, referral_id, outcome_id], action="create").values_list(
            "actor_id", "device_id", "ip_address"
        )
    ) == {(crew_member.user.pk, crew_member.device.pk, "127.0.0.1")}
    # Sent again (an answer lost), each is answered by its new result, and changes nothing.
    again = device.push(*under_it)
    assert [(r["status"], r["original_status"], r["version"]) for r in again] == [("duplicate", "applied", 1)] * 3
    assert RecordVersion.objects.filter(record_id=note_id).count() == 1


def test_a_released_change_that_cannot_apply_of_itself_is_kept_again_saying_why(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    encounter_id, signed_ahead_id, note_id = (uuid.uuid4() for _ in range(3))
    years_ahead = "2099-01-01T00:00:00+00:00"
    refused = device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member, started_at=12))
    signed_ahead = device.mutation(
        "create",
        "care.note",
        signed_ahead_id,
        {"encounter_id": str(encounter_id), "body": "x", "signed_at": years_ahead},
    )
    note = device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Calm."})
    first = device.push(refused, signed_ahead, note)

    answer = _pushed_whole(
        device, device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))
    )

    assert [r["error"]["code"] for r in first] == ["invalid_fields", "parent_quarantined", "parent_quarantined"]
    assert [r["status"] for r in answer["results"]] == ["applied"]
    assert [(r["mutation_id"], r["status"], r.get("error")) for r in answer["released"]] == [
        (
            signed_ahead["mutation_id"],
            "quarantined",
            {"code": "time_in_future", "detail": ANY, "field": "fields.signed_at"},
        ),
        (note["mutation_id"], "applied", None),
    ]
    assert list(ClinicalNote.objects.values_list("pk", flat=True)) == [note_id]
    assert Mutation.objects.get(mutation_id=signed_ahead["mutation_id"]).error_code == "time_in_future"


def test_an_update_kept_because_the_person_it_names_was_refused_stays_for_review_once_the_person_applies(
    crew_member: CrewMember,
) -> None:
    """P3: the device was sent the encounter as the server has it when its update was refused,
    and took that copy; the update applied later as the device's own write would be replaced
    unseen by the edit the user made since on that copy. It waits for review instead."""
    device = SimDevice(crew_member)
    encounter_id, person_id = created(device, assessment="A0")[0], uuid.uuid4()
    person = {"unit_id": str(crew_member.unit.pk), "given_name": "R."}
    refused_person = device.mutation("create", "care.person", person_id, {**person, "date_of_birth": "not a date"})
    naming_the_person = device.mutation(
        "update", "care.encounter", encounter_id, {"person_id": str(person_id), "assessment": "A-D1"}, base_version=1
    )
    first = device.push(refused_person, naming_the_person)

    answer = _pushed_whole(
        device,
        device.mutation("create", "care.person", person_id, person),
        device.mutation("update", "care.encounter", encounter_id, {"assessment": "A-D2"}, base_version=1),
    )

    assert [r["error"]["code"] for r in first] == ["invalid_fields", "parent_quarantined"]
    assert "for review together" in first[1]["error"]["detail"]
    assert [r["status"] for r in answer["results"]] == ["applied", "applied"]
    assert answer["released"] == []
    kept = Mutation.objects.get(device=crew_member.device, mutation_id=naming_the_person["mutation_id"])
    assert (kept.status, kept.error_code) == ("quarantined", "parent_quarantined")
    encounter = Encounter.objects.get(pk=encounter_id)
    assert (encounter.assessment, encounter.person_id) == ("A-D2", None)
    assert [
        data["assessment"]
        for data in RecordVersion.objects.filter(record_id=encounter_id)
        .order_by("version")
        .values_list("data", flat=True)
    ] == ["A0", "A-D2"]


def test_a_push_with_a_create_applies_at_once_while_an_unrelated_change_waits_on_a_refused_parent(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A note stuck under a refused encounter holds back only a push that sends that encounter
    again: any other push with a create is stored and applied in one transaction, as usual."""
    device = SimDevice(crew_member)
    stuck_under = uuid.uuid4()
    device.push(
        device.mutation("create", "care.encounter", stuck_under, encounter_fields(crew_member, started_at=12)),
        device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(stuck_under), "body": "Seen."}),
    )
    applied_the_long_way: list[object] = []
    real_apply_received = push.apply_received

    def apply_received(**arguments: Any) -> push.Applied:
        applied_the_long_way.append(arguments["device"])
        return real_apply_received(**arguments)

    monkeypatch.setattr(push, "apply_received", apply_received)

    _record_id, result = created(device)
    answer = _pushed_whole(
        device, device.mutation("create", "care.encounter", stuck_under, encounter_fields(crew_member))
    )

    assert result["status"] == "applied"
    assert [r["status"] for r in answer["results"]] == ["applied"]
    assert [r["status"] for r in answer["released"]] == ["applied"]
    assert applied_the_long_way == [crew_member.device]  # only the push sending it again


def test_a_change_kept_under_a_record_another_device_of_the_user_refused_waits_for_review(
    crew_member: CrewMember,
) -> None:
    """Only its own device sending the record again releases a kept change: one under a record
    refused from the user's other device is told it waits for review, and does."""
    device = SimDevice(crew_member)
    other_device, other_token = device_with_token(crew_member.user)
    other = SimDevice(CrewMember(crew_member.user, crew_member.unit, other_device, other_token))
    encounter_id = uuid.uuid4()
    device.push(device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member, started_at=12)))
    [kept] = other.push(
        other.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(encounter_id), "body": "Seen."})
    )

    answer = _pushed_whole(
        device, device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))
    )

    assert kept["error"]["code"] == "parent_quarantined"
    assert kept["error"]["detail"].endswith("this change is kept with it, for review together.")
    assert answer["released"] == []
    assert not ClinicalNote.objects.exists()


def _note_kept_under_a_refused_encounter(device: SimDevice) -> tuple[uuid.UUID, uuid.UUID, dict[str, Any]]:
    """The device's encounter refused (its started_at), and a note written under it kept as
    parent_quarantined: the encounter's id, the note's, and the note's create."""
    encounter_id, note_id = uuid.uuid4(), uuid.uuid4()
    refused = device.mutation("create", "care.encounter", encounter_id, encounter_fields(device.member, started_at=12))
    note = device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Calm."})
    first = device.push(refused, note)
    assert [r["error"]["code"] for r in first] == ["invalid_fields", "parent_quarantined"]
    return encounter_id, note_id, note


def test_a_record_of_another_type_made_under_a_refused_parents_id_releases_nothing(crew_member: CrewMember) -> None:
    """The note waits on its device's encounter. A person created under the encounter's id is
    not that encounter: the note stays kept, waiting, and the push does not say it released it."""
    device = SimDevice(crew_member)
    encounter_id, note_id, _note = _note_kept_under_a_refused_encounter(device)
    person = device.mutation("create", "care.person", encounter_id, {"unit_id": str(crew_member.unit.pk)})

    answer = _pushed_whole(device, person)

    assert ([r["status"] for r in answer["results"]], answer["released"]) == (["applied"], [])
    kept = Mutation.objects.get(device=crew_member.device, record_id=note_id)
    assert (kept.status, kept.error_code) == ("quarantined", "parent_quarantined")


@pytest.mark.parametrize(
    ("operation", "fields"),
    [("delete", None), ("update", {"body": "Written on the wrong person."})],
)
def test_a_note_kept_under_a_refused_encounter_is_not_released_by_the_fix_when_the_push_also_changes_it(
    crew_member: CrewMember, operation: str, fields: dict[str, Any] | None
) -> None:
    """The push deletes (or edits) the kept note, then sends its encounter fixed: the delete is
    kept with the note's create, and the fixed encounter must not bring the note to life over
    it (with the text the user deleted or changed): the note's changes stay for review."""
    device = SimDevice(crew_member)
    encounter_id, note_id, _note = _note_kept_under_a_refused_encounter(device)

    answer = _pushed_whole(
        device,
        device.mutation(operation, "care.note", note_id, fields),
        device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member)),
    )

    assert [(r["status"], r.get("error", {}).get("code")) for r in answer["results"]] == [
        ("quarantined", "record_quarantined"),
        ("applied", None),
    ]
    assert answer["released"] == []
    assert Encounter.objects.filter(pk=encounter_id).exists()
    assert not ClinicalNote.objects.filter(pk=note_id).exists()
    assert not SyncedRecord.objects.filter(record_id=note_id).exists()
    assert list(
        Mutation.objects.filter(record_id=note_id).order_by("id").values_list("operation", "status", "error_code")
    ) == [
        ("create", "quarantined", "parent_quarantined"),
        (operation, "quarantined", "record_quarantined"),
    ]


def test_a_note_kept_under_a_refused_encounter_is_not_released_by_a_fix_sent_before_its_delete_one_at_a_time(
    crew_member: CrewMember,
) -> None:
    """The same, the fix first and the note's delete after it, in a batch applied one mutation
    at a time (another change in it is refused): the delete, still to apply when the
    encounter is created, keeps the note from being released."""
    device = SimDevice(crew_member)
    encounter_id, note_id, _note = _note_kept_under_a_refused_encounter(device)

    answer = _pushed_whole(
        device,
        device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member)),
        device.mutation("delete", "care.note", note_id),
        device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(uuid.uuid4()), "body": "x"}),
    )

    assert [(r["status"], r.get("error", {}).get("code")) for r in answer["results"]] == [
        ("applied", None),
        ("quarantined", "record_quarantined"),
        ("quarantined", "parent_not_found"),
    ]
    assert answer["released"] == []
    assert not ClinicalNote.objects.filter(pk=note_id).exists()
    assert list(Mutation.objects.filter(record_id=note_id).order_by("id").values_list("error_code", flat=True)) == [
        "parent_quarantined",
        "record_quarantined",
    ]


def test_a_note_kept_under_a_refused_encounter_and_written_again_elsewhere_is_not_released_over_it(
    crew_member: CrewMember,
) -> None:
    """The user wrote the note again under another encounter (the same note, now on the
    server): the refused encounter, fixed later, does not release the old create over it,
    which would meet the note as a stale copy (a conflict a case manager could settle back
    to the old text). It stays for review."""
    device = SimDevice(crew_member)
    encounter_id, note_id, _note = _note_kept_under_a_refused_encounter(device)
    other_encounter_id, _ = created(device)
    [moved] = device.push(
        device.mutation(
            "create", "care.note", note_id, {"encounter_id": str(other_encounter_id), "body": "Calm; plan made."}
        )
    )

    answer = _pushed_whole(
        device, device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))
    )

    assert moved["status"] == "applied"
    assert [r["status"] for r in answer["results"]] == ["applied"]
    assert answer["released"] == []
    note = ClinicalNote.objects.get(pk=note_id)
    assert (note.encounter_id, note.body) == (other_encounter_id, "Calm; plan made.")
    assert not Conflict.objects.exists()
    assert RecordVersion.objects.filter(record_id=note_id).count() == 1
    assert list(Mutation.objects.filter(record_id=note_id).order_by("id").values_list("status", flat=True)) == [
        "quarantined",
        "applied",
    ]


def test_a_note_kept_under_a_refused_encounter_whose_delete_was_set_aside_is_not_released(
    crew_member: CrewMember,
) -> None:
    """The user deleted the kept note, and a supervisor set that delete aside (there was no
    note on the server to delete). The fixed encounter must still not bring the note to life:
    the set-aside delete says the user changed the note after its create."""
    device = SimDevice(crew_member)
    encounter_id, note_id, _note = _note_kept_under_a_refused_encounter(device)
    [deleted] = device.push(device.mutation("delete", "care.note", note_id))
    assert deleted["error"]["code"] == "record_quarantined"
    supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)
    delete = Mutation.objects.get(record_id=note_id, operation="delete")
    review.dismiss_after_review(mutation_ids=[delete.pk], reviewer=supervisor.user, reason="No such note here")

    answer = _pushed_whole(
        device, device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))
    )

    assert [r["status"] for r in answer["results"]] == ["applied"]
    assert answer["released"] == []
    assert not ClinicalNote.objects.filter(pk=note_id).exists()


def test_a_note_sent_again_under_another_refused_encounter_is_not_released_by_the_first_ones_fix(
    crew_member: CrewMember,
) -> None:
    """The note, kept under one refused encounter, was sent again (as a create, with what the
    user wrote since) under a second encounter, refused too. Fixing the first must not
    release the older create: the server would make the note with the old text and send it
    back over the device's newer one, and the newer create, meeting the note made, would stay
    behind. Both stay for review."""
    device = SimDevice(crew_member)
    encounter_id, note_id, _note = _note_kept_under_a_refused_encounter(device)
    second_encounter_id = uuid.uuid4()
    second = device.push(
        device.mutation("create", "care.encounter", second_encounter_id, encounter_fields(crew_member, started_at=12)),
        device.mutation(
            "create", "care.note", note_id, {"encounter_id": str(second_encounter_id), "body": "Calm; plan made."}
        ),
    )
    assert [r["error"]["code"] for r in second] == ["invalid_fields", "parent_quarantined"]

    answer = _pushed_whole(
        device, device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))
    )

    assert [r["status"] for r in answer["results"]] == ["applied"]
    assert answer["released"] == []
    assert not ClinicalNote.objects.filter(pk=note_id).exists()
    assert list(Mutation.objects.filter(record_id=note_id).values_list("status", flat=True)) == ["quarantined"] * 2


QUARANTINE = "/api/v1/sync/quarantine/"


def _other_tablet(member: CrewMember) -> SimDevice:
    """The member's second device."""
    other_device, other_token = device_with_token(member.user)
    return SimDevice(CrewMember(member.user, member.unit, other_device, other_token))


def _ledger_row(device: SimDevice, mutation: dict[str, Any]) -> Mutation:
    return Mutation.objects.get(device=device.member.device, mutation_id=mutation["mutation_id"])


def _kept_create_of(device: SimDevice, record_id: uuid.UUID) -> Mutation:
    return Mutation.objects.get(
        device=device.member.device, record_id=record_id, operation="create", status=MutationStatus.QUARANTINED
    )


def _how_kept(row: Mutation) -> tuple[str, str, uuid.UUID | None, int | None]:
    """Whether the row is set aside, and how: its status, why, by whom, for which create."""
    return row.status, row.dismiss_code, row.dismissed_by_id, row.superseded_by_id


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_a_note_sent_again_with_its_fixed_encounter_sets_aside_its_devices_kept_creates_not_another_devices(
    crew_member: CrewMember, one_at_a_time: bool
) -> None:
    """The device sends its refused encounter fixed, and the note under it as the user last
    wrote it (a new create, as a WatermelonDB app sends it): both apply, as the device's own
    writes, and that device's creates of them kept before are superseded. The server sets
    each aside in that push, as its writer's, naming the create that applied: kept as sent
    (P1), out of the supervisors' queue, its writer told why. The note's create kept from
    the user's other tablet is another device's change: it stays for review. The same when
    the push applies one mutation at a time (another change in it is refused)."""
    supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)
    device, other = SimDevice(crew_member), _other_tablet(crew_member)
    encounter_id, note_id, note = _note_kept_under_a_refused_encounter(device)
    [others] = other.push(
        other.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Calm (tablet 2)."})
    )
    fixed = device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))
    edited = device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Calm; plan."})
    refused = device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(uuid.uuid4()), "body": "x"})
    queue_before = _queue_of(supervisor)

    answer = _pushed_whole(device, fixed, edited, *([refused] if one_at_a_time else []))

    assert others["error"]["code"] == "parent_quarantined"
    assert [r["status"] for r in answer["results"]] == [
        "applied",
        "applied",
        *(["quarantined"] if one_at_a_time else []),
    ]
    assert answer["released"] == []
    assert ClinicalNote.objects.get(pk=note_id).body == "Calm; plan."
    kept_encounter, kept_note = _kept_create_of(device, encounter_id), _ledger_row(device, note)
    others_note = _ledger_row(other, others)
    assert [_how_kept(row) for row in (kept_encounter, kept_note, others_note)] == [
        ("quarantined", "superseded", crew_member.user.pk, _ledger_row(device, fixed).pk),
        ("quarantined", "superseded", crew_member.user.pk, _ledger_row(device, edited).pk),
        ("quarantined", "", None, None),
    ]
    assert kept_note.dismissed_at is not None and others_note.dismissed_at is None
    assert kept_note.payload["fields"]["body"] == "Calm."  # kept as it was sent
    assert sorted(queue_before) == sorted([kept_encounter.pk, kept_note.pk, others_note.pk])
    assert _queue_of(supervisor) == [others_note.pk, *([_ledger_row(device, refused).pk] if one_at_a_time else [])]
    seen_by_writer = {row["id"]: row["dismissed"] for row in sync_client(crew_member).get(QUARANTINE).json()["results"]}
    assert seen_by_writer[others_note.pk] is None
    for kept in (kept_encounter, kept_note):
        assert seen_by_writer[kept.pk] == {
            "at": ANY,
            "by": str(crew_member.user.pk),
            "reason": ANY,
            "code": "superseded",
        }
        assert seen_by_writer[kept.pk]["reason"].startswith("Superseded: this device sent the record's create again")


def _queue_of(supervisor: CrewMember) -> list[int]:
    """The supervisor's quarantine list: what waits for their review, oldest first."""
    return sorted(row["id"] for row in sync_client(supervisor).get(QUARANTINE).json()["results"])


def test_a_note_sent_again_sets_aside_its_kept_create_but_not_the_edit_of_it_kept_since(
    crew_member: CrewMember,
) -> None:
    """The user edited the kept note (an update, kept with its create) before the note was
    sent again whole: the create sent again supersedes the kept create, never the kept edit,
    a change of the record the create does not stand for. The edit stays for review."""
    supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    encounter_id, note_id, note = _note_kept_under_a_refused_encounter(device)
    edit = device.mutation("update", "care.note", note_id, {"body": "Calm; sister called."})
    [kept_edit] = device.push(edit)

    answer = _pushed_whole(
        device,
        device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member)),
        device.mutation(
            "create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Calm; sister called."}
        ),
    )

    assert kept_edit["error"]["code"] == "record_quarantined"
    assert [r["status"] for r in answer["results"]] == ["applied", "applied"]
    assert _how_kept(_ledger_row(device, note))[:2] == ("quarantined", "superseded")
    assert _how_kept(_ledger_row(device, edit)) == ("quarantined", "", None, None)
    assert _ledger_row(device, edit).dismissed_at is None
    assert _queue_of(supervisor) == [_ledger_row(device, edit).pk]


def test_a_kept_create_holding_a_field_the_create_sent_again_left_out_stays_for_review(
    crew_member: CrewMember,
) -> None:
    """The encounter's kept create holds a location; the create sent again, which applies,
    leaves it out: it does not account for all the kept one says, so that one stays for a
    person. The note sent again whole in the same push supersedes the note's kept create."""
    supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    encounter_id, note_id, note = _note_kept_under_a_refused_encounter(device)
    without_location = {name: value for name, value in encounter_fields(crew_member).items() if name != "location"}

    answer = _pushed_whole(
        device,
        device.mutation("create", "care.encounter", encounter_id, without_location),
        device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Calm; plan."}),
    )

    kept_encounter = _kept_create_of(device, encounter_id)
    assert [r["status"] for r in answer["results"]] == ["applied", "applied"]
    assert kept_encounter.payload["fields"]["location"] == "125th St & Lexington Ave"
    assert _how_kept(kept_encounter) == ("quarantined", "", None, None)
    assert _how_kept(_ledger_row(device, note))[:2] == ("quarantined", "superseded")
    assert _queue_of(supervisor) == [kept_encounter.pk]


@pytest.mark.parametrize("kept_for", ["not_permitted", "user_deactivated", "malformed handover"])
def test_a_create_kept_for_who_sent_it_is_never_superseded(crew_member: CrewMember, kept_for: str) -> None:
    """A create kept because of who sent it (a unit the user was not in; a deactivated user's
    tablet, which may be in anyone's hands) is for a supervisor to read, whatever the device
    sends after: the same device's later create of the record, once the user may make it,
    applies, and the kept one stays in the queue. So is one kept for its shape as sent, which
    names its first problem only: a handover's, malformed too, says invalid_fields."""
    supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)
    other_unit = make_crew_member(crew_member.unit.program).unit
    device = SimDevice(crew_member)
    encounter_id = uuid.uuid4()
    if kept_for == "not_permitted":
        first = device.mutation(
            "create", "care.encounter", encounter_id, encounter_fields(crew_member, unit_id=str(other_unit.pk))
        )
        [kept] = device.push(first)
        UnitMemberFactory.create(unit=other_unit, user=crew_member.user)
    else:
        crew_member.user.is_active = False
        crew_member.user.save(update_fields=["is_active"])
        first = device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))
        if kept_for == "malformed handover":
            first["fields"] = []
        [kept] = device.client().post("/api/v1/sync/push/", {"mutations": [first]}, format="json").json()["results"]
        crew_member.user.is_active = True
        crew_member.user.save(update_fields=["is_active"])

    [later] = device.push(device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member)))

    code = "invalid_fields" if kept_for == "malformed handover" else kept_for
    assert (kept["status"], kept["error"]["code"], later["status"]) == ("quarantined", code, "applied")
    assert _how_kept(_ledger_row(device, first)) == ("quarantined", "", None, None)
    assert _queue_of(supervisor) == [_ledger_row(device, first).pk]


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_a_create_whose_record_the_same_push_then_deletes_supersedes_nothing(
    crew_member: CrewMember, one_at_a_time: bool
) -> None:
    """The note sent again, then deleted, in one push: the create did not leave the record as
    sent, and the kept note stays for review, whichever way the push applies (one mutation
    at a time when another change in it is refused)."""
    device = SimDevice(crew_member)
    encounter_id, note_id, note = _note_kept_under_a_refused_encounter(device)
    fixed = device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))
    edited = device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Calm; plan."})
    deleted = device.mutation("delete", "care.note", note_id)
    refused = device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(uuid.uuid4()), "body": "x"})

    answer = _pushed_whole(device, fixed, edited, deleted, *([refused] if one_at_a_time else []))

    assert [r["status"] for r in answer["results"]][:3] == ["applied", "applied", "applied"]
    assert _how_kept(_ledger_row(device, note)) == ("quarantined", "", None, None)
    assert _how_kept(_kept_create_of(device, encounter_id))[:2] == ("quarantined", "superseded")


def test_a_create_released_and_refused_again_earlier_in_a_one_at_a_time_run_is_superseded_later_in_it(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-at-a-time run releases each kept change once over all its transactions; a note
    it released and refused again (signed years ahead) is a kept create like any other. The
    device's next push stored the note fixed between two of the run's transactions: applied
    later in the run, it set the kept one aside only had that run not released it before."""
    device = SimDevice(crew_member)
    encounter_id, note_id = uuid.uuid4(), uuid.uuid4()
    note = {"encounter_id": str(encounter_id), "body": "Safety plan made."}
    first = device.push(
        device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member, started_at=12)),
        device.mutation("create", "care.note", note_id, {**note, "signed_at": "2099-01-01T00:00:00+00:00"}),
    )
    fixed = device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))
    orphan = device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(uuid.uuid4()), "body": "x"})
    note_fixed = device.mutation("create", "care.note", note_id, {**note, "signed_at": now_iso()})
    apply_alone = push._apply_alone

    def then_the_next_push_stores(row: Any, **kwargs: Any) -> Any:
        applied = apply_alone(row, **kwargs)
        if row.record_id == encounter_id:
            envelope = push.parse_envelope(note_fixed, 0, plausible=push.plausible_times(timezone.now()))
            push._store(
                device=crew_member.device,
                user=crew_member.user,
                envelopes=[envelope],
                client_version="",
                results={},
                keyed_by_content=False,
            )
        return applied

    monkeypatch.setattr(push, "_apply_alone", then_the_next_push_stores)
    # The orphan's refusal sends the batch the one-at-a-time way.
    answer = device.client().post("/api/v1/sync/push/", {"mutations": [fixed, orphan]}, format="json").json()

    assert [result["error"]["code"] for result in first] == ["invalid_fields", "parent_quarantined"]
    assert [result["status"] for result in answer["results"]] == ["applied", "quarantined"]
    kept, fixed_row = Mutation.objects.filter(record_id=note_id).order_by("id")
    assert (kept.error_code, kept.dismiss_code, fixed_row.status) == ("time_in_future", "superseded", "applied")


def test_a_replay_of_the_push_that_set_a_create_aside_or_of_that_create_changes_nothing(
    crew_member: CrewMember,
) -> None:
    """The push that superseded the kept creates sent again (its answer lost), and the kept
    note's own create sent again: duplicates, answered as stored; the creates stay set aside
    as that push set them, by its writer, for its creates, and nothing else is written."""
    device = SimDevice(crew_member)
    encounter_id, note_id, note = _note_kept_under_a_refused_encounter(device)
    fixed = device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member))
    edited = device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Calm; plan."})
    device.push(fixed, edited)

    def ledger() -> list[tuple[Any, ...]]:
        return list(
            Mutation.objects.order_by("id").values_list(
                "id",
                "status",
                "result",
                "dismissed_at",
                "dismissed_by",
                "dismiss_reason",
                "dismiss_code",
                "superseded_by",
            )
        )

    set_aside, versions = ledger(), RecordVersion.objects.count()
    replayed = device.push(fixed, edited)
    [old] = device.push(note)

    assert [(r["status"], r["original_status"]) for r in replayed] == [("duplicate", "applied")] * 2
    assert (old["status"], old["original_status"]) == ("duplicate", "quarantined")
    assert ledger() == set_aside
    assert [(row[6], row[7]) for row in set_aside] == [
        ("superseded", _ledger_row(device, fixed).pk),
        ("superseded", _ledger_row(device, edited).pk),
        ("", None),
        ("", None),
    ]
    assert RecordVersion.objects.count() == versions


@pytest.mark.parametrize(
    ("location", "answered"),
    [("125th St & Lexington Ave", "applied"), ("Lenox Ave & 116th St", "conflict")],
)
def test_a_note_kept_under_a_refused_encounter_is_not_released_when_the_fix_meets_the_encounter_deleted(
    crew_member: CrewMember, location: str, answered: str
) -> None:
    """The encounter was created and deleted meanwhile under the same id (from the user's other
    device): the fixed create meets it deleted (settled when it holds what the record held, a
    conflict otherwise) and leaves no live encounter for the note to go under. The note stays
    kept, for review."""
    device = SimDevice(crew_member)
    other_device, other_token = device_with_token(crew_member.user)
    other = SimDevice(CrewMember(crew_member.user, crew_member.unit, other_device, other_token))
    encounter_id, note_id, _note = _note_kept_under_a_refused_encounter(device)
    made_and_deleted = other.push(
        other.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member)),
        other.mutation("delete", "care.encounter", encounter_id, base_version=1),
    )

    answer = _pushed_whole(
        device,
        device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member, location=location)),
    )

    assert [r["status"] for r in made_and_deleted] == ["applied", "applied"]
    assert [r["status"] for r in answer["results"]] == [answered]
    assert SyncedRecord.objects.get(record_id=encounter_id).is_deleted
    assert answer["released"] == []
    kept = Mutation.objects.get(record_id=note_id)
    assert (kept.status, kept.error_code) == ("quarantined", "parent_quarantined")
    assert not ClinicalNote.objects.filter(pk=note_id).exists()
    # Nor is the encounter's kept create superseded: the fix did not make the record, as sent.
    assert _how_kept(_kept_create_of(device, encounter_id)) == ("quarantined", "", None, None)


def test_a_referral_sent_twice_under_a_refused_encounter_is_released_depth_first_with_its_outcome(
    crew_member: CrewMember,
) -> None:
    """The referral was sent twice while its encounter stayed refused (the device's own creates
    of one record, nothing else of it kept); the fix comes in a batch applied one mutation at
    a time (another change in it is refused). Released depth first: the referral's first
    create, the outcome under it, then its second create; the outcome once."""
    device = SimDevice(crew_member)
    encounter_id, referral_id, outcome_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    referral = {"encounter_id": str(encounter_id), "service_type": "detox"}
    refused = device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member, started_at=12))
    first_referral = device.mutation("create", "care.referral", referral_id, referral)
    outcome = device.mutation(
        "create",
        "care.referral_outcome",
        outcome_id,
        {"referral_id": str(referral_id), "outcome": "scheduled", "observed_at": now_iso()},
    )
    device.push(refused, first_referral, outcome)
    second_referral = device.mutation("create", "care.referral", referral_id, referral)
    device.push(second_referral)

    answer = _pushed_whole(
        device,
        device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member)),
        device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(uuid.uuid4()), "body": "x"}),
    )

    assert [r["error"]["code"] for r in answer["results"] if "error" in r] == ["parent_not_found"]
    assert [(r["mutation_id"], r["status"]) for r in answer["released"]] == [
        (first_referral["mutation_id"], "applied"),
        (outcome["mutation_id"], "applied"),
        (second_referral["mutation_id"], "applied"),
    ]
    assert Referral.objects.get(pk=referral_id).status == "scheduled"


def test_a_mutation_with_oversized_fields_is_quarantined_and_one_within_the_limit_applies(
    crew_member: CrewMember,
) -> None:
    from apps.sync.push import MAX_FIELDS_CHARACTERS

    device = SimDevice(crew_member)
    encounter_id, _ = created(device)
    # A note body at its own limit (50,000 characters) is within the fields' 64 Ki characters,
    # in any script: 50,000 Cyrillic letters are 100 KB of UTF-8, 300 KB escaped as ASCII.
    bodies_within = ["n" * 50_000, "ж" * 50_000]
    bodies_over = ["n" * MAX_FIELDS_CHARACTERS, "ж" * MAX_FIELDS_CHARACTERS]
    within = [uuid.uuid4() for _ in bodies_within]

    results = device.push(
        *(
            device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(encounter_id), "body": body})
            for body in bodies_over
        ),
        *(
            device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": body})
            for note_id, body in zip(within, bodies_within, strict=True)
        ),
    )

    assert [(r["status"], r.get("error", {}).get("code")) for r in results] == [
        ("quarantined", "fields_too_large"),
        ("quarantined", "fields_too_large"),
        ("applied", None),
        ("applied", None),
    ]
    assert results[0]["error"]["field"] == "mutations.0.fields"
    assert [len(ClinicalNote.objects.get(pk=note_id).body) for note_id in within] == [50_000, 50_000]


def test_malformed_and_oversized_batches_are_refused_whole_with_a_clear_error(crew_member: CrewMember) -> None:
    client = sync_client(crew_member)

    not_a_list = client.post("/api/v1/sync/push/", {"mutations": {"a": 1}}, format="json")
    not_json = client.post("/api/v1/sync/push/", "{oops", content_type="application/json")
    # Nested deeper than Python's parser recurses, in a few kilobytes.
    too_deep = client.post(
        "/api/v1/sync/push/", '{"mutations": [' + "[" * 5_000 + "]" * 5_000 + "]}", content_type="application/json"
    )
    # Parsed, but deeper than reading it back recurses (a field's value stored sealed).
    deep_value = "[" * 500 + '"x"' + "]" * 500
    mutation = {"mutation_id": 1, "type": "care.note", "id": str(uuid.uuid4()), "op": "create", "fields": {"x": 0}}
    deep_field = client.post(
        "/api/v1/sync/push/",
        json.dumps({"mutations": [mutation]}).replace('{"x": 0}', '{"signed_at": ' + deep_value + "}"),
        content_type="application/json",
    )
    too_many = client.post("/api/v1/sync/push/", {"mutations": [{}] * (conf.PUSH_MAX_MUTATIONS + 1)}, format="json")
    # Within the count, over the bytes: a batch of long notes.
    note = {"mutation_id": 1, "type": "care.note", "id": str(uuid.uuid4()), "op": "create", "fields": {}}
    note["fields"] = {"body": "n" * 50_000}
    too_big = client.post("/api/v1/sync/push/", {"mutations": [note] * 120}, format="json")

    assert not_a_list.status_code == 400 and not_a_list.json()["errors"][0]["field"] == "mutations"
    assert not_json.status_code == 400
    assert (too_deep.status_code, too_deep.json()["code"]) == (400, "parse_error")
    assert (deep_field.status_code, deep_field.json()["code"]) == (400, "parse_error")
    assert too_many.status_code == 413
    assert too_many.json()["code"] == "batch_too_large" and too_many.json()["limit"] == conf.PUSH_MAX_MUTATIONS
    assert (too_big.status_code, too_big.json()["code"]) == (413, "payload_too_large")
    assert too_big.json()["limit_bytes"] == settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 5 * 1024 * 1024
    assert Mutation.objects.count() == 0


def test_another_units_record_cannot_be_changed(crew_member: CrewMember, outsider: CrewMember) -> None:
    record_id, _ = created(SimDevice(crew_member), location="ours")
    intruder = SimDevice(outsider)

    [update] = intruder.push(intruder.mutation("update", "care.encounter", record_id, {"location": "theirs"}, 1))
    [create] = intruder.push(intruder.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member)))

    assert (update["status"], update["error"]["code"]) == ("quarantined", "not_permitted")
    assert (create["status"], create["error"]["code"], create["error"]["field"]) == (
        "quarantined",
        "not_permitted",
        "fields.unit_id",
    )
    assert "data" not in update  # nothing of the record is disclosed
    assert Encounter.objects.get(pk=record_id).location == "ours"
    assert Encounter.objects.count() == 1


def test_an_id_another_type_of_record_holds_is_refused_as_in_use_not_as_a_missing_permission(
    crew_member: CrewMember,
) -> None:
    """An encounter made or changed under the id of the user's own note was refused as
    ``not_permitted``, which sent its writer looking for a right they have. Named as REST
    names it, ``id_in_use``, and the note stays as it was."""
    device = SimDevice(crew_member)
    encounter_id, _ = created(device)
    note_id = uuid.uuid4()
    device.push(device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Seen."}))

    made, changed = device.push(
        device.mutation("create", "care.encounter", note_id, encounter_fields(crew_member)),
        device.mutation("update", "care.encounter", note_id, {"location": "Lenox Ave"}, 1),
    )

    for result in (made, changed):
        assert (result["status"], result["error"]["code"], result["error"]["field"]) == (
            "quarantined",
            "id_in_use",
            "id",
        )
    assert ClinicalNote.objects.get(pk=note_id).body == "Seen."
    assert not Encounter.objects.filter(pk=note_id).exists()


def test_edits_of_different_fields_merge(crew_member: CrewMember) -> None:
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device)

    [first] = device.push(device.mutation("update", "care.encounter", record_id, {"location": "Pier 17"}, 1))
    [second] = teammate.push(teammate.mutation("update", "care.encounter", record_id, {"disposition": "referred"}, 1))

    assert (first["status"], second["status"]) == ("applied", "applied")
    encounter = Encounter.objects.get(pk=record_id)
    assert (encounter.location, encounter.disposition) == ("Pier 17", "referred")
    assert second["version"] == 3 and second["data"]["location"] == "Pier 17"
    assert Conflict.objects.count() == 0


def test_a_write_merged_with_changes_its_device_had_not_seen_comes_back_to_that_device(
    crew_member: CrewMember,
) -> None:
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device)
    _, device_cursor = device.pull()
    _, teammate_cursor = teammate.pull()

    device.push(device.mutation("update", "care.encounter", record_id, {"location": "Pier 17"}, 1))
    # Made against version 1: merges with the device's version 2, which the teammate never saw.
    [merged] = teammate.push(teammate.mutation("update", "care.encounter", record_id, {"disposition": "referred"}, 1))
    # Sets what version 3 already holds: no new version, and the device had not seen version 3.
    [settled] = device.push(device.mutation("update", "care.encounter", record_id, {"disposition": "referred"}, 2))

    assert (merged["status"], merged["version"], settled["status"], settled["version"]) == ("applied", 3, "applied", 3)
    teammate_entries, _ = teammate.pull(teammate_cursor)
    device_entries, device_cursor = device.pull(device_cursor)
    # A client that ignores push results (WatermelonDB) takes version 3 as its next edits' base.
    assert [(e["version"], e["data"]["location"]) for e in teammate_entries] == [(2, "Pier 17"), (3, "Pier 17")]
    assert [e["version"] for e in device_entries] == [3, 3]  # the teammate's write, then its own re-sent
    # Its own write that merged with nothing it lacked does not come back.
    [plain] = device.push(device.mutation("update", "care.encounter", record_id, {"location": "Pier 18"}, 3))
    assert plain["version"] == 4
    assert device.pull(device_cursor)[0] == []


def test_same_field_edits_keep_both_values_as_a_conflict_and_clinical_text_is_never_overwritten(
    crew_member: CrewMember,
) -> None:
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device, assessment="Calm, oriented.")

    device.push(device.mutation("update", "care.encounter", record_id, {"assessment": "Agitated; paranoid."}, 1))
    [late] = teammate.push(
        teammate.mutation(
            "update", "care.encounter", record_id, {"assessment": "Calm; accepted referral.", "location": "Home"}, 1
        )
    )

    assert late["status"] == "conflict"
    encounter = Encounter.objects.get(pk=record_id)
    assert encounter.assessment == "Agitated; paranoid."  # the first writer's text stands
    assert encounter.location == "Home"  # the other field of the same edit merged
    conflict = Conflict.objects.get()
    assert (conflict.field, conflict.kind, conflict.is_clinical_text) == ("assessment", "same_field", True)
    assert (conflict.base_value, conflict.server_value, conflict.device_value) == (
        "Calm, oriented.",
        "Agitated; paranoid.",
        "Calm; accepted referral.",
    )
    assert late["conflicts"] == [{"id": str(conflict.id), "kind": "same_field", "field": "assessment"}]
    # The losing device gets the merged record back through the feed (it differs from its own).
    entries, _ = teammate.pull()
    assert entries[-1]["data"]["assessment"] == "Agitated; paranoid."


def test_listing_conflicts_is_audited_as_reading_their_records(crew_member: CrewMember) -> None:
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device, assessment="Calm, oriented.")
    device.push(device.mutation("update", "care.encounter", record_id, {"assessment": "Agitated; paranoid."}, 1))
    teammate.push(teammate.mutation("update", "care.encounter", record_id, {"assessment": "Calm."}, 1))
    reads = AuditEvent.objects.filter(action="read", actor_id=teammate.member.user.pk)
    assert not reads.exists()

    listed = teammate.member.client().get("/api/v1/sync/conflicts/").json()["results"]

    assert [conflict["record_id"] for conflict in listed] == [str(record_id)]  # both versions of the text
    assert list(reads.values_list("record_type", "record_id", "channel")) == [("care.encounter", record_id, "sync")]


def test_a_whole_record_sent_back_keeps_what_others_changed_in_the_fields_it_left_as_they_were(
    crew_member: CrewMember,
) -> None:
    """P3: a client may send the whole record as its edit. A field it left as it was in its
    base is not its change: a colleague's newer value there stands, and is not silently
    replaced by the stale copy the device happened to send along."""
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device, location="Pier 17", assessment="")
    teammate.push(teammate.mutation("update", "care.encounter", record_id, {"location": "Harlem Hospital"}, 1))
    whole_record = {
        "started_at": "2026-11-20T14:05:00+00:00",
        "location": "Pier 17",  # as in version 1, which the device edited
        "assessment": "Calm, oriented.",  # its one change
        "disposition": "",
    }

    [result] = device.push(device.mutation("update", "care.encounter", record_id, whole_record, base_version=1))

    assert result["status"] == "applied", result
    encounter = Encounter.objects.get(pk=record_id)
    assert (encounter.location, encounter.assessment) == ("Harlem Hospital", "Calm, oriented.")
    assert result["data"]["location"] == "Harlem Hospital"
    assert Conflict.objects.count() == 0


def test_an_edit_without_a_base_of_a_field_another_device_wrote_is_a_conflict_not_an_overwrite(
    crew_member: CrewMember,
) -> None:
    """P3: with no base_version the server cannot tell what the device saw. A field it sends
    that differs from the record, and that the device did not itself write last, may be a
    colleague's newer text: it is kept as a conflict for a person, never written over it."""
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device, assessment="Calm, oriented.")

    [result] = teammate.push(teammate.mutation("update", "care.encounter", record_id, {"assessment": "Agitated."}))

    assert result["status"] == "conflict", result
    assert Encounter.objects.get(pk=record_id).assessment == "Calm, oriented."
    conflict = Conflict.objects.get()
    assert (conflict.kind, conflict.field, conflict.server_value, conflict.device_value) == (
        "same_field",
        "assessment",
        "Calm, oriented.",
        "Agitated.",
    )


def test_a_devices_queued_edits_of_one_field_replace_each_other_without_conflict(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    record_id, _ = created(device)

    results = device.push(
        device.mutation("update", "care.encounter", record_id, {"location": "A"}, 1),
        device.mutation("update", "care.encounter", record_id, {"location": "B"}, 1),
    )

    assert [r["status"] for r in results] == ["applied", "applied"]
    assert Encounter.objects.get(pk=record_id).location == "B"


@pytest.mark.parametrize("split", [False, True], ids=["one batch", "two batches"])
def test_an_edit_with_no_base_of_a_record_the_device_created_sets_what_its_create_left_empty(
    crew_member: CrewMember, split: bool
) -> None:
    """A record made offline has no server version, so the device's later edits of it carry
    none. The create wrote every field of the record, the empty ones too: an edit that fills
    one (a draft note signed, an encounter ended) replaces the device's own empty value, and
    is not held as a conflict with itself (a signature no case manager could then apply)."""
    device = SimDevice(crew_member)
    encounter_id, _ = created(device)
    note_id = uuid.uuid4()
    create = device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Seen."})
    sign = device.mutation("update", "care.note", note_id, {"signed_at": "2026-11-20T15:00:00-05:00"})
    end = device.mutation("update", "care.encounter", encounter_id, {"ended_at": "2026-11-20T15:30:00-05:00"})

    results = [*device.push(create), *device.push(sign, end)] if split else device.push(create, sign, end)

    assert [r["status"] for r in results] == ["applied", "applied", "applied"], results
    assert ClinicalNote.objects.get(pk=note_id).is_signed
    assert results[1]["data"]["signed_at"] == "2026-11-20T20:00:00Z"
    assert Encounter.objects.get(pk=encounter_id).ended_at is not None
    assert Conflict.objects.count() == 0


def test_edits_of_one_record_made_against_different_versions_apply_together_in_one_batch(
    crew_member: CrewMember,
) -> None:
    """A device edits a record offline, pulls a colleague's newer version, edits again, and
    pushes both in one batch: each edit merges against the version it was made on. Neither
    may be held back as having an unknown base (quarantined for review) because the other
    named a later one."""
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device)
    first = device.mutation("update", "care.encounter", record_id, {"assessment": "Calm."}, base_version=1)
    teammate.push(teammate.mutation("update", "care.encounter", record_id, {"location": "Pier 17"}, 1))
    teammate.push(teammate.mutation("update", "care.encounter", record_id, {"disposition": "referred"}, 2))
    second = device.mutation("update", "care.encounter", record_id, {"location": "Pier 18"}, base_version=2)

    results = device.push(first, second)

    assert [r["status"] for r in results] == ["applied", "applied"], results
    encounter = Encounter.objects.get(pk=record_id)
    assert (encounter.assessment, encounter.location, encounter.disposition) == ("Calm.", "Pier 18", "referred")


def test_a_delete_meeting_an_unseen_edit_is_a_conflict_and_the_record_stays(crew_member: CrewMember) -> None:
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device)
    teammate.push(teammate.mutation("update", "care.encounter", record_id, {"location": "edited"}, 1))

    [deleted] = device.push(device.mutation("delete", "care.encounter", record_id, base_version=1))

    assert deleted["status"] == "conflict" and deleted["conflicts"][0]["kind"] == "delete_vs_edit"
    assert Encounter.objects.get(pk=record_id).is_deleted is False
    # The whole record met: no one field, named alike in the push result and the list.
    [listed] = device.member.client().get("/api/v1/sync/conflicts/").json()["results"]
    assert deleted["conflicts"][0]["field"] is None and listed["field"] is None


def test_a_delete_that_met_an_unseen_edit_brings_the_record_back_to_the_deleting_device(
    crew_member: CrewMember,
) -> None:
    """P3: a delete kept as a conflict leaves the record live on the server. The device hid it
    when the user deleted it, and may have pulled the colleague's edit meanwhile (its cursor
    is past it): the record must come back through its feed after the push, or a client
    that ignores push results (WatermelonDB) drops for good a record its crew still works on."""
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device)
    teammate.push(teammate.mutation("update", "care.encounter", record_id, {"location": "edited"}, 1))
    _, cursor = device.pull()  # brings version 2 while the device's delete of version 1 waits

    [deleted] = device.push(device.mutation("delete", "care.encounter", record_id, base_version=1))
    entries, _ = device.pull(cursor)

    assert deleted["status"] == "conflict"
    assert [(e["id"], e["op"], e["version"], e["data"]["location"]) for e in entries] == [
        (str(record_id), "upsert", 2, "edited")
    ]


def test_two_devices_deleting_one_record_both_apply_and_make_no_conflict(crew_member: CrewMember) -> None:
    """Two crew members deleting the same record agree: the second delete finds it deleted
    and applies, with nothing held for a case manager to resolve."""
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device)

    [first] = device.push(device.mutation("delete", "care.encounter", record_id, base_version=1))
    [second] = teammate.push(teammate.mutation("delete", "care.encounter", record_id, base_version=1))

    assert (first["status"], second["status"]) == ("applied", "applied"), second
    assert (first["version"], second["version"]) == (2, 2)
    assert Conflict.objects.count() == 0


def test_a_delete_of_a_record_the_server_never_had_settles_touching_nothing(crew_member: CrewMember) -> None:
    """A record made and deleted on the device before it was pushed: the delete holds as the
    device meant it. Quarantined, its client would keep it and send it at every sync; an
    update of such a record, which carries content, is still kept for review."""
    device = SimDevice(crew_member)
    never_pushed = uuid.uuid4()

    sent = device.mutation("delete", "care.encounter", never_pushed)
    delete, update = device.push(
        sent, device.mutation("update", "care.encounter", uuid.uuid4(), {"location": "x"}, base_version=1)
    )
    [replayed] = device.push(sent)

    assert (delete["id"], delete["status"], delete["version"]) == (str(never_pushed), "applied", None)
    assert (update["status"], update["error"]["code"]) == ("quarantined", "record_not_found")
    assert (replayed["status"], replayed["original_status"]) == ("duplicate", "applied")
    assert not SyncedRecord.objects.filter(record_id=never_pushed).exists()
    assert not ChangeEntry.objects.filter(record_id=never_pushed).exists()
    assert not AuditEvent.objects.filter(record_id=never_pushed).exists()  # no record was touched
    assert list(Mutation.objects.filter(status=MutationStatus.QUARANTINED).values_list("error_code", flat=True)) == [
        "record_not_found"
    ]


def test_a_delete_of_a_record_whose_create_anyone_has_in_quarantine_is_not_settled(crew_member: CrewMember) -> None:
    """A review may yet apply that create: the record would come to life after a delete
    answered as settled."""
    colleague = teammate_device(crew_member)
    record_id = uuid.uuid4()
    [refused] = colleague.push(
        colleague.mutation("create", "care.encounter", record_id, encounter_fields(colleague.member, started_at=12))
    )
    device = SimDevice(crew_member)

    [delete] = device.push(device.mutation("delete", "care.encounter", record_id))

    assert refused["status"] == "quarantined"
    assert (delete["status"], delete["error"]["code"]) == ("quarantined", "record_not_found")


def test_a_delete_is_soft_and_feeds_a_tombstone_and_an_edit_meeting_it_is_kept(crew_member: CrewMember) -> None:
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device)
    _, cursor = teammate.pull()

    [deleted] = device.push(device.mutation("delete", "care.encounter", record_id, base_version=1))
    [edit] = teammate.push(teammate.mutation("update", "care.encounter", record_id, {"location": "late"}, 1))

    assert deleted["status"] == "applied" and deleted["version"] == 2
    assert Encounter.objects.get(pk=record_id).is_deleted is True  # never hard-deleted
    entries, _ = teammate.pull(cursor)
    assert [(e["op"], e.get("reason")) for e in entries] == [("remove", "deleted")]
    assert edit["status"] == "conflict"
    conflict = Conflict.objects.get()
    assert (conflict.kind, conflict.field, conflict.device_value) == ("edit_vs_delete", "location", "late")


def test_an_edit_without_a_base_of_a_field_a_colleague_wrote_last_is_a_conflict_not_dropped(
    crew_member: CrewMember,
) -> None:
    """Without a base, only the fields the device itself wrote last are known to it: its
    create wrote the assessment, but a colleague wrote it after."""
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device, assessment="Calm.")
    [colleagues] = teammate.push(
        teammate.mutation("update", "care.encounter", record_id, {"assessment": "Agitated."}, 1)
    )

    [result] = device.push(device.mutation("update", "care.encounter", record_id, {"assessment": "Calm."}))

    assert colleagues["status"] == "applied"
    assert result["status"] == "conflict", result
    conflict = Conflict.objects.get(record_id=record_id)
    assert (conflict.field, conflict.server_value, conflict.device_value) == ("assessment", "Agitated.", "Calm.")


@pytest.mark.parametrize(
    ("fields", "base_version"),
    [
        pytest.param({"location": "125th St & Lexington Ave"}, None, id="a value it held, no base"),
        pytest.param({}, 1, id="no fields"),
        pytest.param({"deleted": False}, 1, id="read-only fields only"),
    ],
)
def test_an_edit_meeting_a_delete_that_changes_nothing_of_the_record_settles_without_a_conflict(
    crew_member: CrewMember, fields: dict[str, Any], base_version: int | None
) -> None:
    """Kept as a conflict, it would hold nothing for a case manager to decide."""
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device)
    [deleted] = device.push(device.mutation("delete", "care.encounter", record_id, base_version=1))

    [edit] = teammate.push(teammate.mutation("update", "care.encounter", record_id, fields, base_version))

    assert (edit["status"], edit["version"], edit["data"]["deleted"]) == ("applied", deleted["version"], True), edit
    assert Conflict.objects.count() == 0
    assert Encounter.objects.get(pk=record_id).is_deleted is True


def test_an_edit_meeting_a_delete_keeps_only_the_fields_it_would_change(crew_member: CrewMember) -> None:
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    record_id, _ = created(device)
    device.push(device.mutation("delete", "care.encounter", record_id, base_version=1))
    same_and_new = {"location": "125th St & Lexington Ave", "assessment": "Agitated; asked for water."}

    [edit] = teammate.push(teammate.mutation("update", "care.encounter", record_id, same_and_new))

    assert edit["status"] == "conflict"
    assert [(c.kind, c.field) for c in Conflict.objects.all()] == [("edit_vs_delete", "assessment")]


def test_null_fields_are_no_fields_as_a_clients_delete_often_sends_them(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    record_id, _ = created(device)
    unchanged = device.mutation("update", "care.encounter", record_id, base_version=1)
    delete = device.mutation("delete", "care.encounter", record_id, base_version=1)
    unchanged["fields"] = delete["fields"] = None

    [update_result, delete_result] = device.push(unchanged, delete)

    assert (update_result["status"], update_result["version"]) == ("applied", 1), update_result
    assert (delete_result["status"], delete_result["version"]) == ("applied", 2), delete_result
    assert Encounter.objects.get(pk=record_id).is_deleted is True


@pytest.mark.parametrize(
    ("record_type", "field"),
    [("care.encounter", "assessment"), ("care.note", "body")],
)
def test_clinical_text_is_kept_exactly_as_written_its_surrounding_whitespace_too(
    crew_member: CrewMember, record_type: str, field: str
) -> None:
    """Trimmed, the server's copy would differ from the device's, which keeps its own and is
    never told (its own write does not come back to it)."""
    device, teammate = SimDevice(crew_member), teammate_device(crew_member)
    written = '\n    Says: "I can\'t go on."\n    - denies a plan\n\n'
    encounter_id, _ = created(device)
    fields = (
        encounter_fields(crew_member, assessment=written)
        if record_type == "care.encounter"
        else {"encounter_id": str(encounter_id), "body": written}
    )
    record_id = uuid.uuid4()

    [result] = device.push(device.mutation("create", record_type, record_id, fields))
    entries, _ = teammate.pull()

    assert result["status"] == "applied", result
    assert result["data"][field] == written
    assert [e["data"][field] for e in entries if e["id"] == str(record_id)] == [written]
    model = Encounter if record_type == "care.encounter" else ClinicalNote
    assert getattr(model.objects.get(pk=record_id), field) == written


def test_pushing_needs_protocol_2_and_the_feed_still_serves_version_1(crew_member: CrewMember) -> None:
    client = crew_member.client()

    no_header = client.post("/api/v1/sync/push/", {"mutations": []}, format="json")
    future = client.post("/api/v1/sync/push/", {"mutations": []}, format="json", headers={"Tandem-Sync-Protocol": "99"})
    old_feed = client.get("/api/v1/sync/feed/")
    garbled = client.get("/api/v1/sync/feed/", headers={"Tandem-Sync-Protocol": "{="})

    assert (garbled.status_code, garbled.json()["errors"][0]["field"]) == (400, "Tandem-Sync-Protocol")
    assert no_header.status_code == 426 and no_header.json()["code"] == "sync_protocol_unsupported"
    assert future.status_code == 426 and future.json()["errors"][0]["field"] == "Tandem-Sync-Protocol"
    assert no_header.json()["supported_protocols"] == future.json()["supported_protocols"] == [2]
    assert old_feed.status_code == 200


@pytest.mark.parametrize("spelling", ["1_0", "+2", "\uff12", "2.0", "0x2", ""])
def test_a_protocol_not_written_in_plain_digits_is_a_bad_request_not_another_version(
    crew_member: CrewMember, spelling: str
) -> None:
    """Read leniently, "1_0" was version 10 (426, update the app) and a full-width two was 2."""
    answer = crew_member.client().get("/api/v1/sync/feed/", headers={"Tandem-Sync-Protocol": spelling})

    assert (answer.status_code, answer.json()["code"], answer.json()["errors"][0]["field"]) == (
        400,
        "invalid",
        "Tandem-Sync-Protocol",
    )


def test_a_protocol_of_thousands_of_digits_is_one_this_server_does_not_speak_not_a_fault(
    crew_member: CrewMember,
) -> None:
    """int() refuses to read more than 4,300 digits: the header answered 500, which a client
    takes for "not answered" and sends again for ever."""
    answer = crew_member.client().get("/api/v1/sync/feed/", headers={"Tandem-Sync-Protocol": "2" * 5000})
    padded = crew_member.client().get("/api/v1/sync/feed/", headers={"Tandem-Sync-Protocol": "0" * 5000 + "2"})

    assert (answer.status_code, answer.json()["code"], answer.json()["errors"][0]["field"]) == (
        426,
        "sync_protocol_unsupported",
        "Tandem-Sync-Protocol",
    )
    assert len(answer.content) < 1000
    assert padded.status_code == 200  # protocol 2, however many zeros before it


def test_device_times_are_kept_as_observed_and_implausible_ones_flagged(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    mutation = device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member))
    mutation["observed_at"] = "2031-01-01T00:00:00+00:00"

    [result] = device.push(mutation)

    assert result["status"] == "applied"
    assert result["warnings"][0]["code"] == "observed_at_implausible"
    stored = Mutation.objects.get()
    assert stored.observed_at is not None and stored.observed_at.year == 2031 and stored.observed_at_plausible is False
    assert (stored.user, stored.device, stored.client_version) == (
        crew_member.user,
        crew_member.device,
        "tandem-test/1.0",
    )


@pytest.mark.parametrize("started_at", ["2026-11-20T14:05:00", "2026-11-20"])
def test_a_time_without_its_utc_offset_is_quarantined_not_read_in_the_servers_zone(
    crew_member: CrewMember, started_at: str
) -> None:
    device = SimDevice(crew_member)
    naive = device.mutation(
        "create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member, started_at=started_at)
    )
    record_id = uuid.uuid4()
    with_offset = device.mutation(
        "create", "care.encounter", record_id, encounter_fields(crew_member, started_at="2026-11-20T14:05:00-05:00")
    )

    refused, applied = device.push(naive, with_offset)

    assert (refused["status"], refused["error"]["code"], refused["error"]["field"]) == (
        "quarantined",
        "invalid_fields",
        "fields.started_at",
    )
    assert "UTC offset" in refused["error"]["detail"]
    assert applied["status"] == "applied" and applied["data"]["started_at"] == "2026-11-20T19:05:00Z"


def test_a_device_of_another_user_keeps_its_own_mutation_ids(crew_member: CrewMember) -> None:
    """Mutation ids are per device: two devices both starting at 1 do not collide."""
    first = SimDevice(crew_member)
    second_device, token = device_with_token(crew_member.user, "Phone")
    second = SimDevice(CrewMember(crew_member.user, crew_member.unit, second_device, token))

    [a] = first.push(first.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member)))
    [b] = second.push(second.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member)))

    assert (a["status"], b["status"]) == ("applied", "applied")
    assert Mutation.objects.filter(status=MutationStatus.APPLIED).count() == 2


def test_mutations_stored_but_never_applied_are_applied_by_the_sweep(crew_member: CrewMember) -> None:
    """The server died between storing a batch and applying it, and the device never came back."""
    from datetime import timedelta

    from apps.sync import push

    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    stored_unapplied(
        crew_member, [device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member))]
    )
    assert Mutation.objects.get().status == MutationStatus.RECEIVED

    swept = push.apply_stranded(older_than=timedelta(0))
    again = push.apply_stranded(older_than=timedelta(0))

    assert (swept, again) == (1, 0)
    assert Mutation.objects.get().status == MutationStatus.APPLIED
    assert Encounter.objects.filter(pk=record_id).count() == 1


def test_a_batch_stored_but_never_applied_is_applied_when_its_device_sends_it_again(crew_member: CrewMember) -> None:
    """The server died between storing a batch and applying it; the device, never answered,
    sends the same batch again. Each mutation applies then, once, and is answered as applied:
    a "duplicate" that left it received would leave the device's change waiting for the sweep,
    and tell the device it had applied when it had not."""

    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    batch = [
        device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member)),
        device.mutation("update", "care.encounter", record_id, {"assessment": "Calm."}),
    ]
    stored_unapplied(crew_member, batch)
    assert set(Mutation.objects.values_list("status", flat=True)) == {MutationStatus.RECEIVED}

    results = device.push(*batch)

    assert [result["status"] for result in results] == ["applied", "applied"]
    assert set(Mutation.objects.values_list("status", flat=True)) == {MutationStatus.APPLIED}
    assert Encounter.objects.get(pk=record_id).assessment == "Calm."
    assert SyncedRecord.objects.get(record_id=record_id).version == 2


def test_a_push_under_way_shows_as_its_device_holding_its_push_lock(crew_member: CrewMember) -> None:
    import threading

    from django.db import connection, transaction

    from apps.sync.services import device_lock_held, lock_device

    other_device, _token = device_with_token(crew_member.user, name="Other tablet")
    held, release = threading.Event(), threading.Event()

    def push_under_way() -> None:
        try:
            with transaction.atomic():
                lock_device(crew_member.device.pk)
                held.set()
                release.wait(10)
        finally:
            connection.close()

    pusher = threading.Thread(target=push_under_way)
    pusher.start()
    assert held.wait(10)
    during = (device_lock_held(crew_member.device.pk), device_lock_held(other_device.pk))
    release.set()
    pusher.join(10)

    assert during == (True, False)
    assert not device_lock_held(crew_member.device.pk)


def test_a_new_ledger_row_holds_what_the_model_would_column_for_column() -> None:
    """The push holds the rows it stores as plain values named and ordered like the ledger's
    columns: a column added, removed or moved must show here, not as a value the apply reads
    under the wrong name."""
    import dataclasses

    from apps.sync.models import Mutation
    from apps.sync.push import NewLedgerRow, new_ledger_row, parse_envelope

    raw = {
        "mutation_id": 7,
        "type": "care.note",
        "id": str(uuid.uuid4()),
        "op": "update",
        "base_version": 2,
        "fields": {"body": "x"},
        "observed_at": "2026-11-20T14:20:00+00:00",
    }
    envelope = parse_envelope(raw, 0)
    device_id, user_id = uuid.uuid4(), uuid.uuid4()

    plain = new_ledger_row(envelope, device_id=device_id, user_id=user_id, client_version="tablet 1.4")
    model = Mutation(
        device_id=device_id,
        user_id=user_id,
        mutation_id=7,
        payload_hash=envelope.payload_hash,
        record_type="care.note",
        record_id=envelope.record_id,
        operation="update",
        base_version=2,
        payload=raw,
        observed_at=envelope.observed_at,
        observed_at_plausible=envelope.observed_at_plausible,
        client_version="tablet 1.4",
    )

    columns = [field.attname for field in Mutation._meta.concrete_fields]
    assert [field.name for field in dataclasses.fields(NewLedgerRow)] == columns
    unset_until_stored = {"id": (0, None), "received_at": (None, None)}
    for name in columns:
        expected = unset_until_stored.get(name, (getattr(model, name), getattr(model, name)))
        assert (getattr(plain, name), getattr(model, name)) == expected, name


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("assessment", 12, "Send a string."),
        ("location", ["125th St"], "Send a string."),
        ("unit_id", 5, "Send a UUID string."),  # DRF would read the UUID 00000000-…-0005
        ("disposition", 1, "Send a string."),
        ("started_at", 1763647500, "Send a string (an ISO 8601 time)."),
    ],
)
def test_a_value_of_the_wrong_json_type_is_quarantined_naming_the_field_not_coerced(
    crew_member: CrewMember, field: str, value: Any, detail: str
) -> None:
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()

    [result] = device.push(
        device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member, **{field: value}))
    )

    assert (result["status"], result["error"]) == (
        "quarantined",
        {"code": "invalid_fields", "detail": detail, "field": f"fields.{field}"},
    )
    assert not Encounter.objects.filter(pk=record_id).exists()


def test_a_boolean_sent_as_text_or_a_number_is_quarantined_on_an_edit_too(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    record_id, _ = created(device)
    referral_id = uuid.uuid4()
    referral = {"encounter_id": str(record_id), "service_type": "outpatient_mental_health"}
    device.push(device.mutation("create", "care.referral", referral_id, referral))

    results = device.push(
        device.mutation("update", "care.referral", referral_id, {"warm_handoff": "true"}, 1),
        device.mutation("update", "care.referral", referral_id, {"consent_to_share": 1}, 1),
    )

    assert [(result["status"], result["error"]["field"]) for result in results] == [
        ("quarantined", "fields.warm_handoff"),
        ("quarantined", "fields.consent_to_share"),
    ]
    assert [result["error"]["detail"] for result in results] == ["Send true or false."] * 2


def test_a_mutation_with_an_unknown_key_is_quarantined_naming_the_key_and_its_record(
    crew_member: CrewMember,
) -> None:
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    mutation = device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member))
    mutation["client_note"] = "typo of a field"

    [result] = device.push(mutation)

    assert (result["status"], result["error"]["code"], result["error"]["field"]) == (
        "quarantined",
        "unknown_field",
        "mutations.0.client_note",
    )
    assert (result["type"], result["id"]) == ("care.encounter", str(record_id))
    kept = Mutation.objects.get(device=crew_member.device, mutation_id=mutation["mutation_id"])
    assert kept.program_id == crew_member.unit.program_id  # reviewed by the record's program


def test_a_quarantined_create_under_the_id_of_another_programs_record_is_reviewed_by_its_writers_program(
    crew_member: CrewMember,
) -> None:
    """Filed under the program of the record holding its id, it would be shown to another
    program's supervisors: the writer's change, and what it says of the writer's person."""
    elsewhere = make_crew_member(Program.objects.create(slug="elsewhere", name="Elsewhere"))
    taken_id = uuid.uuid4()
    [theirs] = SimDevice(elsewhere).push(
        SimDevice(elsewhere).mutation("create", "care.encounter", taken_id, encounter_fields(elsewhere))
    )
    assert theirs["status"] == "applied"
    device = SimDevice(crew_member)
    mutation = device.mutation("create", "care.encounter", taken_id, encounter_fields(crew_member))
    mutation["client_note"] = "typo of a field"

    [result] = device.push(mutation)

    assert result["status"] == "quarantined"
    kept = Mutation.objects.get(device=crew_member.device, mutation_id=mutation["mutation_id"])
    assert kept.program_id == crew_member.unit.program_id


@pytest.mark.parametrize(
    ("spoil", "code", "field"),
    [
        (lambda mutation: mutation.update(type="care.enc\u0000ounter"), "invalid_text", "mutations.0.type"),
        # Stored with its NUL replaced, and named as stored.
        (lambda mutation: mutation.update({"odd\u0000key": 1}), "unknown_field", "mutations.0.odd\ufffdkey"),
        (
            lambda mutation: mutation["fields"].update(disposition="refer\u0000red"),
            "invalid_text",
            "mutations.0.fields.disposition",
        ),
        (
            lambda mutation: mutation["fields"].update(disposition="half \ud800 a pair"),
            "invalid_text",
            "mutations.0.fields.disposition",
        ),
        (lambda mutation: mutation["fields"].update({"\udc00": "x"}), "invalid_text", "mutations.0.fields.\ufffd"),
        (
            lambda mutation: mutation.update(op="update", base_version=2**40),
            "invalid_base_version",
            "mutations.0.base_version",
        ),
    ],
    ids=["nul in type", "nul in a key", "nul in a value", "lone surrogate", "lone surrogate key", "huge base"],
)
def test_text_and_numbers_the_database_cannot_store_are_quarantined_and_the_rest_applies(
    crew_member: CrewMember, spoil: Any, code: str, field: str
) -> None:
    device = SimDevice(crew_member)
    bad = device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member))
    spoil(bad)
    good = device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member))

    body = json.dumps({"mutations": [bad, good]})  # the client's escapes, as a device sends them
    response = device.client().post("/api/v1/sync/push/", body, content_type="application/json")

    assert response.status_code == 200, response.content
    first, second = response.json()["results"]
    assert (first["status"], first["error"]["code"], first["error"]["field"]) == ("quarantined", code, field)
    assert second["status"] == "applied"
    kept = Mutation.objects.get(device=crew_member.device, mutation_id=bad["mutation_id"])
    assert kept.status == MutationStatus.QUARANTINED and kept.error_code == code
    replay = device.client().post("/api/v1/sync/push/", body, content_type="application/json")
    assert [result["status"] for result in replay.json()["results"]] == ["duplicate", "duplicate"]


def test_a_nul_in_the_client_version_is_dropped(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    client = device.client()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {crew_member.token}",
        HTTP_TANDEM_SYNC_PROTOCOL="2",
        HTTP_TANDEM_CLIENT_VERSION="tablet\u00001.4",
    )
    mutation = device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member))

    response = client.post("/api/v1/sync/push/", {"mutations": [mutation]}, format="json")

    assert response.status_code == 200 and response.json()["results"][0]["status"] == "applied"
    assert Mutation.objects.get(device=crew_member.device).client_version == "tablet1.4"
