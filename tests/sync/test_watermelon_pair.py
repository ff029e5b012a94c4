"""The WatermelonDB pull / push pair over HTTP, beyond what the real library's test drives
(tests/sync/test_watermelon.py): the order a push applies in, and a pull's has_more."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import ANY

import pytest
from django.db import models
from django.utils import timezone

from apps.accounts.models import Role
from apps.care.models import ClinicalNote, Encounter, Person, Referral, ReferralOutcomeEvent
from apps.sync import conf, push, registry, services, watermelon
from apps.sync.models import Conflict, IssuedCursor, Mutation, MutationStatus, SyncedRecord
from apps.teams import services as teams_services
from tests.accounts.factories import device_with_token
from tests.care.factories import encounter, pushed
from tests.conftest import CrewMember, make_crew_member, revoke_device
from tests.sync.helpers import now_iso, respelt, sync_client


def _millis() -> int:
    """Now, as WatermelonDB stamps a local change (``updated_at``)."""
    return int(timezone.now().timestamp() * 1000)


def _created(*records: dict[str, object]) -> dict[str, list[object]]:
    return {"created": list(records), "updated": [], "deleted": []}


def test_records_made_together_offline_apply_parents_first_whatever_the_tables_names(
    crew_member: CrewMember,
) -> None:
    unit_id = str(crew_member.unit.pk)
    person, visit, note, referral, outcome = (str(uuid.uuid4()) for _ in range(5))
    # Alphabetically, encounters come before persons and referral_outcomes before referrals.
    changes = {
        "encounters": _created({"id": visit, "unit_id": unit_id, "person_id": person, "started_at": now_iso()}),
        "notes": _created({"id": note, "encounter_id": visit, "body": "Calm; safety plan made."}),
        "persons": _created({"id": person, "unit_id": unit_id, "given_name": "Ana"}),
        "referral_outcomes": _created(
            {"id": outcome, "referral_id": referral, "outcome": "scheduled", "observed_at": now_iso()}
        ),
        "referrals": _created({"id": referral, "encounter_id": visit, "service_type": "outpatient_mental_health"}),
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["experimentalRejectedIds"] == {}
    assert Encounter.objects.get(pk=visit).person_id == uuid.UUID(person)
    assert Person.objects.filter(pk=person).exists()
    assert ClinicalNote.objects.filter(pk=note, encounter_id=visit).exists()
    assert Referral.objects.get(pk=referral).status == "scheduled"
    assert ReferralOutcomeEvent.objects.filter(pk=outcome).exists()


def test_every_synced_type_is_registered_after_the_types_its_records_refer_to() -> None:
    synced_models = {synced_type.model for synced_type in registry.in_registration_order()}
    registered: set[type[models.Model]] = set()
    for synced_type in registry.in_registration_order():
        for model_field in synced_type.model._meta.get_fields():
            target = model_field.related_model if isinstance(model_field, models.ForeignKey) else None
            if target in synced_models and target is not synced_type.model:
                assert target in registered, f"{synced_type.name} is registered before {target.__name__}"
        registered.add(synced_type.model)


@pytest.mark.django_db(transaction=True)  # the feed serves committed changes only
def test_a_pull_that_stops_short_of_the_feeds_end_says_there_is_more(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sync_client(crew_member)
    timestamp = client.get("/api/v1/sync/watermelon/pull/").json()["timestamp"]
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    written = {str(encounter(teammate)) for _ in range(5)}
    monkeypatch.setattr(watermelon, "_PULL_PAGE", 2)  # a pull reads at most 2 x 2 entries
    monkeypatch.setattr(watermelon, "_PULL_PAGES_PER_SYNC", 2)

    pulls: list[dict[str, Any]] = []
    while not pulls or pulls[-1]["has_more"]:
        pulls.append(client.get("/api/v1/sync/watermelon/pull/", {"last_pulled_at": timestamp}).json())
        timestamp = pulls[-1]["timestamp"]

    assert [body["has_more"] for body in pulls] == [True, False]
    pulled = [body["changes"].get("encounters", {}).get("updated", []) for body in pulls]
    assert {raw["id"] for records in pulled for raw in records} == written


def _pull_until_done(client: Any, timestamp: int | None) -> list[dict[str, Any]]:
    pulls: list[dict[str, Any]] = []
    while not pulls or pulls[-1]["has_more"]:
        pulls.append(client.get("/api/v1/sync/watermelon/pull/", {"last_pulled_at": timestamp or ""}).json())
        timestamp = pulls[-1]["timestamp"]
    return pulls


def _encounter_ids(pull: dict[str, Any]) -> list[str]:
    return [raw["id"] for raw in pull["changes"].get("encounters", {}).get("updated", [])]


@pytest.mark.django_db(transaction=True)  # the feed after the snapshot serves committed changes only
def test_a_first_sync_comes_in_parts_and_ends_with_the_feed_from_where_it_began(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    written = {str(encounter(teammate)) for _ in range(9)}
    monkeypatch.setattr(conf, "WATERMELON_FIRST_SYNC_PART", 4)
    monkeypatch.setattr(watermelon, "_SNAPSHOT_READ", 3)  # a part read in more than one query
    client = sync_client(crew_member)

    first = client.get("/api/v1/sync/watermelon/pull/").json()
    written_meanwhile = str(encounter(teammate))  # after the snapshot began: the feed's
    pulls = [first, *_pull_until_done(client, first["timestamp"])]

    # Three parts of the snapshot (4, 4 and the rest), then the feed from where it began.
    assert [body["has_more"] for body in pulls] == [True, True, True, False]
    parts = [_encounter_ids(body) for body in pulls]
    assert [len(part) for part in parts[:2]] == [4, 4]
    snapshot = [record_id for part in parts[:3] for record_id in part]
    assert len(snapshot) == len(set(snapshot)), "a record came in two parts"
    assert written <= set(snapshot)
    assert written_meanwhile in set(snapshot) | set(parts[3])


@pytest.mark.django_db(transaction=True)
def test_a_unit_left_during_a_first_sync_is_gone_from_the_device_when_it_ends(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    for _ in range(2):
        encounter(teammate)
    monkeypatch.setattr(conf, "WATERMELON_FIRST_SYNC_PART", 1)
    client = sync_client(crew_member)
    first = client.get("/api/v1/sync/watermelon/pull/").json()
    assert first["has_more"]

    teams_services.unit_member_remove(unit=crew_member.unit, user=crew_member.user)
    pulls = [first, *_pull_until_done(client, first["timestamp"])]

    held: set[str] = set()
    for body in pulls:
        for raw in body["changes"].get("encounters", {}).get("updated", []):
            (held.discard if raw.get("deleted") else held.add)(raw["id"])
    assert held == set(), "the device ends the first sync holding a record of the unit it left"


def _first_part_of_three(crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for _ in range(3):
        encounter(crew_member)
    monkeypatch.setattr(conf, "WATERMELON_FIRST_SYNC_PART", 1)
    first: dict[str, Any] = sync_client(crew_member).get("/api/v1/sync/watermelon/pull/").json()
    assert first["has_more"]
    return first


def test_a_first_sync_part_way_through_is_not_continued_by_another_device(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _first_part_of_three(crew_member, monkeypatch)
    other_tablet, token = device_with_token(crew_member.user, name="Second tablet")

    refused = sync_client(CrewMember(crew_member.user, crew_member.unit, other_tablet, token)).get(
        "/api/v1/sync/watermelon/pull/", {"last_pulled_at": first["timestamp"]}
    )

    assert refused.status_code == 410, refused.content
    assert (refused.json()["code"], refused.json()["errors"][0]["field"]) == ("cursor_expired", "last_pulled_at")


def test_a_first_sync_resumed_after_the_retention_passed_gets_410(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _first_part_of_three(crew_member, monkeypatch)
    services.feed_prune(older_than=timedelta(0))

    resumed = sync_client(crew_member).get("/api/v1/sync/watermelon/pull/", {"last_pulled_at": first["timestamp"]})

    assert resumed.status_code == 410, resumed.content
    assert (resumed.json()["code"], resumed.json()["errors"][0]["field"]) == ("cursor_expired", "last_pulled_at")


def test_a_refused_watermelon_record_is_named_where_it_is_in_the_pushed_body(crew_member: CrewMember) -> None:
    unit_id = str(crew_member.unit.pk)
    naive_visit, good_visit = str(uuid.uuid4()), str(uuid.uuid4())
    changes = {
        "encounters": {
            "created": [
                {"id": good_visit, "unit_id": unit_id, "started_at": now_iso()},
                {"id": naive_visit, "unit_id": unit_id, "started_at": "2026-11-20T14:05:00"},
            ],
            "updated": [{"id": 5, "assessment": "Calm."}],
            "deleted": ["not-a-uuid"],
        },
        "gizmos": _created({"id": str(uuid.uuid4())}),
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    refusals = [result["error"]["field"] for result in body["results"] if result["status"] != "applied"]
    assert refusals == [
        "changes.encounters.created.1.started_at",
        "changes.encounters.updated.0.id",
        "changes.gizmos",
        "changes.encounters.deleted.0",  # deletes apply after every create and update
    ]
    # Only strings can be local ids: the number 5 is not reported as the id "5".
    assert body["experimentalRejectedIds"] == {"encounters": [naive_visit, "not-a-uuid"], "gizmos": [ANY]}
    assert Encounter.objects.filter(pk=good_visit).exists()


def test_a_note_refused_with_its_encounter_is_taken_when_the_app_sends_the_encounter_fixed(
    crew_member: CrewMember,
) -> None:
    """The app keeps sending refused rows until they are taken: the encounter with the time the
    user corrected, the note under it as it was. The note, kept only because its encounter was,
    applies with it, and its row sent again is answered as taken, not refused again."""
    client = sync_client(crew_member)
    visit, note = str(uuid.uuid4()), str(uuid.uuid4())
    written: dict[str, object] = {"id": note, "encounter_id": visit, "body": "Calm; safety plan made."}

    def push_with_start(started_at: str) -> dict[str, Any]:
        changes = {
            "encounters": _created({"id": visit, "unit_id": str(crew_member.unit.pk), "started_at": started_at}),
            "notes": _created(written),
        }
        response = client.post(
            "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
        )
        assert response.status_code == 200, response.content
        body: dict[str, Any] = response.json()
        return body

    refused = push_with_start("2026-11-20T14:05:00")  # no offset: refused
    fixed = push_with_start(now_iso())

    assert refused["experimentalRejectedIds"] == {"encounters": [visit], "notes": [note]}
    assert refused["results"][1]["error"]["code"] == "parent_quarantined"
    assert fixed["experimentalRejectedIds"] == {}
    assert [(r["status"], r.get("original_status")) for r in fixed["results"]] == [
        ("applied", None),
        ("duplicate", "applied"),
    ]
    assert ClinicalNote.objects.get(pk=note).encounter_id == uuid.UUID(visit)


def _note_pusher(
    crew_member: CrewMember, client: Any, visit: str, note: str, last_pulled_at: int | None = None
) -> Callable[[str, str], dict[str, Any]]:
    """A push of the encounter and its note, both as the app made them (never synced)."""

    def push_with(started_at: str, note_body: str) -> dict[str, Any]:
        changes = {
            "encounters": _created({"id": visit, "unit_id": str(crew_member.unit.pk), "started_at": started_at}),
            "notes": _created({"id": note, "encounter_id": visit, "body": note_body}),
        }
        response = client.post(
            "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": last_pulled_at}, format="json"
        )
        assert response.status_code == 200, response.content
        answer: dict[str, Any] = response.json()
        return answer

    return push_with


def test_a_note_refused_with_its_encounter_and_sent_again_edited_sets_its_kept_creates_aside(
    crew_member: CrewMember,
) -> None:
    """The app sends the note as the user last wrote it with the fixed encounter: both apply,
    and the creates the server kept of them, which the app no longer holds, are superseded:
    set aside by the server, as their writer's, naming the create that applied, kept as sent
    and out of the supervisors' queue. The app sending that push again (its answer lost)
    changes nothing."""
    supervisor = make_crew_member(crew_member.unit.program, role=Role.SUPERVISOR)
    client = sync_client(crew_member)
    visit, note = str(uuid.uuid4()), str(uuid.uuid4())
    push_with = _note_pusher(crew_member, client, visit, note)

    push_with("2026-11-20T14:05:00", "Calm.")  # no offset: refused, and the note with it
    queued = _queue_of(supervisor)
    fixed = push_with("2026-11-20T14:05:00+00:00", "Calm; safety plan made.")
    ledger = list(Mutation.objects.order_by("id").values_list("dismissed_at", "dismiss_code", "superseded_by"))
    replayed = push_with("2026-11-20T14:05:00+00:00", "Calm; safety plan made.")

    assert fixed["experimentalRejectedIds"] == {}
    assert ClinicalNote.objects.get(pk=note).body == "Calm; safety plan made."
    rows = list(Mutation.objects.order_by("id"))
    assert [(row.record_type, row.status, row.dismiss_code) for row in rows] == [
        ("care.encounter", "quarantined", "superseded"),
        ("care.note", "quarantined", "superseded"),
        ("care.encounter", "applied", ""),
        ("care.note", "applied", ""),
    ]
    assert [(row.superseded_by_id, row.dismissed_by_id) for row in rows[:2]] == [
        (rows[2].pk, crew_member.user.pk),
        (rows[3].pk, crew_member.user.pk),
    ]
    assert rows[1].payload["fields"]["body"] == "Calm."  # kept as it was sent
    assert (queued, _queue_of(supervisor)) == ([rows[0].pk, rows[1].pk], [])
    writers_list = sync_client(crew_member).get("/api/v1/sync/quarantine/").json()["results"]
    assert sorted((row["id"], row["dismissed"]["code"]) for row in writers_list) == [
        (rows[0].pk, "superseded"),
        (rows[1].pk, "superseded"),
    ]
    assert [r["status"] for r in replayed["results"]] == ["duplicate", "duplicate"]
    assert list(Mutation.objects.order_by("id").values_list("dismissed_at", "dismiss_code", "superseded_by")) == ledger


def _queue_of(supervisor: CrewMember) -> list[int]:
    """The supervisor's quarantine list: what waits for their review, oldest first."""
    return sorted(row["id"] for row in sync_client(supervisor).get("/api/v1/sync/quarantine/").json()["results"])


def _pulled_and_edited_once_more(
    client: Any, note: str, body: str, last_pulled_at: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The app's next sync, from its last pull, then one more edit of the note: it takes what
    the pull brings of the note (synced since its push), and the user adds to the text it then
    shows. Returns the note's pulled rows and the edit's result."""
    pulls = _pull_until_done(client, last_pulled_at)
    rows = [row for pull in pulls for row in pull["changes"].get("notes", {}).get("updated", []) if row["id"] == note]
    held_body, held_version = body, 0
    for row in rows:
        held_body, held_version = row["body"], row["server_version"]
    edit = {
        "id": note,
        "body": f"{held_body} Sister called.",
        "server_version": held_version,
        "updated_at": _millis(),
        "_status": "updated",
        "_changed": "body",
    }
    changes = {"notes": {"created": [], "updated": [edit], "deleted": []}}
    return rows, _push(client, changes, pulls[-1]["timestamp"])


@pytest.mark.django_db(transaction=True)  # the feed serves committed changes only
def test_a_note_refused_with_its_encounter_and_edited_since_ends_with_the_edit_not_a_conflict(
    crew_member: CrewMember,
) -> None:
    """P3: the note sent again with the user's edit, with its fixed encounter, applies as the
    device's own write, holding the user's last text; its first create, kept, is not
    released (the app would be sent that older text as the server's, and its next edit made
    on it would replace the user's last text unseen): it stays in quarantine, set aside as
    superseded by the create that applied. The app's next sync brings no older text, and its
    next edit builds on the last."""
    client = sync_client(crew_member)
    visit, note = str(uuid.uuid4()), str(uuid.uuid4())
    first_sync = _pull_until_done(client, None)[-1]["timestamp"]
    push_with = _note_pusher(crew_member, client, visit, note, first_sync)

    push_with("2026-11-20T14:05:00", "Calm.")  # no offset: refused, and the note with it
    fixed = push_with(now_iso(), "Calm; safety plan made.")

    assert fixed["experimentalRejectedIds"] == {}
    assert ClinicalNote.objects.get(pk=note).body == "Calm; safety plan made."
    assert not Conflict.objects.exists()
    assert [
        (body["body"], status, dismiss_code)
        for body, status, dismiss_code in Mutation.objects.filter(record_type="care.note")
        .order_by("id")
        .values_list("payload__fields", "status", "dismiss_code")
    ] == [("Calm.", "quarantined", "superseded"), ("Calm; safety plan made.", "applied", "")]

    pulled, edited = _pulled_and_edited_once_more(client, note, "Calm; safety plan made.", first_sync)

    assert [row["body"] for row in pulled] in ([], ["Calm; safety plan made."])
    assert edited["status"] == "applied"
    assert ClinicalNote.objects.get(pk=note).body == "Calm; safety plan made. Sister called."


@pytest.mark.django_db(transaction=True)  # the feed serves committed changes only
def test_a_note_refused_with_its_encounter_and_edited_while_it_was_ends_with_the_edit_once_it_is_fixed(
    crew_member: CrewMember,
) -> None:
    """Each sync while the encounter stays refused sends the note as the user last wrote it, a
    new create kept with the first; the sync that sends the encounter fixed sends the note
    edited once more. That create applies, as the device's own, and the note holds the
    user's last text; the creates kept are not released over it (P3): they stay in
    quarantine, set aside as superseded by it. The app's next sync brings no older text, and
    its next edit builds on the last."""
    client = sync_client(crew_member)
    visit, note = str(uuid.uuid4()), str(uuid.uuid4())
    first_sync = _pull_until_done(client, None)[-1]["timestamp"]
    push_with = _note_pusher(crew_member, client, visit, note, first_sync)

    naive = "2026-11-20T14:05:00"  # no offset: refused, and the note with it
    push_with(naive, "Calm.")
    edited = push_with(naive, "Calm; safety plan made.")
    fixed = push_with(now_iso(), "Calm; safety plan made; GP told.")

    assert edited["experimentalRejectedIds"] == {"encounters": [visit], "notes": [note]}
    assert fixed["experimentalRejectedIds"] == {}
    assert ClinicalNote.objects.get(pk=note).body == "Calm; safety plan made; GP told."
    assert not Conflict.objects.exists()
    assert list(
        Mutation.objects.filter(record_type="care.note")
        .order_by("id")
        .values_list("status", "error_code", "dismiss_code")
    ) == [
        ("quarantined", "parent_quarantined", "superseded"),
        ("quarantined", "parent_quarantined", "superseded"),
        ("applied", "", ""),
    ]

    pulled, edited_again = _pulled_and_edited_once_more(client, note, "Calm; safety plan made; GP told.", first_sync)

    assert [row["body"] for row in pulled] in ([], ["Calm; safety plan made; GP told."])
    assert edited_again["status"] == "applied"
    assert ClinicalNote.objects.get(pk=note).body == "Calm; safety plan made; GP told. Sister called."


@pytest.mark.django_db(transaction=True)  # the feed serves committed changes only
def test_a_note_refused_with_its_encounter_and_edited_while_it_was_is_released_whole_when_only_the_encounter_is_new(
    crew_member: CrewMember,
) -> None:
    """The note's last text sent again as it was (a replay of its kept create) with the fixed
    encounter: nothing else of the note is in the push, so its kept creates apply in the
    order they were made, and come back to the app, ending with the user's last text."""
    client = sync_client(crew_member)
    visit, note = str(uuid.uuid4()), str(uuid.uuid4())
    first_sync = _pull_until_done(client, None)[-1]["timestamp"]
    push_with = _note_pusher(crew_member, client, visit, note, first_sync)

    naive = "2026-11-20T14:05:00"  # no offset: refused, and the note with it
    push_with(naive, "Calm.")
    push_with(naive, "Calm; safety plan made.")
    fixed = push_with(now_iso(), "Calm; safety plan made.")

    assert fixed["experimentalRejectedIds"] == {}
    assert ClinicalNote.objects.get(pk=note).body == "Calm; safety plan made."
    assert not Conflict.objects.exists()
    assert set(Mutation.objects.filter(record_type="care.note").values_list("status", flat=True)) == {"applied"}

    pulled, edited_again = _pulled_and_edited_once_more(client, note, "Calm; safety plan made.", first_sync)

    assert [row["body"] for row in pulled][-1:] == ["Calm; safety plan made."]
    assert edited_again["status"] == "applied"
    assert ClinicalNote.objects.get(pk=note).body == "Calm; safety plan made. Sister called."


def test_a_note_refused_with_its_encounter_and_deleted_since_stays_out_when_the_encounter_is_fixed(
    crew_member: CrewMember,
) -> None:
    """The user deleted the refused note, a change kept with its create; fixing the encounter
    must not bring the note to life with the text the user deleted (and feed it to the unit):
    the note's changes stay together in quarantine, for review."""
    client = sync_client(crew_member)
    visit, note = str(uuid.uuid4()), str(uuid.uuid4())
    written: dict[str, object] = {"id": note, "encounter_id": visit, "body": "Written on the wrong person."}

    def push(started_at: str, note_deleted: bool) -> dict[str, Any]:
        changes = {
            "encounters": _created({"id": visit, "unit_id": str(crew_member.unit.pk), "started_at": started_at}),
            "notes": _created({**written, "deleted": note_deleted}),
        }
        response = client.post(
            "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
        )
        assert response.status_code == 200, response.content
        body: dict[str, Any] = response.json()
        return body

    naive = "2026-11-20T14:05:00"  # no offset: refused, and the note with it
    push(naive, note_deleted=False)
    deleted = push(naive, note_deleted=True)
    fixed = push(now_iso(), note_deleted=True)

    assert "record_quarantined" in {r.get("error", {}).get("code") for r in deleted["results"]}
    assert fixed["experimentalRejectedIds"] == {"notes": [note]}
    assert Encounter.objects.filter(pk=visit).exists()
    assert not ClinicalNote.objects.filter(pk=note).exists()
    assert not SyncedRecord.objects.filter(record_id=note).exists()
    assert set(Mutation.objects.filter(record_type="care.note").values_list("status", flat=True)) == {"quarantined"}


def test_a_refusal_that_names_no_field_still_names_where_the_record_is_in_the_pushed_body(
    crew_member: CrewMember,
) -> None:
    """A locked-out tablet's records are refused for the device, not for a field: the app
    still learns from each result which of its records it is, as from every other refusal."""
    visit = encounter(crew_member)
    revoke_device(crew_member)
    note = str(uuid.uuid4())
    changes = {
        "encounters": {
            "created": [],
            "updated": [
                {"id": str(visit), "assessment": "Written offline.", "server_version": 1, "updated_at": _millis()}
            ],
            "deleted": [],
        },
        "notes": _created({"id": note, "encounter_id": str(visit), "body": "Calm; safety plan made."}),
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    assert [(result["error"]["code"], result["error"]["field"]) for result in response.json()["results"]] == [
        ("device_revoked", "changes.encounters.updated.0"),
        ("device_revoked", "changes.notes.created.0"),
    ]


ID_FORM = "a UUID written in lowercase, 8-4-4-4-12 hex digits"


@respelt
def test_a_record_whose_id_is_spelt_otherwise_than_the_server_writes_it_is_rejected_naming_its_id(
    crew_member: CrewMember, respell: Callable[[uuid.UUID], str]
) -> None:
    """WatermelonDB's ids are case-sensitive strings: the record, read in another spelling,
    would be pulled back under an id the app does not hold, and kept twice."""
    unit_id = str(crew_member.unit.pk)
    spelt_id, good_id = uuid.uuid4(), str(uuid.uuid4())
    spelt = respell(spelt_id)
    changes = {
        "encounters": _created(
            {"id": spelt, "unit_id": unit_id, "started_at": now_iso()},
            {"id": good_id, "unit_id": unit_id, "started_at": now_iso()},
        )
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["experimentalRejectedIds"] == {"encounters": [spelt]}
    assert [(result["status"], result.get("error")) for result in body["results"]] == [
        (
            "quarantined",
            {"code": "invalid_id", "detail": f"id must be {ID_FORM}.", "field": "changes.encounters.created.0.id"},
        ),
        ("applied", None),
    ]
    assert list(Encounter.objects.values_list("pk", flat=True)) == [uuid.UUID(good_id)]


@respelt
def test_a_record_naming_its_parent_otherwise_than_the_server_writes_its_id_is_rejected_naming_the_field(
    crew_member: CrewMember, respell: Callable[[uuid.UUID], str]
) -> None:
    visit = encounter(crew_member)
    note = str(uuid.uuid4())
    changes = {"notes": _created({"id": note, "encounter_id": respell(visit), "body": "Calm; safety plan made."})}

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["experimentalRejectedIds"] == {"notes": [note]}
    assert [(result["status"], result.get("error")) for result in body["results"]] == [
        (
            "quarantined",
            {
                "code": "invalid_fields",
                "detail": f"Must be {ID_FORM}.",
                "field": "changes.notes.created.0.encounter_id",
            },
        ),
    ]
    assert not ClinicalNote.objects.filter(pk=note).exists()


def test_a_record_created_and_deleted_in_the_app_before_it_was_pushed_is_kept_deleted(crew_member: CrewMember) -> None:
    """Pushed under ``created`` with the app's delete flag set: created, then deleted, so the
    server keeps it soft-deleted with all the app wrote of it (and the note under the deleted
    encounter is created before the encounter is deleted)."""
    unit_id = str(crew_member.unit.pk)
    visit, note = str(uuid.uuid4()), str(uuid.uuid4())
    changes = {
        "encounters": _created(
            {"id": visit, "unit_id": unit_id, "started_at": now_iso(), "location": "Wrong call", "deleted": True}
        ),
        "notes": _created({"id": note, "encounter_id": visit, "body": "Written in error.", "deleted": True}),
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["experimentalRejectedIds"] == {}
    assert [(result["id"], result["status"], result["version"]) for result in body["results"]] == [
        (visit, "applied", 1),
        (note, "applied", 1),
        (visit, "applied", 2),
        (note, "applied", 2),
    ]
    stored_visit, stored_note = Encounter.objects.get(pk=visit), ClinicalNote.objects.get(pk=note)
    assert (stored_visit.is_deleted, stored_visit.location) == (True, "Wrong call")
    assert (stored_note.is_deleted, stored_note.body) == (True, "Written in error.")
    heads = SyncedRecord.objects.filter(record_id__in=[visit, note])
    assert sorted((str(head.record_id), head.version, head.is_deleted) for head in heads) == sorted(
        [(visit, 2, True), (note, 2, True)]
    )


def test_a_record_made_and_deleted_offline_whose_create_is_refused_is_kept_whole_and_named_once(
    crew_member: CrewMember,
) -> None:
    visit = str(uuid.uuid4())
    naive = {"id": visit, "unit_id": str(crew_member.unit.pk), "started_at": "2026-11-20T14:05:00", "deleted": True}

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/",
        {"changes": {"encounters": _created(naive)}, "lastPulledAt": None},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert [(result["status"], result["error"]["code"]) for result in body["results"]] == [
        ("quarantined", "invalid_fields"),
        ("quarantined", "record_quarantined"),  # the delete waits with its create, for review
    ]
    assert body["experimentalRejectedIds"] == {"encounters": [visit]}
    assert not Encounter.objects.filter(pk=visit).exists()


def test_a_note_written_under_an_encounter_the_app_then_deleted_is_created_before_the_encounter_is_deleted(
    crew_member: CrewMember,
) -> None:
    """WatermelonDB sends no order: the clinician wrote the note, then deleted the encounter,
    and both arrive in one push. Deleted first, the encounter would refuse the note, which
    the app would hold unsynced for ever; every delete of a push applies after its creates."""
    visit = encounter(crew_member, location="Lenox Ave")
    note = str(uuid.uuid4())
    changes = {
        "encounters": {
            "created": [],
            "updated": [
                {
                    "id": str(visit),
                    "server_version": 1,
                    "deleted": True,
                    "updated_at": _millis(),
                    "_status": "updated",
                    "_changed": "deleted",
                }
            ],
            "deleted": [],
        },
        "notes": _created(
            {"id": note, "encounter_id": str(visit), "body": "Calm; safety plan made.", "deleted": False}
        ),
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["experimentalRejectedIds"] == {}
    assert [(result["id"], result["status"]) for result in body["results"]] == [
        (note, "applied"),
        (str(visit), "applied"),
    ]
    assert ClinicalNote.objects.get(pk=note).body == "Calm; safety plan made."
    assert Encounter.objects.get(pk=visit).is_deleted


@pytest.mark.parametrize("server_version", ["1", -1, 1.5, [1]])
def test_a_server_version_that_is_not_a_version_quarantines_its_record_naming_it(
    crew_member: CrewMember, server_version: object
) -> None:
    """Read as no base at all (never synced), it merged the edit against a guess: the device's
    own fields applied as if it had seen every colleague's change. It is refused as the other
    push refuses such a base_version, naming the record's server_version, nothing applied."""
    visit = encounter(crew_member, location="Lenox Ave")
    edit = {"id": str(visit), "server_version": server_version, "location": "Harlem Hospital", "_changed": "location"}
    changes = {"encounters": {"created": [], "updated": [edit], "deleted": []}}

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    [result] = body["results"]
    assert (result["status"], result["error"]["code"], result["error"]["field"]) == (
        "quarantined",
        "invalid_base_version",
        "changes.encounters.updated.0.server_version",
    )
    assert body["experimentalRejectedIds"] == {"encounters": [str(visit)]}
    assert Encounter.objects.get(pk=visit).location == "Lenox Ave"


@pytest.mark.parametrize("flag", ["true", 1, None])
def test_a_delete_flag_that_is_not_true_or_false_quarantines_its_record_naming_the_flag(
    crew_member: CrewMember, flag: object
) -> None:
    """Read as false, it would apply the rest of a record the app meant to delete."""
    edited, kept_live = encounter(crew_member, location="Lenox Ave"), encounter(crew_member, location="Lenox Ave")
    made = str(uuid.uuid4())
    edit = {
        "server_version": 1,
        "location": "Harlem Hospital",
        "updated_at": _millis(),
        "_status": "updated",
        "_changed": "deleted,location",
    }
    changes = {
        "encounters": {
            "created": [{"id": made, "unit_id": str(crew_member.unit.pk), "started_at": now_iso(), "deleted": flag}],
            "updated": [{**edit, "id": str(edited), "deleted": flag}, {**edit, "id": str(kept_live), "deleted": False}],
            "deleted": [],
        }
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert [(result["status"], result.get("error")) for result in body["results"]] == [
        (
            "quarantined",
            {"code": "invalid_fields", "detail": "Send true or false.", "field": f"changes.encounters.{place}.deleted"},
        )
        for place in ("created.0", "updated.0")
    ] + [("applied", None)]
    assert body["experimentalRejectedIds"] == {"encounters": [made, str(edited)]}
    assert not Encounter.objects.filter(pk=made).exists()
    stored = Encounter.objects.in_bulk([edited, kept_live])
    assert (stored[edited].location, stored[edited].is_deleted) == ("Lenox Ave", False)
    assert (stored[kept_live].location, stored[kept_live].is_deleted) == ("Harlem Hospital", False)
    # Kept as it was sent, and never applied by a review: no review makes the flag readable.
    refused = Mutation.objects.filter(record_id__in=[made, edited], status=MutationStatus.QUARANTINED)
    assert [push.unreadable_as_sent(mutation) for mutation in refused] == [True, True]


def test_an_edit_made_before_the_app_deleted_the_record_is_kept_with_the_deleted_record(
    crew_member: CrewMember,
) -> None:
    """The clinician adds to the assessment, then deletes the encounter, before the tablet
    syncs: WatermelonDB sends one updated row holding both. Taken as a bare delete, the
    assessment would be answered applied and stored nowhere; it is applied, then deleted."""
    visit = encounter(crew_member, location="Lenox Ave")
    changes = {
        "encounters": {
            "created": [],
            "updated": [
                {
                    "id": str(visit),
                    "server_version": 1,
                    "assessment": "Calm; declined transport.",
                    "deleted": True,
                    "updated_at": _millis(),
                    "_status": "updated",
                    "_changed": "assessment,deleted",
                }
            ],
            "deleted": [],
        }
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["experimentalRejectedIds"] == {}
    assert [(result["id"], result["status"], result["version"]) for result in body["results"]] == [
        (str(visit), "applied", 2),
        (str(visit), "applied", 3),
    ]
    stored = Encounter.objects.get(pk=visit)
    assert (stored.assessment, stored.is_deleted) == ("Calm; declined transport.", True)
    # Sent again, it is a replay: nothing applies twice.
    again = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )
    assert [result["status"] for result in again.json()["results"]] == ["duplicate", "duplicate"]
    assert SyncedRecord.objects.get(record_id=visit).version == 3


@pytest.mark.django_db(transaction=True)  # the feed serves committed changes only
def test_timestamps_issued_before_the_feeds_retention_are_pruned_with_it(crew_member: CrewMember) -> None:
    """Every WatermelonDB pull issues a timestamp: kept for ever, they would grow by one row
    per device per pull. Those older than the retention go with the feed; a device still
    holding one gets the 410 of any cursor from before the retention and re-bootstraps."""
    client = sync_client(crew_member)
    old = client.get("/api/v1/sync/watermelon/pull/").json()["timestamp"]
    IssuedCursor.objects.filter(pk=old).update(created_at=timezone.now() - timedelta(days=31))
    recent = client.get("/api/v1/sync/watermelon/pull/", {"last_pulled_at": old}).json()["timestamp"]

    services.feed_prune(older_than=timedelta(days=30))

    assert list(IssuedCursor.objects.values_list("pk", flat=True)) == [recent]
    assert client.get("/api/v1/sync/watermelon/pull/", {"last_pulled_at": old}).status_code == 410
    assert client.get("/api/v1/sync/watermelon/pull/", {"last_pulled_at": recent}).status_code == 200


def test_a_records_updated_at_is_kept_as_when_it_was_observed_and_an_implausible_one_flagged(
    crew_member: CrewMember,
) -> None:
    """WatermelonDB stamps each local change with the device's clock (``updated_at``, in
    milliseconds): the device's time of the change, kept and checked as the other push's
    ``observed_at`` is. It was dropped, and a tablet's clock years off went unnoticed."""
    unit_id = str(crew_member.unit.pk)
    on_time, years_ahead = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = int(timezone.now().timestamp() * 1000)
    ahead = stamp + 3 * 365 * 24 * 3600 * 1000
    record = {"unit_id": unit_id, "started_at": now_iso()}
    changes = {
        "encounters": _created(
            {**record, "id": on_time, "updated_at": stamp}, {**record, "id": years_ahead, "updated_at": ahead}
        )
    }
    client = sync_client(crew_member)

    answer = client.post("/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json")
    again = client.post("/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json")

    assert [result["status"] for result in answer.json()["results"]] == ["applied", "applied"]
    kept = {str(row.record_id): row for row in Mutation.objects.all()}
    assert kept[on_time].observed_at == datetime.fromtimestamp(stamp / 1000, tz=UTC)
    assert (kept[on_time].observed_at_plausible, kept[years_ahead].observed_at_plausible) == (True, False)
    assert [result["status"] for result in again.json()["results"]] == ["duplicate", "duplicate"]
    assert Mutation.objects.count() == 2


@pytest.mark.parametrize("updated_at", [2**63, -1e15, "1700000000000"])
def test_a_records_updated_at_no_clock_shows_is_refused_naming_it(crew_member: CrewMember, updated_at: float) -> None:
    """A number beyond the years 1 to 9999 is no time a clock shows: it was dropped, the
    record applied without one and the broken clock went unnoticed. Refused naming it, as
    the other push refuses an ``observed_at`` it cannot read; the same record with a time
    applies."""
    visit = encounter(crew_member, location="A")
    made, made_and_deleted = str(uuid.uuid4()), str(uuid.uuid4())
    record = {"unit_id": str(crew_member.unit.pk), "started_at": now_iso(), "updated_at": updated_at}
    changes = {
        "encounters": {
            "created": [{**record, "id": made}, {**record, "id": made_and_deleted, "deleted": True}],
            "updated": [{"id": str(visit), "location": "B", "server_version": 1, "updated_at": updated_at}],
            "deleted": [],
        }
    }
    client = sync_client(crew_member)

    answer = client.post("/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json")

    refused = [(result["id"], result["error"]["code"], result["error"]["field"]) for result in answer.json()["results"]]
    assert refused[:3] == [
        (made, "invalid_observed_at", "changes.encounters.created.0.updated_at"),
        (made_and_deleted, "invalid_observed_at", "changes.encounters.created.1.updated_at"),
        (str(visit), "invalid_observed_at", "changes.encounters.updated.0.updated_at"),
    ]
    rejected = answer.json()["experimentalRejectedIds"]["encounters"]
    assert sorted(rejected) == sorted([made, made_and_deleted, str(visit)])
    assert not Encounter.objects.filter(pk__in=[made, made_and_deleted]).exists()
    assert Encounter.objects.get(pk=visit).location == "A"

    fixed = {"id": str(visit), "location": "B", "server_version": 1, "updated_at": _millis()}
    changes = {"encounters": {"created": [], "updated": [fixed], "deleted": []}}
    again = client.post("/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json")
    assert [result["status"] for result in again.json()["results"]] == ["applied"]
    assert Encounter.objects.get(pk=visit).location == "B"


def test_a_records_key_is_its_content_whatever_observed_at_it_is_given(crew_member: CrewMember) -> None:
    """The time is read from the content, so the key stays what it was before it was read:
    a push stored then, sent again after the upgrade, is still a replay."""
    mutation = {"type": "care.encounter", "id": str(uuid.uuid4()), "op": "create", "fields": {}, "content": {"a": 1}}

    keyed = push.parse_envelope(mutation, 0, keyed_by_content=True).payload_hash
    timed = push.parse_envelope({**mutation, "observed_at": now_iso()}, 0, keyed_by_content=True).payload_hash

    assert keyed == timed == hashlib.sha256(push._canonical(mutation)).hexdigest()


def _referral_ids(pull: dict[str, Any]) -> list[str]:
    return [raw["id"] for raw in pull["changes"].get("referrals", {}).get("updated", [])]


@pytest.mark.django_db(transaction=True)  # the feed serves committed changes only
def test_an_apps_schema_migration_brings_the_records_of_the_tables_it_added(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app whose schema had no referrals table skipped the referrals it was sent (as
    WatermelonDB does, warning). Once its migration adds the table, its next pull names it;
    ignored, the referrals written before were never sent again, and the app never had them."""
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    encounter_id = encounter(teammate)
    referral_fields = {"encounter_id": str(encounter_id), "service_type": "housing"}
    before = {str(pushed(teammate, "care.referral", referral_fields)["id"]) for _ in range(3)}
    client = sync_client(crew_member)
    timestamp = _pull_until_done(client, None)[-1]["timestamp"]
    written_after = str(encounter(teammate))
    monkeypatch.setattr(conf, "WATERMELON_FIRST_SYNC_PART", 2)
    migration = json.dumps({"from": 1, "tables": ["referrals"], "columns": []})

    first = client.get("/api/v1/sync/watermelon/pull/", {"last_pulled_at": timestamp, "migration": migration}).json()
    pulls = [first, *_pull_until_done(client, first["timestamp"])]

    # The referrals, in parts of 2, then the feed from where the app's sync had reached.
    assert [len(_referral_ids(body)) for body in pulls[:2]] == [2, 1]
    assert {record_id for body in pulls[:2] for record_id in _referral_ids(body)} == before
    assert not any(_encounter_ids(body) for body in pulls[:2])
    assert written_after in {record_id for body in pulls[2:] for record_id in _encounter_ids(body)}
    assert pulls[-1]["has_more"] is False


@pytest.mark.parametrize(
    "migration",
    # The last nested deeper than the JSON parser goes (a RecursionError, which answered 500).
    ["{", "[]", '{"tables": "referrals", "columns": []}', '{"tables": []}', "[" * 2000],
)
def test_a_migration_of_another_shape_is_a_400_naming_it(crew_member: CrewMember, migration: str) -> None:
    answer = sync_client(crew_member).get(
        "/api/v1/sync/watermelon/pull/", {"last_pulled_at": "", "migration": migration}
    )

    assert (answer.status_code, answer.json()["errors"][0]["field"]) == (400, "migration")


def test_a_record_the_app_brings_back_while_the_server_keeps_it_deleted_is_refused_not_settled(
    crew_member: CrewMember,
) -> None:
    """The app set deleted back to false on a record the server holds deleted. Answered as
    applied (nothing to change), the app showed it live, its clinician kept writing into it,
    and those edits waited in conflicts the app never heard of."""
    visit = encounter(crew_member, location="Lenox Ave")
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    assert pushed(teammate, "care.encounter", {}, op="delete", record_id=visit, base_version=1)["status"] == "applied"
    restored = {
        "id": str(visit),
        "server_version": 2,
        "deleted": False,
        "assessment": "Written after bringing it back.",
        "updated_at": _millis(),
        "_status": "updated",
        "_changed": "deleted,assessment",
    }
    changes = {"encounters": {"created": [], "updated": [restored], "deleted": []}}

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    body = response.json()
    assert [(result["status"], result["error"]["code"], result["error"]["field"]) for result in body["results"]] == [
        ("quarantined", "record_deleted", "changes.encounters.updated.0.deleted")
    ]
    assert body["experimentalRejectedIds"] == {"encounters": [str(visit)]}
    assert Encounter.objects.get(pk=visit).is_deleted
    kept = Mutation.objects.get(record_id=visit, status=MutationStatus.QUARANTINED)
    assert kept.payload["fields"]["assessment"] == "Written after bringing it back."


def test_a_record_the_app_made_and_marked_deleted_before_any_push_is_settled_not_sent_forever(
    crew_member: CrewMember,
) -> None:
    """WatermelonDB's markAsDeleted on a record never pushed sends only its id under
    ``deleted``. Refused, the app keeps the record and sends its id at every sync, forever;
    nothing of it ever reached the server, so the delete holds as the app meant it."""
    never_pushed = str(uuid.uuid4())
    changes = {"encounters": {"created": [], "updated": [], "deleted": [never_pushed]}}
    client = sync_client(crew_member)

    first, again = (
        client.post("/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json").json()
        for _ in range(2)
    )

    assert (first["experimentalRejectedIds"], again["experimentalRejectedIds"]) == ({}, {})
    assert [(result["id"], result["status"], result["version"]) for result in first["results"]] == [
        (never_pushed, "applied", None)
    ]
    assert not Mutation.objects.filter(status=MutationStatus.QUARANTINED).exists()
    assert not SyncedRecord.objects.filter(record_id=never_pushed).exists()


def test_an_updated_row_without_its_change_time_is_refused_as_a_value_changed_back_would_be_lost(
    crew_member: CrewMember,
) -> None:
    """A pushed row is keyed by its content: without ``updated_at``, a location changed to B,
    back to A, then to B again came back as the replay of the first B, answered settled, and
    the server kept A. Refused naming ``updated_at``, nothing of it applies; with it, each
    change is its own and the last one stands."""
    visit = encounter(crew_member, location="A")
    client = sync_client(crew_member)

    def pushed_location(location: str, **stamp: Any) -> dict[str, Any]:
        changed = "location,deleted" if stamp.get("deleted") else "location"
        row = {"id": str(visit), "location": location, "server_version": 1, "_changed": changed, **stamp}
        changes = {"encounters": {"created": [], "updated": [row], "deleted": []}}
        answer: dict[str, Any] = client.post(
            "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
        ).json()
        return answer

    unstamped = pushed_location("B")
    # Deleted too: the edit it carries is refused with the delete, not applied unchecked.
    unstamped_delete = pushed_location("B", deleted=True)
    stamped = [pushed_location(location, updated_at=_millis() + n) for n, location in enumerate("BAB")]

    [refused] = unstamped["results"]
    assert (refused["status"], refused["error"]["code"], refused["error"]["field"]) == (
        "quarantined",
        "required",
        "changes.encounters.updated.0.updated_at",
    )
    assert unstamped["experimentalRejectedIds"] == {"encounters": [str(visit)]}
    assert [(result["status"], result["error"]["code"]) for result in unstamped_delete["results"]] == [
        ("quarantined", "required")
    ] * 2
    assert [(answer["results"][0]["status"], answer["experimentalRejectedIds"]) for answer in stamped] == [
        ("applied", {})
    ] * 3
    assert Encounter.objects.get(pk=visit).location == "B"


@pytest.mark.django_db(transaction=True)  # the feed serves committed changes only
def test_a_record_changed_then_deleted_between_two_pulls_comes_deleted_with_the_change(
    crew_member: CrewMember,
) -> None:
    """The last change of a record wins in a pull, and a delete came as a bare flag: a tablet
    holding the record kept it deleted without the assessment its colleague wrote just before
    deleting it, which the server keeps."""
    visit = encounter(crew_member, assessment="Calm.")
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    client = sync_client(teammate)
    held = _pull_until_done(client, None)[-1]["timestamp"]
    assert (
        pushed(
            crew_member,
            "care.encounter",
            {"assessment": "Calm; left with his sister."},
            op="update",
            record_id=visit,
            base_version=1,
        )["status"]
        == "applied"
    )
    assert (
        pushed(crew_member, "care.encounter", {}, op="delete", record_id=visit, base_version=2)["status"] == "applied"
    )

    pulls = _pull_until_done(client, held)

    rows = [row for pull in pulls for row in pull["changes"].get("encounters", {}).get("updated", [])]
    assert [(row["id"], row["deleted"], row.get("assessment"), row["server_version"]) for row in rows] == [
        (str(visit), True, "Calm; left with his sister.", 3)
    ]


def _edited(visit: uuid.UUID, **fields: str) -> dict[str, Any]:
    """The push body's changes of one encounter the app changed, naming the ``server_version``
    it kept through its pulls (1) as the conflictResolver the README gives keeps it."""
    row = {
        "id": str(visit),
        "server_version": 1,
        **fields,
        "updated_at": _millis(),
        "_status": "updated",
        "_changed": ",".join(fields),
    }
    return {"encounters": {"created": [], "updated": [row], "deleted": []}}


def _push(client: Any, changes: dict[str, Any], last_pulled_at: int) -> dict[str, Any]:
    """The push's one result."""
    response = client.post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": last_pulled_at}, format="json"
    )
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    return dict(result)


def _push_edit(client: Any, visit: uuid.UUID, last_pulled_at: int, **fields: str) -> dict[str, Any]:
    return _push(client, _edited(visit, **fields), last_pulled_at)


def _pulled_then_moved_by_a_colleague(crew_member: CrewMember) -> tuple[uuid.UUID, Any, int]:
    """An encounter at Lenox Ave a teammate's tablet pulled whole, then the crew member moved
    to 125th St: the encounter, the tablet's client, and the timestamp of its pull."""
    visit = encounter(crew_member, location="Lenox Ave")
    client = sync_client(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    pulled: int = _pull_until_done(client, None)[-1]["timestamp"]
    colleague = pushed(
        crew_member, "care.encounter", {"location": "125th St"}, op="update", record_id=visit, base_version=1
    )
    assert colleague["status"] == "applied"
    return visit, client, pulled


@pytest.mark.django_db(transaction=True)  # the feed serves committed changes only
def test_a_colleagues_change_the_app_pulled_is_not_taken_for_one_it_never_saw_by_its_next_edit(
    crew_member: CrewMember,
) -> None:
    """The tablet had changed the assessment when its sync pulled a colleague's new location:
    WatermelonDB kept the record's older server_version, and never takes the version its push
    then made. Its next edit, of the location it showed (the colleague's), named that older
    version: the server took the colleague's location for one the tablet never saw, and
    kept a conflict for a case manager to settle for nothing."""
    visit, client, first = _pulled_then_moved_by_a_colleague(crew_member)
    pulled = _pull_until_done(client, first)[-1]["timestamp"]  # brings the colleague's location

    merged = _push_edit(client, visit, pulled, assessment="Calm; oriented.")
    after = _pull_until_done(client, pulled)[-1]["timestamp"]
    corrected = _push_edit(client, visit, after, location="125th St & Lexington Ave")

    assert (merged["status"], merged["version"]) == ("applied", 3)
    assert (corrected["status"], corrected["version"]) == ("applied", 4)
    stored = Encounter.objects.get(pk=visit)
    assert (stored.location, stored.assessment) == ("125th St & Lexington Ave", "Calm; oriented.")
    assert not Conflict.objects.filter(record_id=visit).exists()


@pytest.mark.django_db(transaction=True)
def test_a_colleagues_change_made_after_the_apps_pull_is_still_a_conflict_for_its_next_edit(
    crew_member: CrewMember,
) -> None:
    """The same, but the colleague's location came after the tablet's pull, and its push merged
    it unseen: the tablet's later edit of the location was made without it, and meets it as
    a conflict, not as a base."""
    visit, client, pulled = _pulled_then_moved_by_a_colleague(crew_member)

    merged = _push_edit(client, visit, pulled, assessment="Calm; oriented.")
    after = _pull_until_done(client, pulled)[-1]["timestamp"]
    unseen = _push_edit(client, visit, after, location="Lenox Ave & 116th St")

    assert (merged["status"], unseen["status"]) == ("applied", "conflict")
    assert Encounter.objects.get(pk=visit).location == "125th St"
    kept = Conflict.objects.get(record_id=visit)
    assert (kept.field, kept.server_value, kept.device_value) == ("location", "125th St", "Lenox Ave & 116th St")


def _pushed_then_corrected_by_a_colleague(crew_member: CrewMember) -> tuple[uuid.UUID, Any, int]:
    """A tablet's push of an encounter's location (version 2), a colleague's correction of it
    to 125th St (version 3), and the tablet's pull since: the encounter, the tablet's client
    and the timestamp of that pull."""
    visit = encounter(crew_member, location="Lenox Ave")
    client = sync_client(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    first = _pull_until_done(client, None)[-1]["timestamp"]
    assert _push_edit(client, visit, first, location="Lenox Ave & 116th St")["status"] == "applied"
    correction = pushed(
        crew_member, "care.encounter", {"location": "125th St"}, op="update", record_id=visit, base_version=2
    )
    assert correction["status"] == "applied"
    return visit, client, _pull_until_done(client, first)[-1]["timestamp"]


def _encounter_rows(pulls: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """The encounters the pulls brought: id, location, server_version."""
    return [
        (raw["id"], raw["location"], raw["server_version"])
        for body in pulls
        for raw in body["changes"].get("encounters", {}).get("updated", [])
    ]


@pytest.mark.django_db(transaction=True)
def test_a_column_the_app_kept_over_a_colleagues_later_value_is_not_taken_as_held(crew_member: CrewMember) -> None:
    """The tablet's location reached the server while its user typed an assessment, so the
    record stayed changed (location and assessment); a colleague then corrected the location.
    The tablet's next sync pulled the correction but kept its own location, a changed column,
    and pushed both: the server kept the colleague's. The tablet still shows its own location,
    and its user's next edit of it meets the correction as a conflict, not as a base."""
    visit, client, second = _pushed_then_corrected_by_a_colleague(crew_member)

    both = _push_edit(client, visit, second, location="Lenox Ave & 116th St", assessment="Calm.")
    third = _pull_until_done(client, second)[-1]["timestamp"]
    edit = _push_edit(client, visit, third, location="Lenox Ave & 117th St")

    assert (both["status"], both["data"]["location"]) == ("applied", "125th St")
    assert edit["status"] == "conflict"
    assert Encounter.objects.get(pk=visit).location == "125th St"
    kept = Conflict.objects.get(record_id=visit)
    assert (kept.field, kept.server_value, kept.device_value) == ("location", "125th St", "Lenox Ave & 117th St")


@pytest.mark.django_db(transaction=True)
def test_a_record_replayed_after_a_colleagues_change_comes_back_as_it_stands(crew_member: CrewMember) -> None:
    """The answer to the tablet's push was lost, and a colleague corrected the location. The
    tablet's next sync pulled the correction, kept its own location (still a changed column)
    and sent the same row again: a replay, answered as first, after which WatermelonDB marks
    the record synced with the location the server no longer has. Its next pull brings the
    record as it stands, so the app shows the correction before any later edit."""
    visit = encounter(crew_member, location="Lenox Ave")
    client = sync_client(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    first = _pull_until_done(client, None)[-1]["timestamp"]
    changes = _edited(visit, location="Lenox Ave & 116th St")
    lost = _push(client, changes, first)
    correction = pushed(
        crew_member, "care.encounter", {"location": "125th St"}, op="update", record_id=visit, base_version=2
    )
    second = _pull_until_done(client, first)[-1]["timestamp"]

    again = _push(client, changes, second)
    pulled = _pull_until_done(client, second)

    assert (lost["status"], correction["status"], again["status"]) == ("applied", "applied", "duplicate")
    assert _encounter_rows(pulled) == [(str(visit), "125th St", 3)]


@pytest.mark.django_db(transaction=True)
def test_a_replayed_record_whose_version_kept_a_colleagues_value_comes_back_as_it_stands(
    crew_member: CrewMember,
) -> None:
    """The push of a location and an assessment made a version that kept a colleague's later
    location, and its answer was lost; the app's pull of that version kept its own location (a
    changed column), and the row sent again is a replay, after which the app marks the record
    synced with its own location. The record has not moved since, but the app does not hold
    it: it comes back at the next pull."""
    visit, client, second = _pushed_then_corrected_by_a_colleague(crew_member)
    changes = _edited(visit, location="Lenox Ave & 116th St", assessment="Calm.")
    lost = _push(client, changes, second)
    third = _pull_until_done(client, second)[-1]["timestamp"]

    again = _push(client, changes, third)
    pulled = _pull_until_done(client, third)

    assert (lost["status"], lost["data"]["location"], again["status"]) == ("applied", "125th St", "duplicate")
    assert _encounter_rows(pulled) == [(str(visit), "125th St", 4)]


def _marked_deleted(visit: uuid.UUID) -> dict[str, Any]:
    """The push body's changes of an encounter the app deleted with ``markAsDeleted()``: its
    id under ``deleted``, nothing more."""
    return {"encounters": {"created": [], "updated": [], "deleted": [str(visit)]}}


@pytest.mark.django_db(transaction=True)  # the feed serves committed changes only
def test_a_colleagues_record_the_app_pulled_and_marked_deleted_is_deleted_not_a_conflict(
    crew_member: CrewMember,
) -> None:
    """The tablet had the colleague's encounter from its pull, unchanged since: the delete saw
    all there is of it, and a case manager was asked to settle a conflict for nothing."""
    visit = encounter(crew_member, location="Lenox Ave")
    tablet = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    client = sync_client(tablet)
    pulls = _pull_until_done(client, None)
    assert str(visit) in _encounter_ids(pulls[0])  # the app holds it
    pulled = pulls[-1]["timestamp"]

    deleted = _push(client, _marked_deleted(visit), pulled)
    again = _push(client, _marked_deleted(visit), pulled)  # its answer lost: sent again

    assert (deleted["status"], deleted["version"], deleted["data"]["deleted"]) == ("applied", 2, True)
    assert (again["status"], again["original_status"]) == ("duplicate", "applied")
    assert Encounter.objects.get(pk=visit).is_deleted
    assert not Conflict.objects.filter(record_id=visit).exists()
    # The ledger keeps the base the delete took; its key is the id as the app sent it.
    assert list(Mutation.objects.filter(device=tablet.device).values_list("base_version", "payload")) == [
        (1, {"type": "care.encounter", "id": str(visit), "op": "delete", "content": str(visit)})
    ]


@pytest.mark.django_db(transaction=True)
def test_a_record_made_before_heads_kept_their_transaction_and_marked_deleted_is_deleted(
    crew_member: CrewMember,
) -> None:
    """A record last written before heads kept the transaction that wrote them (an upgraded
    database) was made long before any pull of today: the app that holds it had it."""
    visit = encounter(crew_member, location="Lenox Ave")
    SyncedRecord.objects.filter(record_id=visit).update(written_in_transaction=None)
    tablet = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    client = sync_client(tablet)
    pulled = _pull_until_done(client, None)[-1]["timestamp"]

    deleted = _push(client, _marked_deleted(visit), pulled)

    assert (deleted["status"], deleted["data"]["deleted"]) == ("applied", True)
    assert not Conflict.objects.filter(record_id=visit).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("writer", ["colleague", "own other device"])
def test_a_pulled_edit_the_app_then_edited_over_is_seen_by_its_delete(crew_member: CrewMember, writer: str) -> None:
    """The app pulled an edit, then pushed its own edit over it (a version it holds whole):
    its delete has seen both. The same user's edit from another device is anyone else's:
    with no edit of the tablet's own over it, the delete is not known to have seen it
    (WatermelonDB passes over a pulled change of a record it holds deleted)."""
    visit = encounter(crew_member, location="Lenox Ave")
    tablet = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    client = sync_client(tablet)
    pulled = _pull_until_done(client, None)[-1]["timestamp"]
    if writer == "colleague":
        other = crew_member
    else:
        phone, token = device_with_token(tablet.user, name="Phone")
        other = CrewMember(tablet.user, tablet.unit, phone, token)
    assert pushed(other, "care.encounter", {"location": "125th St"}, op="update", record_id=visit, base_version=1)[
        "status"
    ] == ("applied")
    pulled = _pull_until_done(client, pulled)[-1]["timestamp"]
    if writer == "colleague":
        assert _push(client, _edited(visit, assessment="Calm."), pulled)["status"] == "applied"
        pulled = _pull_until_done(client, pulled)[-1]["timestamp"]

    deleted = _push(client, _marked_deleted(visit), pulled)

    assert deleted["status"] == ("applied" if writer == "colleague" else "conflict")
    assert Encounter.objects.get(pk=visit).is_deleted is (writer == "colleague")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pulled_again", [False, True], ids=["not pulled", "pulled while deleted"])
def test_a_colleagues_edit_since_the_record_was_pulled_keeps_the_apps_delete_a_conflict(
    crew_member: CrewMember, pulled_again: bool
) -> None:
    """A colleague changed the encounter after the tablet's pull. Not pulled yet, the change was
    never seen. Pulled by the sync that pushes the delete, it was not seen either: the app
    had deleted the record offline before that pull, and WatermelonDB passes over a pulled
    change of a record it holds deleted; the push's lastPulledAt is that pull's."""
    visit, client, pulled = _pulled_then_moved_by_a_colleague(crew_member)
    if pulled_again:
        later = _pull_until_done(client, pulled)
        assert str(visit) in _encounter_ids(later[0])
        pulled = later[-1]["timestamp"]

    deleted = _push(client, _marked_deleted(visit), pulled)

    assert (deleted["status"], [kept["kind"] for kept in deleted["conflicts"]]) == ("conflict", ["delete_vs_edit"])
    stored = Encounter.objects.get(pk=visit)
    assert (stored.is_deleted, stored.location) == (False, "125th St")
    assert Conflict.objects.get(record_id=visit).kind == "delete_vs_edit"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sent", ["no lastPulledAt", "first sync part way"])
def test_a_marked_delete_without_a_pull_the_server_knows_has_seen_nothing_as_before(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch, sent: str
) -> None:
    """Without a lastPulledAt, or with one part way through a first sync, the app's records are
    not known to be the server's as they stand: the delete has no base, and meets the
    colleague's create as an edit it had not seen."""
    visit = encounter(crew_member, location="Lenox Ave")
    encounter(crew_member)  # a first sync of two parts
    tablet = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    client = sync_client(tablet)
    monkeypatch.setattr(conf, "WATERMELON_FIRST_SYNC_PART", 1)
    first_part = client.get("/api/v1/sync/watermelon/pull/").json()
    assert first_part["has_more"]
    last_pulled_at = None if sent == "no lastPulledAt" else first_part["timestamp"]

    response = client.post(
        "/api/v1/sync/watermelon/push/",
        {"changes": _marked_deleted(visit), "lastPulledAt": last_pulled_at},
        format="json",
    )

    [deleted] = response.json()["results"]
    assert (deleted["status"], deleted["conflicts"][0]["kind"]) == ("conflict", "delete_vs_edit")
    assert not Encounter.objects.get(pk=visit).is_deleted
    assert Mutation.objects.get(device=tablet.device).base_version is None


@pytest.mark.django_db(transaction=True)
def test_a_marked_delete_of_a_record_made_since_the_apps_pull_is_a_conflict(crew_member: CrewMember) -> None:
    """A record the app's pull never brought (a colleague made it since) was never the app's to
    have seen: its delete takes no base."""
    tablet = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    client = sync_client(tablet)
    pulled = _pull_until_done(client, None)[-1]["timestamp"]
    visit = encounter(crew_member, location="Lenox Ave")

    deleted = _push(client, _marked_deleted(visit), pulled)

    assert (deleted["status"], deleted["conflicts"][0]["kind"]) == ("conflict", "delete_vs_edit")
    assert not Encounter.objects.get(pk=visit).is_deleted


@pytest.mark.django_db(transaction=True)
def test_a_marked_delete_after_the_apps_own_edit_of_a_colleagues_record_is_deleted(crew_member: CrewMember) -> None:
    """The tablet's own edit (sent by a push without lastPulledAt, so not counted as held) shows
    it had the colleague's encounter: the delete saw its create, and nothing but the tablet
    wrote it since."""
    visit = encounter(crew_member, location="Lenox Ave")
    tablet = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    client = sync_client(tablet)
    first = _pull_until_done(client, None)[-1]["timestamp"]
    edited = client.post(
        "/api/v1/sync/watermelon/push/",
        {"changes": _edited(visit, assessment="Calm; oriented."), "lastPulledAt": None},
        format="json",
    ).json()["results"]
    assert [result["status"] for result in edited] == ["applied"]
    pulled = _pull_until_done(client, first)[-1]["timestamp"]

    deleted = _push(client, _marked_deleted(visit), pulled)

    assert (deleted["status"], deleted["version"]) == ("applied", 3)
    assert Encounter.objects.get(pk=visit).is_deleted
    assert not Conflict.objects.filter(record_id=visit).exists()


@pytest.mark.django_db(transaction=True)
def test_a_marked_delete_of_a_record_deleted_already_or_out_of_the_apps_sight_changes_nothing(
    crew_member: CrewMember,
) -> None:
    """A colleague deleted the encounter after the tablet's pull: the delete is settled at the
    version that deleted it. Another unit's encounter is not the tablet's user's to delete."""
    deleted_since = encounter(crew_member, location="Lenox Ave")
    elsewhere = encounter(make_crew_member(crew_member.unit.program), location="Bronx")
    tablet = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    client = sync_client(tablet)
    pulled = _pull_until_done(client, None)[-1]["timestamp"]
    colleague = pushed(crew_member, "care.encounter", {}, op="delete", record_id=deleted_since, base_version=1)
    assert colleague["status"] == "applied"

    settled = _push(client, _marked_deleted(deleted_since), pulled)
    refused = client.post(
        "/api/v1/sync/watermelon/push/", {"changes": _marked_deleted(elsewhere), "lastPulledAt": pulled}, format="json"
    ).json()

    assert (settled["status"], settled["version"], settled["data"]["deleted"]) == ("applied", 2, True)
    assert refused["experimentalRejectedIds"] == {"encounters": [str(elsewhere)]}
    assert refused["results"][0]["error"]["code"] == "not_permitted"
    assert not Encounter.objects.get(pk=elsewhere).is_deleted
    assert SyncedRecord.objects.get(record_id=elsewhere).version == 1
    assert not Conflict.objects.exists()
