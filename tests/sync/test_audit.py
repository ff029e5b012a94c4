from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from apps.accounts.models import Role
from apps.audit.models import AuditEvent
from apps.care.models import Encounter, Person
from apps.sync.models import Mutation, MutationStatus
from tests.care.factories import encounter
from tests.conftest import CrewMember, audit_trail_refusing, make_crew_member
from tests.sync.helpers import SimDevice, encounter_fields, stored_unapplied, sync_client

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_push_records_who_wrote_which_record_from_which_device(crew_member: CrewMember) -> None:
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()

    device.push(device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member)))
    device.push(device.mutation("update", "care.encounter", record_id, {"location": "Harlem"}, base_version=1))

    events = list(
        AuditEvent.objects.order_by("id").values_list(
            "action", "record_type", "record_id", "actor_id", "device_id", "channel"
        )
    )
    assert events == [
        ("create", "care.encounter", record_id, crew_member.user.pk, crew_member.device.pk, "sync"),
        ("update", "care.encounter", record_id, crew_member.user.pk, crew_member.device.pk, "sync"),
    ]


def test_a_replayed_push_answered_with_the_records_data_records_that_read(crew_member: CrewMember) -> None:
    """The stored answer of a mutation sent again holds its record's version as the server
    keeps it (a colleague's merged fields too): sending it is a read like any other."""
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    create = device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member))
    device.push(create)

    [replay] = device.push(create)  # the answer to the first was lost

    assert replay["status"] == "duplicate" and replay["data"]["location"] == encounter_fields(crew_member)["location"]
    assert list(AuditEvent.objects.order_by("id").values_list("action", "record_id", "actor_id", "device_id")) == [
        ("create", record_id, crew_member.user.pk, crew_member.device.pk),
        ("read", record_id, crew_member.user.pk, crew_member.device.pk),
    ]


def test_a_create_is_audited_as_a_create_when_its_mutation_id_is_reused_later_in_the_batch(
    crew_member: CrewMember,
) -> None:
    """The audit trail says what was done to a health record: a create that applied is a
    create, whatever a later mutation of the batch, rejected for reusing its mutation_id,
    meant to do."""
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    create = device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member))
    reused = device.mutation("delete", "care.encounter", record_id, base_version=1)
    reused["mutation_id"] = create["mutation_id"]

    results = device.push(create, reused)

    assert [(r["status"], r.get("error", {}).get("code")) for r in results] == [
        ("applied", None),
        ("rejected", "mutation_id_reused"),
    ]
    assert list(AuditEvent.objects.values_list("action", "record_type", "record_id")) == [
        ("create", "care.encounter", record_id)
    ]


def test_a_watermelondb_push_records_the_records_it_wrote_and_not_those_it_refused(crew_member: CrewMember) -> None:
    person_id, orphan_note_id = str(uuid.uuid4()), str(uuid.uuid4())
    changes = {
        "persons": {"created": [{"id": person_id, "unit_id": str(crew_member.unit.pk)}]},
        # Refused: its encounter was never pushed.
        "notes": {"created": [{"id": orphan_note_id, "encounter_id": str(uuid.uuid4()), "body": "Calm."}]},
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.json()["experimentalRejectedIds"] == {"notes": [orphan_note_id]}
    written = AuditEvent.objects.exclude(action="read").values_list("action", "record_type", "record_id")
    assert list(written) == [("create", "care.person", uuid.UUID(person_id))]


def test_a_watermelondb_push_records_each_write_it_applied_though_the_record_was_also_refused(
    crew_member: CrewMember,
) -> None:
    """The trail holds what was done, read from what applied: a record made and deleted
    offline was created and then deleted; a record the app sent twice, once refused, was
    still created, though its id is among the refused ones."""
    made_and_deleted, sent_twice = str(uuid.uuid4()), str(uuid.uuid4())
    unit_id = str(crew_member.unit.pk)
    changes = {
        "persons": {
            "created": [
                {"id": made_and_deleted, "unit_id": unit_id, "deleted": True},
                {"id": sent_twice, "unit_id": unit_id},
            ],
            "updated": [{"id": sent_twice, "unit_id": str(uuid.uuid4()), "server_version": 1}],  # another unit
        },
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.json()["experimentalRejectedIds"] == {"persons": [sent_twice]}
    written = AuditEvent.objects.exclude(action="read").order_by("id").values_list("action", "record_id")
    assert sorted(written) == sorted(
        [
            ("create", uuid.UUID(made_and_deleted)),
            ("delete", uuid.UUID(made_and_deleted)),
            ("create", uuid.UUID(sent_twice)),
        ]
    )


def test_a_pull_records_every_record_served_to_the_device(crew_member: CrewMember) -> None:
    writer = SimDevice(crew_member)
    reader = SimDevice(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    record_id = uuid.uuid4()
    writer.push(writer.mutation("create", "care.encounter", record_id, encounter_fields(crew_member)))

    entries, _ = reader.pull()

    assert [entry["id"] for entry in entries] == [str(record_id)]
    reads = AuditEvent.objects.filter(action="read")
    assert list(reads.values_list("record_id", "actor_id", "device_id")) == [
        (record_id, reader.member.user.pk, reader.member.device.pk)
    ]


def test_a_first_sync_snapshot_records_what_it_served(crew_member: CrewMember) -> None:
    writer = SimDevice(crew_member)
    record_ids = {uuid.uuid4() for _ in range(3)}
    for record_id in record_ids:
        writer.push(writer.mutation("create", "care.encounter", record_id, encounter_fields(crew_member)))
    reader = make_crew_member(crew_member.unit.program, unit=crew_member.unit)

    response = sync_client(reader).get("/api/v1/sync/snapshot/")

    assert response.status_code == 200
    served = set(AuditEvent.objects.filter(action="read", actor_id=reader.user.pk).values_list("record_id", flat=True))
    assert served == record_ids


def test_a_watermelondb_pull_records_no_read_of_a_record_it_only_tells_the_device_to_remove(
    crew_member: CrewMember,
) -> None:
    """A removal comes as a row of the id and ``deleted: true``: nothing of the record is
    served, as a feed ``remove`` serves nothing, and the trail must not say it was read
    (by a reader who may no longer see it, say)."""
    writer = SimDevice(crew_member)
    record_id = uuid.uuid4()
    writer.push(writer.mutation("create", "care.encounter", record_id, encounter_fields(crew_member)))
    reader = sync_client(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    timestamp = reader.get("/api/v1/sync/watermelon/pull/").json()["timestamp"]
    writer.push(writer.mutation("delete", "care.encounter", record_id, base_version=1))
    reads_before = AuditEvent.objects.filter(action="read").count()

    pulled = reader.get("/api/v1/sync/watermelon/pull/", {"last_pulled_at": timestamp}).json()

    assert pulled["changes"]["encounters"]["updated"] == [{"id": str(record_id), "deleted": True}]
    assert AuditEvent.objects.filter(action="read").count() == reads_before


def test_an_outsider_pull_reads_and_records_nothing(crew_member: CrewMember, outsider: CrewMember) -> None:
    writer = SimDevice(crew_member)
    writer.push(writer.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member)))

    entries, _ = SimDevice(outsider).pull()

    assert entries == []
    assert not AuditEvent.objects.filter(action="read").exists()


def _store_without_applying(member: CrewMember, mutation: dict[str, object]) -> None:
    """What a push leaves when the server dies between storing its batch and applying it."""
    stored_unapplied(member, [mutation])


def test_a_write_applied_by_the_stranded_mutations_sweep_names_its_writer_and_device(crew_member: CrewMember) -> None:
    """The server died between storing a push and applying it, and the sweep applied it later:
    the record was still written, by the device's user from that device, and the trail must say
    so. No request answers it (the device, retrying, gets a duplicate), so nothing else will."""
    from datetime import timedelta

    from apps.sync import push

    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    create = device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member))
    _store_without_applying(crew_member, create)

    assert push.apply_stranded(older_than=timedelta(0)) == 1
    [retried] = device.push(create)

    assert (retried["status"], retried["original_status"]) == ("duplicate", "applied")
    written = AuditEvent.objects.exclude(action="read").values_list(
        "action", "record_type", "record_id", "actor_id", "device_id", "channel"
    )
    assert list(written) == [
        ("create", "care.encounter", record_id, crew_member.user.pk, crew_member.device.pk, "sync")
    ]


def test_a_push_that_applies_an_earlier_stranded_mutation_of_its_device_audits_that_write_too(
    crew_member: CrewMember,
) -> None:
    """A push applies every stored, unapplied mutation of its device first, in order, the
    stranded ones of an earlier request that died included: those are writes of this request,
    and the device retrying the earlier batch later only gets duplicates."""
    device = SimDevice(crew_member)
    stranded_id, next_id = uuid.uuid4(), uuid.uuid4()
    stranded = device.mutation("create", "care.encounter", stranded_id, encounter_fields(crew_member))
    _store_without_applying(crew_member, stranded)

    [applied] = device.push(device.mutation("create", "care.encounter", next_id, encounter_fields(crew_member)))
    [retried] = device.push(stranded)

    assert (applied["status"], retried["status"]) == ("applied", "duplicate")
    written = AuditEvent.objects.exclude(action="read").values_list("action", "record_id", "actor_id", "device_id")
    assert sorted(written) == sorted(
        [
            ("create", stranded_id, crew_member.user.pk, crew_member.device.pk),
            ("create", next_id, crew_member.user.pk, crew_member.device.pk),
        ]
    )


def test_a_push_whose_audit_row_cannot_be_written_applies_nothing_and_keeps_the_mutation(
    crew_member: CrewMember,
) -> None:
    """P8: a write of health information is never kept without its audit row. The push's
    audit is written in the transaction of its apply, so when the row cannot be written the
    record is not written either; the mutation stays in the ledger, applied by the next push."""
    device = SimDevice(crew_member)
    record_id = uuid.uuid4()
    create = device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member))
    client = device.client()
    client.raise_request_exception = False

    with audit_trail_refusing("create", "care.encounter"):
        response = client.post("/api/v1/sync/push/", {"mutations": [create]}, format="json")

    assert response.status_code == 500
    assert not Encounter.objects.filter(pk=record_id).exists()
    assert Mutation.objects.get(device=crew_member.device, mutation_id=create["mutation_id"]).status == "received"
    [applied] = device.push(device.mutation("update", "care.encounter", record_id, {"location": "Harlem"}, 1))
    assert applied["status"] == "applied"
    assert Encounter.objects.get(pk=record_id).location == "Harlem"
    written = AuditEvent.objects.exclude(action="read").order_by("id").values_list("action", "record_id", "device_id")
    assert list(written) == [("create", record_id, crew_member.device.pk), ("update", record_id, crew_member.device.pk)]


def test_a_watermelondb_push_whose_audit_row_cannot_be_written_applies_nothing(crew_member: CrewMember) -> None:
    person_id = str(uuid.uuid4())
    client = sync_client(crew_member)
    client.raise_request_exception = False
    changes = {"persons": {"created": [{"id": person_id, "unit_id": str(crew_member.unit.pk)}]}}

    with audit_trail_refusing("create", "care.person"):
        response = client.post(
            "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
        )

    assert response.status_code == 500
    assert not Person.objects.filter(pk=person_id).exists()
    assert Mutation.objects.get(device=crew_member.device, record_id=person_id).status == "received"


@pytest.mark.parametrize(
    ("record_type", "spell"),
    [("care.note", lambda record_id: str(record_id).upper()), ("care.notes", str)],
    ids=["id in another spelling", "unknown type"],
)
def test_listing_a_kept_change_that_names_no_synced_record_is_audited_as_a_read_of_the_change(
    crew_member: CrewMember, record_type: str, spell: Callable[[uuid.UUID], str]
) -> None:
    """P8: the quarantine serves what the device sent, a note's text included, whether or not
    it names a record the server syncs. Kept under no record id, or under a type no one
    registered, its read left no trace."""
    visit = encounter(crew_member)
    supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    body = "Hears voices telling him to hurt himself; no plan."
    device.push(device.mutation("create", record_type, spell(uuid.uuid4()), {"encounter_id": str(visit), "body": body}))
    kept = Mutation.objects.get(status=MutationStatus.QUARANTINED)

    [listed] = sync_client(supervisor).get("/api/v1/sync/quarantine/").json()["results"]

    assert listed["payload"]["fields"]["body"] == body
    reads = AuditEvent.objects.filter(actor_id=supervisor.user.pk, action="read")
    assert list(reads.values_list("record_type", "record_id")) == [("sync.mutation", uuid.UUID(int=kept.pk))]
