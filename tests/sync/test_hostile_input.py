"""Input built to break the sync endpoints: every piece gets a clear answer (a per-mutation
result, or a 4xx naming the field), never a 500, and nothing valid beside it is lost."""

from __future__ import annotations

import base64
import json
import uuid
import zlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import OperationalError

from apps.accounts.models import Program, ProgramDeparture, Role
from apps.accounts.selectors import ProgramsJoined, programs_joined
from apps.audit.models import AuditEvent
from apps.care.models import ClinicalNote, Encounter, Person
from apps.common.encryption import UnreadableHealthInformation
from apps.followups import services as followups
from apps.sync import push, services, watermelon
from apps.sync.models import Mutation, MutationStatus
from apps.teams.models import Unit
from tests.accounts.factories import MembershipFactory, ProgramFactory
from tests.care.factories import encounter
from tests.conftest import CrewMember, make_crew_member
from tests.sync.helpers import SimDevice, encounter_fields, respelt, stored_unapplied, sync_client
from tests.teams.factories import UnitFactory, UnitMemberFactory

pytestmark = pytest.mark.django_db(transaction=True)


def person_create(device: SimDevice, **fields: Any) -> dict[str, Any]:
    return device.mutation("create", "care.person", uuid.uuid4(), {"unit_id": str(device.member.unit.pk), **fields})


@pytest.mark.parametrize(
    "observed_at",
    [
        "9999-12-31T23:59:59-05:00",  # year 10000 in UTC: could be stored, never read back
        "0001-01-01T00:00:00+05:00",  # year 0 in UTC
        "2026-02-30T10:00:00Z",
        "2026-11-20T25:00:00Z",
        "2026-11-20T10:00:00+25:00",
    ],
)
def test_an_impossible_observed_at_is_quarantined_and_the_device_syncs_on(
    crew_member: CrewMember, observed_at: str
) -> None:
    device = SimDevice(crew_member)
    odd = person_create(device, given_name="odd")
    odd["observed_at"] = observed_at
    valid = person_create(device, given_name="valid")
    batch = [odd, valid]

    results = device.push(*batch)
    replayed = device.push(*batch)

    assert [(r["status"], r.get("error", {}).get("code")) for r in results] == [
        ("quarantined", "invalid_observed_at"),
        ("applied", None),
    ]
    assert results[0]["error"]["field"] == "mutations.0.observed_at"
    assert [r["original_status"] for r in replayed] == ["quarantined", "applied"]
    quarantine = device.client().get("/api/v1/sync/quarantine/")
    assert quarantine.status_code == 200
    assert [m["mutation_id"] for m in quarantine.json()["results"]] == [odd["mutation_id"]]
    assert list(Person.objects.values_list("given_name", flat=True)) == ["valid"]


def test_a_mutation_id_or_op_of_the_wrong_kind_gets_its_own_result_and_the_rest_is_audited(
    crew_member: CrewMember,
) -> None:
    device = SimDevice(crew_member)
    listed_id = {**person_create(device), "mutation_id": [1]}
    object_id = {**person_create(device), "mutation_id": {"n": 1}}
    listed_op = {**person_create(device), "op": ["create"]}
    object_op = {**person_create(device), "op": {}}
    valid = person_create(device, given_name="valid")
    batch = [listed_id, object_id, listed_op, object_op, valid]

    results = device.push(*batch)
    again = device.push(*batch)

    assert [(r["status"], r["error"]["code"]) for r in results[:4]] == [
        ("rejected", "invalid_mutation_id"),
        ("rejected", "invalid_mutation_id"),
        ("quarantined", "invalid_op"),
        ("quarantined", "invalid_op"),
    ]
    assert results[4]["status"] == "applied" and again[4]["status"] == "duplicate"
    created = AuditEvent.objects.filter(record_type="care.person", action="create")
    assert [str(event.record_id) for event in created] == [valid["id"]]


def test_a_rejected_mutation_is_named_back_by_what_it_sent_only_where_that_has_a_shape_it_could_have(
    crew_member: CrewMember,
) -> None:
    device = SimDevice(crew_member)
    huge = {**person_create(device), "mutation_id": "9" * 5, "type": "t" * 200_000, "id": "x" * 200_000}
    nested = {**person_create(device), "mutation_id": {"n": [1] * 10_000}, "id": {"a": "b"}}
    plain = {**person_create(device), "mutation_id": -3}

    response = device.client().post("/api/v1/sync/push/", {"mutations": [huge, nested, plain]}, format="json")

    assert response.status_code == 200 and len(response.content) < 2_000
    assert [(r["status"], r["mutation_id"], r["type"], r["id"]) for r in response.json()["results"]] == [
        ("rejected", "99999", None, None),
        ("rejected", None, "care.person", None),
        ("rejected", -3, "care.person", plain["id"]),
    ]


ID_FORM = "a UUID written in lowercase, 8-4-4-4-12 hex digits"


@respelt
def test_a_record_id_spelt_otherwise_than_the_server_writes_it_is_kept_for_review_and_not_applied(
    crew_member: CrewMember, respell: Callable[[uuid.UUID], str]
) -> None:
    """The server serves ids only as lowercase 8-4-4-4-12: read in another spelling, the
    record would come back to the device under an id it does not hold, a second copy."""
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    spelt = device.mutation("create", "care.encounter", respell(record_id), encounter_fields(crew_member))
    valid = person_create(device, given_name="valid")

    results = device.push(spelt, valid)

    assert [(r["status"], r["id"], r.get("error")) for r in results] == [
        ("quarantined", None, {"code": "invalid_id", "detail": f"id must be {ID_FORM}.", "field": "mutations.0.id"}),
        ("applied", valid["id"], None),
    ]
    assert not Encounter.objects.filter(pk=record_id).exists()
    quarantine = device.client().get("/api/v1/sync/quarantine/").json()["results"]
    # Listed as what it was to do, for the person who reviews it.
    assert [(m["mutation_id"], m["op"], m["type"]) for m in quarantine] == [
        (spelt["mutation_id"], "create", "care.encounter")
    ]


def test_a_create_under_an_id_spelt_otherwise_is_filed_for_review_under_the_program_it_names(
    crew_member: CrewMember,
) -> None:
    """The program's supervisors review what its crews send: a note under an uppercase id was
    filed under no program, and their queue in the workspace never showed it."""
    visit = encounter(crew_member)
    device = SimDevice(crew_member)
    spelt = str(uuid.uuid4()).upper()

    device.push(device.mutation("create", "care.note", spelt, {"encounter_id": str(visit), "body": "Calm."}))

    kept = Mutation.objects.get(status=MutationStatus.QUARANTINED)
    assert (kept.error_code, kept.program_id) == ("invalid_id", crew_member.unit.program_id)


@respelt
def test_a_reference_spelt_otherwise_than_the_server_writes_it_is_kept_for_review_naming_the_field(
    crew_member: CrewMember, respell: Callable[[uuid.UUID], str]
) -> None:
    """A note naming its encounter so would be served naming it otherwise than the device's
    own copy of the encounter is named."""
    visit = encounter(crew_member)
    device = SimDevice(crew_member)
    note_id = uuid.uuid4()
    note = device.mutation("create", "care.note", note_id, {"encounter_id": respell(visit), "body": "Calm."})

    [result] = device.push(note)

    assert (result["status"], result["error"]) == (
        "quarantined",
        {"code": "invalid_fields", "detail": f"Must be {ID_FORM}.", "field": "fields.encounter_id"},
    )
    assert not ClinicalNote.objects.filter(pk=note_id).exists()
    assert Mutation.objects.get(mutation_id=note["mutation_id"]).status == MutationStatus.QUARANTINED


def test_content_the_server_cannot_apply_is_kept_for_review_and_never_blocks_the_device(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = SimDevice(crew_member)
    encounter_id = uuid.uuid4()
    # Content that passes every check and still fails in the apply: a fault no validation
    # names (times beyond the calendar once were one; now they are refused as invalid).
    plan = followups.plan_for_encounter

    def failing_for_this_encounter(*, encounter: Any, **kwargs: Any) -> Any:
        if encounter.pk == encounter_id:
            raise OverflowError("date value out of range")
        return plan(encounter=encounter, **kwargs)

    monkeypatch.setattr(followups, "plan_for_encounter", failing_for_this_encounter)
    far = device.mutation(
        "create",
        "care.encounter",
        encounter_id,
        encounter_fields(crew_member, ended_at="2026-11-20T15:00:00Z", disposition="resolved_on_scene"),
    )
    valid = person_create(device, given_name="valid")

    results = device.push(far, valid)
    [later] = device.push(person_create(device, given_name="later"))

    assert [(r["status"], r.get("error", {}).get("code")) for r in results] == [
        ("quarantined", "apply_failed"),
        ("applied", None),
    ]
    assert later["status"] == "applied"
    assert not Encounter.objects.filter(pk=encounter_id).exists()
    kept = Mutation.objects.get(mutation_id=far["mutation_id"])
    assert kept.status == MutationStatus.QUARANTINED and kept.payload["fields"]["ended_at"] == "2026-11-20T15:00:00Z"


@pytest.mark.parametrize(
    "fault",
    [OperationalError("the connection was lost"), UnreadableHealthInformation("No key opens this value.")],
)
def test_applying_stranded_mutations_goes_on_past_a_device_that_failed(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch, fault: Exception
) -> None:
    devices = [SimDevice(crew_member), SimDevice(make_crew_member(crew_member.unit.program, unit=crew_member.unit))]
    for device in devices:
        device.push(person_create(device))
    Mutation.objects.update(status=MutationStatus.RECEIVED)  # as if each server died after storing
    applied = push.apply_received
    calls: list[Any] = []

    def failing_first(*, device: Any, user: Any) -> Any:
        calls.append(device.pk)
        if len(calls) == 1:
            raise fault
        return applied(device=device, user=user)

    monkeypatch.setattr(push, "apply_received", failing_first)

    assert push.apply_stranded(older_than=timedelta(0)) == 1
    assert len(calls) == 2
    assert Mutation.objects.filter(status=MutationStatus.RECEIVED).count() == 1  # left for the next run


def _quarantine_seen_by(member: CrewMember) -> list[int]:
    response = sync_client(member).get("/api/v1/sync/quarantine/")
    assert response.status_code == 200
    return sorted(mutation["mutation_id"] for mutation in response.json()["results"])


def _clinician_also_in_boston(crew_member: CrewMember) -> tuple[CrewMember, Program, Unit]:
    """A clinician of the crew member's program who also rides in a unit of another one."""
    boston = ProgramFactory.create(slug="boston-street", name="Boston Street")
    clinician = make_crew_member(crew_member.unit.program)
    boston_unit = UnitFactory.create(program=boston)
    MembershipFactory.create(user=clinician.user, program=boston, role=Role.CLINICIAN)
    UnitMemberFactory.create(unit=boston_unit, user=clinician.user)
    return clinician, boston, boston_unit


def _supervisor_of_only(program: Program, crew_member: CrewMember) -> CrewMember:
    supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)
    supervisor.user.memberships.all().delete()
    MembershipFactory.create(user=supervisor.user, program=program, role=Role.SUPERVISOR)
    return supervisor


def _encounter_create(device: SimDevice, record_id: uuid.UUID, unit: Unit) -> dict[str, Any]:
    fields = {**encounter_fields(device.member), "unit_id": str(unit.pk)}
    return device.mutation("create", "care.encounter", record_id, fields)


def test_a_refused_create_is_reviewed_by_the_program_of_the_unit_or_record_it_names(crew_member: CrewMember) -> None:
    home = crew_member.unit.program
    both, elsewhere, boston_unit = _clinician_also_in_boston(crew_member)
    device = SimDevice(both)
    encounter_id = uuid.uuid4()
    device.push(_encounter_create(device, encounter_id, boston_unit))
    person = device.mutation(
        "create", "care.person", uuid.uuid4(), {"unit_id": str(boston_unit.pk), "phone_number": "1" * 40}
    )
    note = device.mutation(
        "create", "care.note", uuid.uuid4(), {"encounter_id": str(encounter_id), "body": "Seen.", "signed_at": "x"}
    )
    # Naming no unit or record the server has: either program's, for all the writer knows.
    orphan = device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(uuid.uuid4()), "body": "?"})
    results = device.push(person, note, orphan)
    boston_supervisor = _supervisor_of_only(elsewhere, crew_member)
    home_supervisor = make_crew_member(home, role=Role.SUPERVISOR)
    supervisor_of_both = make_crew_member(home, role=Role.SUPERVISOR)
    MembershipFactory.create(user=supervisor_of_both.user, program=elsewhere, role=Role.SUPERVISOR)

    assert [(r["status"], r["error"]["code"]) for r in results] == [
        ("quarantined", "invalid_fields"),
        ("quarantined", "invalid_fields"),
        ("quarantined", "parent_not_found"),
    ]
    assert _quarantine_seen_by(boston_supervisor) == sorted([person["mutation_id"], note["mutation_id"]])
    assert _quarantine_seen_by(home_supervisor) == []
    everything = sorted(mutation["mutation_id"] for mutation in (person, note, orphan))
    assert _quarantine_seen_by(supervisor_of_both) == _quarantine_seen_by(both) == everything
    # One program's users are still seen by that program's supervisors.
    home_device = SimDevice(crew_member)
    [own] = home_device.push(person_create(home_device, nickname="x"))
    assert own["status"] == "quarantined" and _quarantine_seen_by(home_supervisor) == [own["mutation_id"]]


def test_a_quarantined_change_of_a_record_is_reviewed_by_the_records_program(crew_member: CrewMember) -> None:
    both, elsewhere, boston_unit = _clinician_also_in_boston(crew_member)
    device = SimDevice(both)
    record_id = uuid.uuid4()
    [created] = device.push(_encounter_create(device, record_id, boston_unit))
    # Refused reading it, checking its fields, and by the domain's rule (applied alone).
    late = device.mutation("update", "care.encounter", record_id, {"location": "x"}, 1)
    late["observed_at"] = "2026-02-30T10:00:00Z"
    invalid = device.mutation("update", "care.encounter", record_id, {"started_at": "not a time"}, 1)
    moved = device.mutation("update", "care.encounter", record_id, {"unit_id": str(both.unit.pk)}, 1)
    results = device.push(late, invalid, moved)
    # A record created in the same batch as the refused change of it.
    another_id = uuid.uuid4()
    another = _encounter_create(device, another_id, boston_unit)
    invalid_too = device.mutation("update", "care.encounter", another_id, {"started_at": "not a time"}, 1)
    results += device.push(another, invalid_too)[1:]
    boston_supervisor = _supervisor_of_only(elsewhere, crew_member)
    home_supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)

    assert created["status"] == "applied"
    assert [(r["status"], r["error"]["code"]) for r in results] == [
        ("quarantined", "invalid_observed_at"),
        ("quarantined", "invalid_fields"),
        ("quarantined", "unit_change_not_allowed"),
        ("quarantined", "invalid_fields"),
    ]
    quarantined = sorted(mutation["mutation_id"] for mutation in (late, invalid, moved, invalid_too))
    assert set(Mutation.objects.filter(status=MutationStatus.QUARANTINED).values_list("program", flat=True)) == {
        elsewhere.pk
    }
    assert _quarantine_seen_by(boston_supervisor) == _quarantine_seen_by(both) == quarantined
    assert _quarantine_seen_by(home_supervisor) == []


def test_edits_left_behind_in_a_program_the_writer_left_go_to_that_programs_supervisors(
    crew_member: CrewMember,
) -> None:
    leaver, elsewhere, boston_unit = _clinician_also_in_boston(crew_member)
    device = SimDevice(leaver)
    record_id = uuid.uuid4()
    device.push(_encounter_create(device, record_id, boston_unit))
    boston_supervisor = _supervisor_of_only(elsewhere, crew_member)
    home_supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)

    leaver.user.memberships.filter(program=elsewhere).delete()  # written offline before they left
    offline = device.mutation("update", "care.encounter", record_id, {"location": "Fenway, by the gate"}, 1)
    [result] = device.push(offline)

    assert (result["status"], result["error"]["code"]) == ("quarantined", "not_permitted")
    # Not the program the writer is still in: the record, and what it holds, is Boston's.
    assert _quarantine_seen_by(boston_supervisor) == [offline["mutation_id"]]
    assert _quarantine_seen_by(home_supervisor) == []
    [listed] = sync_client(boston_supervisor).get("/api/v1/sync/quarantine/").json()["results"]
    assert (listed["program"], listed["payload"]["fields"]) == (str(elsewhere.pk), {"location": "Fenway, by the gate"})


def test_what_someone_never_in_a_program_sends_under_its_ids_goes_to_their_own_programs_supervisors(
    crew_member: CrewMember,
) -> None:
    """A tablet set up wrongly, or a client that mixed its accounts, may send a Boston
    record's or unit's id under an account that was never in Boston: nothing applies, and
    the clinical text it carries is not Boston's supervisors' to read."""
    boston = ProgramFactory.create(slug="boston-street", name="Boston Street")
    boston_clinician = make_crew_member(boston)
    boston_device = SimDevice(boston_clinician)
    boston_record = uuid.uuid4()
    [created] = boston_device.push(_encounter_create(boston_device, boston_record, boston_clinician.unit))
    device = SimDevice(crew_member)
    edit = device.mutation("update", "care.encounter", boston_record, {"location": "Our own client's address"}, 1)
    note = device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(boston_record), "body": "Ours."})
    visit = _encounter_create(device, uuid.uuid4(), boston_clinician.unit)
    results = device.push(edit, note, visit)
    boston_supervisor = make_crew_member(boston, role=Role.SUPERVISOR)
    home_supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)

    assert created["status"] == "applied"
    assert [result["status"] for result in results] == ["quarantined"] * 3
    assert _quarantine_seen_by(boston_supervisor) == []
    sent = sorted(mutation["mutation_id"] for mutation in (edit, note, visit))
    assert _quarantine_seen_by(home_supervisor) == _quarantine_seen_by(crew_member) == sent
    # Filed under the writer's program: in its supervisors' queue in the workspace too.
    listed = sync_client(crew_member).get("/api/v1/sync/quarantine/").json()["results"]
    assert {mutation["program"] for mutation in listed} == {str(crew_member.unit.program_id)}


def test_an_outsiders_create_put_back_and_refused_again_stays_with_the_program_it_was_filed_under(
    crew_member: CrewMember,
) -> None:
    """Filed under the writer's program when it came, it stays there when that program's
    supervisor applies it again and it is refused again, after the writer moved on."""
    boston_unit = UnitFactory.create(program=ProgramFactory.create(slug="boston-street", name="Boston Street"))
    home = crew_member.unit.program
    device = SimDevice(crew_member)
    [refused] = device.push(_encounter_create(device, uuid.uuid4(), boston_unit))
    kept = Mutation.objects.get(mutation_id=refused["mutation_id"])
    assert kept.program_id == home.pk
    home_supervisor = make_crew_member(home, role=Role.SUPERVISOR)
    crew_member.user.memberships.all().delete()
    MembershipFactory.create(
        user=crew_member.user, program=ProgramFactory.create(slug="cambridge"), role=Role.CLINICIAN
    )

    response = sync_client(home_supervisor).post("/api/v1/sync/quarantine/apply/", {"ids": [kept.pk]}, format="json")

    assert response.status_code == 200 and response.json()["results"][0]["status"] == "quarantined"
    kept.refresh_from_db()
    assert kept.program_id == home.pk


def test_an_outsider_in_no_program_now_is_answered_for_by_the_one_they_left(crew_member: CrewMember) -> None:
    boston_unit = UnitFactory.create(program=ProgramFactory.create(slug="boston-street", name="Boston Street"))
    home_supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)
    crew_member.user.memberships.all().delete()
    device = SimDevice(crew_member)

    [refused] = device.push(_encounter_create(device, uuid.uuid4(), boston_unit))

    assert refused["status"] == "quarantined"
    assert Mutation.objects.get(mutation_id=refused["mutation_id"]).program_id == crew_member.unit.program_id
    assert _quarantine_seen_by(home_supervisor) == [refused["mutation_id"]]


def test_a_program_left_is_remembered_however_the_last_role_there_ended(crew_member: CrewMember) -> None:
    """The departure is what files a leaver's later edits under the program they left; a
    role left while another there still holds is no departure."""
    home = crew_member.unit.program_id
    leaver, elsewhere, _boston_unit = _clinician_also_in_boston(crew_member)
    mover = make_crew_member(crew_member.unit.program)
    cambridge = ProgramFactory.create(slug="cambridge", name="Cambridge")
    mover_in_cambridge = MembershipFactory.create(user=mover.user, program=cambridge, role=Role.CLINICIAN)
    MembershipFactory.create(user=leaver.user, program=elsewhere, role=Role.CASE_MANAGER)

    leaver.user.memberships.get(program=elsewhere, role=Role.CLINICIAN).delete()
    assert not ProgramDeparture.objects.filter(user=leaver.user).exists()
    leaver.user.memberships.filter(program=elsewhere).delete()
    # The admin's inline changes a membership's program in place.
    mover_in_cambridge.program = ProgramFactory.create(slug="somerville", name="Somerville")
    mover_in_cambridge.save()

    assert programs_joined(user_ids=[leaver.user.pk, mover.user.pk]) == {
        leaver.user.pk: ProgramsJoined(works_for=frozenset({home}), left=frozenset({elsewhere.pk})),
        mover.user.pk: ProgramsJoined(
            works_for=frozenset({home, mover_in_cambridge.program_id}), left=frozenset({cambridge.pk})
        ),
    }
    assert all(departure.left_at is not None for departure in ProgramDeparture.objects.all())


def test_a_lone_surrogate_named_back_in_an_error_gets_an_answer(crew_member: CrewMember) -> None:
    client = sync_client(crew_member)

    pushed = client.post("/api/v1/sync/push/", '{"mutations": [], "\\ud800": 1}', content_type="application/json")
    watermelon = client.post(
        "/api/v1/sync/watermelon/push/",
        '{"changes": {"\\ud800": 5}, "lastPulledAt": null}',
        content_type="application/json",
    )

    assert (pushed.status_code, pushed.json()["code"]) == (400, "unknown_field")
    assert pushed.json()["errors"][0]["field"] == "\ud800"
    assert watermelon.status_code == 400 and watermelon.json()["code"] == "invalid_input"


@pytest.mark.parametrize(
    "kinds",
    [{"created": 5}, {"updated": True}, {"deleted": "abc"}, {"created": {}}, {"created": None}, {"deleted": None}],
)
def test_a_watermelon_push_whose_changes_are_not_lists_gets_400_naming_them(
    crew_member: CrewMember, kinds: dict[str, Any]
) -> None:
    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": {"persons": kinds}, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == f"changes.persons.{next(iter(kinds))}"


def _person_rows(member: CrewMember, record_id: str) -> dict[str, list[Any]]:
    """A person's create, and each other kind, all under ``record_id``."""
    return {
        "created": [{"id": record_id, "unit_id": str(member.unit.pk), "given_name": "Ana"}],
        "updated": [{"id": record_id, "given_name": "Ana", "server_version": 1, "updated_at": 1_800_000_000_000}],
        "deleted": [record_id],
    }


@pytest.mark.parametrize("kind", ["created", "updated", "deleted"])
def test_a_watermelon_push_naming_an_id_longer_than_any_spelling_of_one_gets_400_without_it(
    crew_member: CrewMember, kind: str
) -> None:
    """Quarantined and listed in experimentalRejectedIds, an id of 200,000 characters came
    back whole in the answer. Within the bound, an id may be the app's own record under
    another spelling: it is still refused alone and named, so the app keeps the record."""
    device = SimDevice(crew_member)
    longest = "urn:uuid:" + str(uuid.uuid4()).upper() + "-" * (watermelon.ID_MAX_CHARACTERS - 45)
    valid = _person_rows(crew_member, str(uuid.uuid4()))[kind][0]
    too_long = _person_rows(crew_member, "f" * 200_000)[kind][0]

    def pushed(*records: Any) -> Any:
        body = {"changes": {"persons": {kind: list(records)}}, "lastPulledAt": None}
        return device.client().post("/api/v1/sync/watermelon/push/", body, format="json")

    refused = pushed(valid, too_long)
    named = pushed(_person_rows(crew_member, longest)[kind][0])

    assert refused.status_code == 400
    field = f"changes.persons.{kind}.1" if kind == "deleted" else f"changes.persons.{kind}.1.id"
    assert (refused.json()["code"], refused.json()["errors"][0]["field"]) == ("invalid_id", field)
    assert len(refused.content) < 1_000
    assert named.status_code == 200
    assert named.json()["experimentalRejectedIds"] == {"persons": [longest]}
    assert [(r["status"], r["error"]["code"]) for r in named.json()["results"]] == [("quarantined", "invalid_id")]
    assert Mutation.objects.count() == 1  # the named one's, kept for review


@pytest.mark.parametrize("kind", ["create", "updatedd", "removed"])
def test_a_watermelon_push_with_records_under_an_unknown_kind_gets_400_naming_it(
    crew_member: CrewMember, kind: str
) -> None:
    record = {"id": str(uuid.uuid4()), "unit_id": str(crew_member.unit.pk), "given_name": "Ana"}
    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/",
        {"changes": {"persons": {"created": [], kind: [record]}}, "lastPulledAt": None},
        format="json",
    )

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["errors"][0]["field"]) == (
        "unknown_field",
        f"changes.persons.{kind}",
    )
    assert not Mutation.objects.exists()


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"changes": {}, "lastPulledAt": 1, "schemaVersion": 3}, "unknown_field", "schemaVersion"),
        ({"changes": {}, "lastPulledAt": "1700000000"}, "invalid_input", "lastPulledAt"),
        ({"changes": {}, "lastPulledAt": 1.5}, "invalid_input", "lastPulledAt"),
        ({"changes": {}, "lastPulledAt": True}, "invalid_input", "lastPulledAt"),
        ({"changes": {}, "lastPulledAt": -1}, "invalid_input", "lastPulledAt"),
        ({"changes": {}, "lastPulledAt": 1 << 63}, "invalid_input", "lastPulledAt"),
        ({"lastPulledAt": 1}, "invalid_input", "changes"),
    ],
)
def test_a_watermelon_push_body_with_unknown_keys_or_a_wrong_last_pulled_at_gets_400_naming_it(
    crew_member: CrewMember, body: dict[str, Any], code: str, field: str
) -> None:
    device = SimDevice(crew_member)
    body = {**body}
    if "changes" in body:  # a valid record beside the fault: nothing of a refused body is kept
        body["changes"] = {"persons": {"created": [{"id": str(uuid.uuid4()), "unit_id": str(crew_member.unit.pk)}]}}

    response = device.client().post("/api/v1/sync/watermelon/push/", body, format="json")

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["errors"][0]["field"]) == (code, field)
    assert not Mutation.objects.exists() and not Person.objects.exists()
    if "changes" in body:  # the same record in a well-formed body applies
        body["lastPulledAt"] = None
        body.pop("schemaVersion", None)
        accepted = device.client().post("/api/v1/sync/watermelon/push/", body, format="json")
        assert accepted.status_code == 200 and not accepted.json()["experimentalRejectedIds"]
        assert Person.objects.count() == 1


@pytest.mark.parametrize("last_pulled_at", ["\u00b2", "\u0663", "9" * 5000, str(1 << 63)])
def test_a_watermelon_pull_from_a_number_no_timestamp_can_be_gets_400(
    crew_member: CrewMember, last_pulled_at: str
) -> None:
    response = sync_client(crew_member).get("/api/v1/sync/watermelon/pull/", {"last_pulled_at": last_pulled_at})

    assert (response.status_code, response.json()["code"]) == (400, "invalid_cursor")


def test_a_watermelon_pull_refuses_a_query_parameter_it_does_not_take(crew_member: CrewMember) -> None:
    client = sync_client(crew_member)
    # What WatermelonDB's own pullChanges example sends is taken (and not used).
    usual = client.get(
        "/api/v1/sync/watermelon/pull/", {"last_pulled_at": "", "schema_version": "3", "migration": "null"}
    )

    response = client.get("/api/v1/sync/watermelon/pull/", {"last_pulled": "1"})

    assert usual.status_code == 200, usual.content
    assert response.status_code == 400
    assert response.json()["errors"][0] == {"field": "last_pulled", "code": "unknown_field", "detail": "Unknown field."}


def _encoded(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode("utf-8", "surrogatepass")).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [
        '[1, 1, "", 123]',
        '[1, 1, "", "", "not a device tag"]',
        '[1, 1, "", "", "abcdef012345", 1]',
        '[1, 1, "", [1]]',
        '[1, 1, {}, ""]',
        '[1, 1, "a\\u0000", ""]',
        '[1, 1, "\\ud800", ""]',
        '[Infinity, 1, "", ""]',
        '[1.5, 1, "", ""]',
        '[true, 1, "", ""]',
        f'[{1 << 63}, 1, "", ""]',
        '[-1, 1, "", ""]',
    ],
)
def test_a_tampered_snapshot_cursor_gets_400(crew_member: CrewMember, raw: str) -> None:
    response = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"cursor": _encoded(raw)})

    assert (response.status_code, response.json()["code"]) == (400, "invalid_cursor")


@pytest.mark.parametrize(
    "raw",
    [
        "1_0.5",
        " 1 . 2 ",
        "1.2.3",
        "+1.2",
        f"{1 << 63}.1",
        "\u0661.\u0662",
        "1.2.ABCDEF012345",  # a device tag is 12 lowercase hex digits
        "1.2.abcdef0123456",
        "1.2.abcdef01234\u0665",
        "1.2.",
        "1.2.abcdef012345.6",
    ],
)
def test_a_tampered_feed_cursor_gets_400(crew_member: CrewMember, raw: str) -> None:
    response = sync_client(crew_member).get("/api/v1/sync/feed/", {"cursor": _encoded(raw)})

    assert (response.status_code, response.json()["code"]) == (400, "invalid_cursor")


@pytest.mark.parametrize("charset", ["zlib", "bz2", "rot13", "base64", "latin-1"])
def test_a_body_in_a_charset_other_than_unicode_is_refused_unread(crew_member: CrewMember, charset: str) -> None:
    """Python's codecs include compressions: a body of 61 KB "in charset zlib" was read as
    60 MB of JSON past the 5 MiB limit (a body of a few megabytes, gigabytes), and one
    that was not valid zlib answered 500. A legacy charset would garble a UTF-8 body's accents."""
    device = SimDevice(crew_member)
    text = json.dumps({"mutations": [person_create(device, given_name="Zoë")]}).encode()
    inflated = text[:-1] + b" " * (8 * 1024 * 1024) + b"}"
    body: Any = zlib.compress(inflated, 9) if charset == "zlib" else text  # bytes, which generic() sends as they are

    response = sync_client(crew_member).generic(
        "POST", "/api/v1/sync/push/", body, content_type=f"application/json; charset={charset}"
    )

    assert (response.status_code, response.json()["code"]) == (415, "unsupported_media_type")
    assert not Person.objects.exists() and not Mutation.objects.exists()


@pytest.mark.parametrize("charset", ["utf-8", "UTF8", "utf_8", '"utf-8"', "UTF-16", "utf-32-le", "us-ascii"])
def test_a_body_in_a_unicode_charset_is_read_in_it(crew_member: CrewMember, charset: str) -> None:
    device = SimDevice(crew_member)
    ascii_only = charset == "us-ascii"  # UTF-8's first half: the accent travels escaped
    text = json.dumps({"mutations": [person_create(device, given_name="Zoë")]}, ensure_ascii=ascii_only)
    body: Any = text.encode(charset.strip('"'))

    response = sync_client(crew_member).generic(
        "POST", "/api/v1/sync/push/", body, content_type=f"application/json; charset={charset}"
    )

    assert response.status_code == 200, response.content
    assert Person.objects.get().given_name == "Zoë"


def test_a_review_of_more_ids_than_allowed_is_refused_before_its_items_are_read(crew_member: CrewMember) -> None:
    """DRF checks a list's length after each item: 200,000 bad ids, which any device may
    send, were each validated (40 seconds) and each answered an error (20 MB)."""
    response = sync_client(crew_member).post("/api/v1/sync/quarantine/apply/", {"ids": [0] * 200_000}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "ids", "code": "max_length", "detail": "Ensure this field has no more than 200 elements."}
    ]


@pytest.mark.parametrize("number", ["1e400", "-1e400", "[1E999]"])
def test_a_number_beyond_a_doubles_range_is_a_parse_error_not_infinity(crew_member: CrewMember, number: str) -> None:
    person = {"mutation_id": 1, "type": "care.person", "id": str(uuid.uuid4()), "op": "create"}
    person["fields"] = {"unit_id": str(crew_member.unit.pk), "given_name": "NUMBER"}
    body = json.dumps({"mutations": [person]}).replace('"NUMBER"', number)

    response = sync_client(crew_member).post("/api/v1/sync/push/", body, content_type="application/json")

    assert (response.status_code, response.json()["code"]) == (400, "parse_error")
    assert not Mutation.objects.exists() and not Person.objects.exists()


def test_a_whole_number_too_long_to_read_is_a_parse_error_in_the_apis_own_words(crew_member: CrewMember) -> None:
    """Python's own refusal named a setting of the interpreter to change, for a programmer."""
    body = '{"mutations": [{"mutation_id": ' + "9" * 5000 + "}]}"

    response = sync_client(crew_member).post("/api/v1/sync/push/", body, content_type="application/json")

    assert (response.status_code, response.json()["code"]) == (400, "parse_error")
    assert "more than 4300 digits" in response.json()["detail"]
    assert "sys." not in response.json()["detail"]
    assert not Mutation.objects.exists()


def test_a_watermelon_pull_from_before_the_retention_gets_410_naming_last_pulled_at(crew_member: CrewMember) -> None:
    client = sync_client(crew_member)
    timestamp = client.get("/api/v1/sync/watermelon/pull/").json()["timestamp"]
    encounter(crew_member)
    services.feed_prune(older_than=timedelta(0))

    response = client.get("/api/v1/sync/watermelon/pull/", {"last_pulled_at": timestamp})

    assert response.status_code == 410
    assert (response.json()["code"], response.json()["errors"][0]["field"]) == ("cursor_expired", "last_pulled_at")


def test_applying_stranded_mutations_stops_at_the_soft_time_limit(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soft time limit is the task's warning before its worker is killed: the sweep stops at
    the device it was on, which is not logged as a fault, and leaves the others to the next run."""
    devices = [SimDevice(crew_member), SimDevice(make_crew_member(crew_member.unit.program, unit=crew_member.unit))]
    for device in devices:
        device.push(person_create(device))
    Mutation.objects.update(status=MutationStatus.RECEIVED)  # as if each server died after storing
    calls: list[Any] = []

    def stopped(*, device: Any, user: Any) -> Any:
        calls.append(device.pk)
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(push, "apply_received", stopped)

    with pytest.raises(SoftTimeLimitExceeded):
        push.apply_stranded(older_than=timedelta(0))

    assert len(calls) == 1
    assert Mutation.objects.filter(status=MutationStatus.RECEIVED).count() == 2  # left for the next run


def _two_received_mutations(crew_member: CrewMember) -> None:
    """Stored and never applied: the server died between the two."""
    device = SimDevice(crew_member)
    stored_unapplied(crew_member, [person_create(device) for _ in range(2)])
    assert list(Mutation.objects.values_list("status", flat=True)) == [MutationStatus.RECEIVED] * 2


@pytest.mark.parametrize("stopped_at", ["the batch", "one mutation alone"])
def test_a_device_s_mutations_stopped_by_the_soft_time_limit_are_left_received_not_kept_for_review(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch, stopped_at: str
) -> None:
    """Stopped while applying the device's batch, the apply does not go on one mutation at a
    time; stopped on one mutation alone, it does not keep that mutation for review as one the
    server's code failed on (`apply_failed`): either way it stops, and every mutation not
    applied stays received, for the stranded sweep or the device's next push."""
    _two_received_mutations(crew_member)
    apply_one = push._apply_one
    calls: list[int] = []

    def stopped(row: Any, state: Any) -> None:
        calls.append(row.pk)
        if stopped_at == "one mutation alone" and len(calls) == 1:
            raise RuntimeError("the batch fails, so each mutation is applied alone")
        if len(calls) == (1 if stopped_at == "the batch" else 2):
            raise SoftTimeLimitExceeded()
        apply_one(row, state)

    monkeypatch.setattr(push, "_apply_one", stopped)

    with pytest.raises(SoftTimeLimitExceeded):
        push.apply_received(device=crew_member.device, user=crew_member.user)

    assert len(calls) == (1 if stopped_at == "the batch" else 2)
    assert list(Mutation.objects.values_list("status", flat=True)) == [MutationStatus.RECEIVED] * 2
    assert not Person.objects.exists()
