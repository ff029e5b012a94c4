"""Health information in sync's stored copies is sealed at rest, and opened for readers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from apps.accounts.models import Program, Role
from apps.common.encryption import SEALED_PREFIX, UnreadableHealthInformation
from apps.sync.models import Conflict, Mutation, SyncedRecord
from apps.sync.services import reseal_stored_copies
from tests.care.factories import pushed
from tests.conftest import CrewMember, make_crew_member
from tests.sync.helpers import SimDevice, encounter_fields

ASSESSMENT = "Hears voices telling him to stop eating; history of lithium."
# Pulls read the feed, which serves only committed transactions.
pytestmark = pytest.mark.django_db(transaction=True)

NOTE = "Sister says he stopped his medication in October; safety plan agreed."
NAME = "Ozymandias"

# Every JSON column in which sync keeps a copy of what a device sent or was sent.
SYNC_JSON_COLUMNS = [
    ("sync_syncedrecord", "data"),
    ("sync_recordversion", "data"),
    ("sync_changeentry", "data"),
    ("sync_mutation", "payload"),
    ("sync_mutation", "result"),
    ("sync_conflict", "base_value"),
    ("sync_conflict", "server_value"),
    ("sync_conflict", "device_value"),
]


def raw_sync_text() -> str:
    """Everything sync stored, as the database holds it (no model field in between)."""
    parts = []
    with connection.cursor() as cursor:
        for table, column in SYNC_JSON_COLUMNS:
            cursor.execute(f"SELECT coalesce(string_agg({column}::text, ' '), '') FROM {table}")  # noqa: S608
            parts.append(cursor.fetchone()[0])
    return "\n".join(parts)


def conflict_on(program: Program, member: CrewMember, encounter_id: uuid.UUID) -> dict[str, Any]:
    """Two crew members change the assessment from the same version: the second conflicts."""
    update = {"op": "update", "record_id": encounter_id, "base_version": 1}
    pushed(member, "care.encounter", {"assessment": "Agitated."}, **update)  # type: ignore[arg-type]
    teammate = make_crew_member(program, unit=member.unit)
    return pushed(teammate, "care.encounter", {"assessment": "Calm."}, **update)  # type: ignore[arg-type]


def push_clinical_records(device: SimDevice) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    member = device.member
    person_id, encounter_id, note_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    results = device.push(
        device.mutation("create", "care.person", person_id, {"unit_id": str(member.unit.pk), "given_name": NAME}),
        device.mutation(
            "create",
            "care.encounter",
            encounter_id,
            encounter_fields(member, assessment=ASSESSMENT, person_id=str(person_id)),
        ),
        device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": NOTE}),
    )
    assert [result["status"] for result in results] == ["applied"] * 3, results
    assert results[2]["data"]["body"] == NOTE  # the device gets its text back, not ciphertext
    return person_id, encounter_id, note_id


def test_clinical_text_is_stored_sealed_in_every_sync_copy(program: Program, crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    _person_id, encounter_id, _note_id = push_clinical_records(device)
    # A conflict on the assessment keeps all three competing values.
    assert conflict_on(program, crew_member, encounter_id)["status"] == "conflict"

    stored = raw_sync_text()

    for secret in (ASSESSMENT, NOTE, NAME, "Agitated.", "Calm.", "Lexington"):
        assert secret not in stored
    assert SEALED_PREFIX in stored
    # Structure stays readable by the database: ids, versions and plain fields.
    head = SyncedRecord.objects.filter(pk=encounter_id).values_list("version", flat=True).get()
    with connection.cursor() as cursor:
        cursor.execute("SELECT data->>'unit_id' FROM sync_syncedrecord WHERE record_id = %s", [encounter_id])
        assert cursor.fetchone()[0] == str(crew_member.unit.pk)
    assert head == 2


def test_readers_get_the_plaintext_back(program: Program, crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    person_id, encounter_id, note_id = push_clinical_records(device)
    conflict_on(program, crew_member, encounter_id)
    teammate = make_crew_member(program, unit=crew_member.unit)

    entries, _cursor = SimDevice(teammate).pull()
    snapshot = SimDevice(teammate).client().get("/api/v1/sync/snapshot/")
    conflict = Conflict.objects.get(record_id=encounter_id)
    mutation = Mutation.objects.get(record_id=note_id)

    data = {entry["id"]: entry["data"] for entry in entries if entry["op"] == "upsert"}
    assert data[str(note_id)]["body"] == NOTE
    assert data[str(person_id)]["given_name"] == NAME
    assert snapshot.status_code == 200
    assert NOTE in snapshot.content.decode() and ASSESSMENT not in snapshot.content.decode()
    assert "Agitated." in snapshot.content.decode()
    assert (conflict.base_value, conflict.server_value, conflict.device_value) == (ASSESSMENT, "Agitated.", "Calm.")
    assert mutation.payload["fields"]["body"] == NOTE and "data" not in mutation.result


def test_a_key_rotation_keeps_every_copy_readable_and_reseals_them_with_the_new_key(
    settings: Any, program: Program, crew_member: CrewMember
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old_key]
    device = SimDevice(crew_member)
    _person_id, _encounter_id, note_id = push_clinical_records(device)
    sealed_with_old = raw_sync_text()

    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    reader = SimDevice(make_crew_member(program, unit=crew_member.unit))
    entries, _cursor = reader.pull()  # the old key still opens what it sealed
    assert any(entry["data"].get("body") == NOTE for entry in entries)

    changed = reseal_stored_copies(chunk_size=2)

    assert changed > 0
    assert reseal_stored_copies() == 0  # nothing left sealed with an older key
    settings.FIELD_ENCRYPTION_KEYS = [new_key]  # the old key can go now
    assert NOTE not in raw_sync_text() and raw_sync_text() != sealed_with_old
    entries, _cursor = reader.pull()
    assert {entry["data"].get("body") for entry in entries if entry["id"] == str(note_id)} == {NOTE}
    assert Mutation.objects.get(record_id=note_id).payload["fields"]["body"] == NOTE


def test_a_copy_no_configured_key_opens_fails_loudly(settings: Any, crew_member: CrewMember) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    _person_id, _encounter_id, note_id = push_clinical_records(SimDevice(crew_member))

    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(UnreadableHealthInformation):
        Mutation.objects.get(record_id=note_id)


def test_a_records_memo_reuses_a_sealing_only_for_the_same_value_of_the_same_type() -> None:
    """Copies of one record share the sealing of an unchanged value; a value that changed
    type (the text "1", the number 1, true) gets its own, and each opens to what it was."""
    from apps.sync import sealing

    memo: dict[Any, str] = {}
    first = sealing.seal_tree({"assessment": "Calm, oriented."}, memo)
    again = sealing.seal_tree({"assessment": "Calm, oriented.", "disposition": ""}, memo)
    variants = [sealing.seal_tree({"assessment": value}, memo) for value in ("1", 1, True)]

    assert again["assessment"] == first["assessment"]
    assert len({variant["assessment"] for variant in variants}) == 3
    assert [sealing.unseal_tree(variant)["assessment"] for variant in variants] == ["1", 1, True]


# Text a person may type that begins as a sealed value does: it is text like any other.
LOOKS_SEALED = {
    "given_name": "gAAAAAhello",
    "assessment": "sealed:v2:AAAA",
    "location": "gAAAAABBBB",
    "body": "sealed:v2:x",
    "service_name": "sealed:v2:AAAAAAAA",  # not health information: stored plain
}


def test_text_that_looks_sealed_is_sealed_like_any_other_and_read_back_as_typed(
    program: Program, crew_member: CrewMember
) -> None:
    device = SimDevice(crew_member)
    person_id, encounter_id, note_id, referral_id = (uuid.uuid4() for _ in range(4))
    outbox = [
        device.mutation(
            "create",
            "care.person",
            person_id,
            {"unit_id": str(crew_member.unit.pk), "given_name": LOOKS_SEALED["given_name"]},
        ),
        device.mutation(
            "create",
            "care.encounter",
            encounter_id,
            encounter_fields(crew_member, assessment=LOOKS_SEALED["assessment"], location=LOOKS_SEALED["location"]),
        ),
        device.mutation(
            "create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": LOOKS_SEALED["body"]}
        ),
        device.mutation(
            "create",
            "care.referral",
            referral_id,
            {
                "encounter_id": str(encounter_id),
                "service_type": "housing",
                "service_name": LOOKS_SEALED["service_name"],
            },
        ),
        # Kept in quarantine (an unknown type), for the writer and a supervisor to read.
        device.mutation("create", "care.unknown", uuid.uuid4(), {"body": LOOKS_SEALED["body"]}),
    ]
    assert [result["status"] for result in device.push(*outbox)] == ["applied"] * 4 + ["quarantined"]
    # And a competing assessment, kept as a conflict.
    teammate = make_crew_member(program, unit=crew_member.unit)
    pushed(teammate, "care.encounter", {"assessment": "Calm."}, op="update", record_id=encounter_id, base_version=1)
    conflict = pushed(
        crew_member, "care.encounter", {"assessment": "gAAAAAc"}, op="update", record_id=encounter_id, base_version=1
    )
    assert conflict["status"] == "conflict"
    reader = SimDevice(teammate)
    supervisor = SimDevice(make_crew_member(program, role=Role.SUPERVISOR))

    replayed = device.push(*outbox)
    entries, _cursor = reader.pull()
    snapshot = reader.client().get("/api/v1/sync/snapshot/")
    watermelon = reader.client().get("/api/v1/sync/watermelon/pull/")
    quarantine = supervisor.client().get("/api/v1/sync/quarantine/")
    conflicts = supervisor.client().get("/api/v1/sync/conflicts/")

    assert [result["status"] for result in replayed] == ["duplicate"] * 5
    assert [response.status_code for response in (snapshot, watermelon, quarantine, conflicts)] == [200] * 4
    pulled = {entry["id"]: entry["data"] for entry in entries if entry["op"] == "upsert"}
    snapshotted = {record["id"]: record["data"] for record in snapshot.json()["records"]}
    for records in (pulled, snapshotted):
        assert records[str(person_id)]["given_name"] == LOOKS_SEALED["given_name"]
        assert records[str(encounter_id)]["location"] == LOOKS_SEALED["location"]
        assert records[str(note_id)]["body"] == LOOKS_SEALED["body"]
        assert records[str(referral_id)]["service_name"] == LOOKS_SEALED["service_name"]
    [kept] = quarantine.json()["results"]
    assert kept["payload"]["fields"]["body"] == LOOKS_SEALED["body"]
    [open_conflict] = conflicts.json()["results"]
    assert (open_conflict["server_value"], open_conflict["device_value"]) == ("Calm.", "gAAAAAc")
    stored = raw_sync_text()
    for name in ("given_name", "location", "body"):
        assert f'"{LOOKS_SEALED[name]}"' not in stored  # sealed, not taken for sealed
