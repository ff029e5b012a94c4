"""A device locked out (revoked, or its user deactivated) hands over what it holds before it
purges: its pushes are kept in quarantine for a supervisor, and none of them applies."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import Device, DeviceToken, Program, Role
from apps.care.models import ClinicalNote, Encounter
from apps.sync.models import Mutation, MutationStatus, UserScopeState
from apps.sync.services import lock_device
from tests.care.factories import encounter
from tests.conftest import LOCKOUTS, CrewMember, deactivate_user, make_crew_member, revoke_device
from tests.sync.helpers import PROTOCOL, SimDevice, sync_client
from tests.teams.factories import UnitFactory, UnitMemberFactory


def _offline_work(device: SimDevice, record_id: uuid.UUID) -> list[dict[str, Any]]:
    """An edit of a record the device has, and a note it wrote offline."""
    return [
        device.mutation("update", "care.encounter", record_id, {"assessment": "written offline"}, 1),
        device.mutation(
            "create", "care.note", uuid.uuid4(), {"encounter_id": str(record_id), "body": "Calm; safety plan made."}
        ),
    ]


def _push_refused(client: APIClient, device: SimDevice) -> dict[str, Any]:
    """Push one new record, expecting the whole push refused; the answer's body."""
    mutation = device.mutation("create", "care.encounter", uuid.uuid4(), {"location": "x"})
    response = client.post("/api/v1/sync/push/", {"mutations": [mutation]}, format="json")
    assert response.status_code == 401, response.content
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(("lock_out", "code"), LOCKOUTS)
def test_a_locked_out_devices_outbox_is_kept_for_a_supervisor_and_none_of_it_applies(
    program: Program, crew_member: CrewMember, lock_out: Callable[[CrewMember], None], code: str
) -> None:
    record_id = encounter(crew_member, assessment="as first written")
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    outbox = _offline_work(device, record_id)
    lock_out(crew_member)

    refused = device.client().get("/api/v1/sync/feed/")
    results = device.push(*outbox)
    replayed = device.push(*outbox)

    assert refused.status_code == 401
    assert {key: refused.json()[key] for key in ("code", "purge_local_data", "push_outbox_first")} == {
        "code": code,
        "purge_local_data": True,
        "push_outbox_first": True,
    }
    assert [(r["status"], r["error"]["code"]) for r in results] == [("quarantined", code)] * 2
    assert [(r["status"], r["original_status"]) for r in replayed] == [("duplicate", "quarantined")] * 2
    assert Encounter.objects.get(pk=record_id).assessment == "as first written"
    assert not ClinicalNote.objects.exists()
    kept = supervisor.client().get("/api/v1/sync/quarantine/").json()["results"]
    assert sorted((m["mutation_id"], m["error"]["code"], m["program"]) for m in kept) == sorted(
        (m["mutation_id"], code, str(program.pk)) for m in outbox
    )
    # The replay stored nothing more.
    assert Mutation.objects.filter(device=crew_member.device, status=MutationStatus.QUARANTINED).count() == 2


def test_a_token_rotated_away_before_the_revocation_hands_over_nothing(crew_member: CrewMember) -> None:
    old_token = crew_member.token
    rotated = crew_member.client().post("/api/v1/auth/token/rotate/")
    assert rotated.status_code == 201, rotated.content
    _use(rotated.json()["token"])
    revoke_device(crew_member)
    client = sync_client(crew_member)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {old_token}", **PROTOCOL)
    device = SimDevice(crew_member)

    refused = _push_refused(client, device)

    assert (refused["code"], refused["push_outbox_first"]) == ("device_revoked", False)
    assert not Mutation.objects.exists()


def test_a_revoked_device_hands_over_for_a_while_not_forever(crew_member: CrewMember) -> None:
    revoke_device(crew_member)
    device = SimDevice(crew_member)
    revoked_at = Device.objects.get(pk=crew_member.device.pk).revoked_at
    assert revoked_at is not None

    Device.objects.filter(pk=crew_member.device.pk).update(revoked_at=revoked_at - timedelta(days=29, hours=23))
    DeviceToken.objects.filter(device=crew_member.device).update(expires_at=timezone.now() - timedelta(days=1))
    [within] = device.push(device.mutation("create", "care.encounter", uuid.uuid4(), {"location": "x"}))
    Device.objects.filter(pk=crew_member.device.pk).update(revoked_at=revoked_at - timedelta(days=30, minutes=1))
    after = _push_refused(device.client(), device)

    assert (within["status"], within["error"]["code"]) == ("quarantined", "device_revoked")  # its token expired too
    assert (after["code"], after["push_outbox_first"]) == ("device_revoked", False)
    assert Mutation.objects.filter(device=crew_member.device).count() == 1


def test_a_deactivated_users_device_hands_over_until_its_token_expires(crew_member: CrewMember) -> None:
    deactivate_user(crew_member)
    DeviceToken.objects.filter(device=crew_member.device).update(expires_at=timezone.now() - timedelta(minutes=1))
    device = SimDevice(crew_member)

    refused = _push_refused(device.client(), device)

    assert (refused["code"], refused["push_outbox_first"]) == ("user_deactivated", False)
    assert not Mutation.objects.exists()


def test_a_deactivated_users_rotated_away_token_is_just_invalid(crew_member: CrewMember) -> None:
    old_token = crew_member.token
    rotated = crew_member.client().post("/api/v1/auth/token/rotate/")
    assert rotated.status_code == 201, rotated.content
    _use(rotated.json()["token"])
    deactivate_user(crew_member)
    client = sync_client(crew_member)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {old_token}", **PROTOCOL)

    response = client.post("/api/v1/sync/push/", {"mutations": []}, format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"
    assert "purge_local_data" not in response.json()


@pytest.mark.parametrize(("lock_out", "code"), LOCKOUTS)
def test_only_the_push_takes_a_locked_out_device(
    crew_member: CrewMember, lock_out: Callable[[CrewMember], None], code: str
) -> None:
    lock_out(crew_member)
    client = sync_client(crew_member)

    paths = [
        "/api/v1/sync/snapshot/",
        "/api/v1/sync/feed/",
        "/api/v1/sync/quarantine/",
        "/api/v1/sync/conflicts/",
        "/api/v1/sync/watermelon/pull/",
        "/api/v1/me/",
    ]

    answers = {(response.status_code, response.json()["code"]) for response in map(client.get, paths)}
    position = client.get("/api/v1/sync/push/")

    assert answers == {(401, code)}
    assert position.status_code == 200  # where its numbering continues, to hand over the rest
    assert position.json() == {"last_mutation_id": 0}


@pytest.mark.parametrize(("lock_out", "code"), LOCKOUTS)
def test_a_locked_out_watermelondb_push_is_kept_and_rejected_record_by_record(
    crew_member: CrewMember, lock_out: Callable[[CrewMember], None], code: str
) -> None:
    record_id = encounter(crew_member, assessment="as first written")
    lock_out(crew_member)
    note_id = str(uuid.uuid4())
    changes = {
        "encounters": {
            "created": [],
            "updated": [
                {
                    "id": str(record_id),
                    "assessment": "written offline",
                    "server_version": 1,
                    "updated_at": int(timezone.now().timestamp() * 1000),
                }
            ],
            "deleted": [],
        },
        "notes": {
            "created": [{"id": note_id, "encounter_id": str(record_id), "body": "Calm; safety plan made."}],
            "updated": [],
            "deleted": [],
        },
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["experimentalRejectedIds"] == {"encounters": [str(record_id)], "notes": [note_id]}
    assert {result["error"]["code"] for result in response.json()["results"]} == {code}
    assert Encounter.objects.get(pk=record_id).assessment == "as first written"
    assert not ClinicalNote.objects.exists()
    assert Mutation.objects.filter(status=MutationStatus.QUARANTINED, error_code=code).count() == 2


def _use(token: str) -> None:
    """Use a rotated token once: the token it replaced stops working then."""
    assert APIClient().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def _still_signed_in(member: CrewMember) -> None:
    pass


@pytest.mark.parametrize(
    ("lock_out", "code"), [*LOCKOUTS, pytest.param(_still_signed_in, "not_permitted", id="still-signed-in")]
)
def test_a_note_under_an_encounter_created_offline_is_filed_for_the_encounters_supervisors(
    program: Program, crew_member: CrewMember, lock_out: Callable[[CrewMember], None], code: str
) -> None:
    """A clinician who left the program (their membership deleted), their tablet locked out or
    not, may hold the only copy of a call: an encounter written offline and its notes. The
    notes name the encounter, which the server has only in quarantine; they must still be
    filed under its program, or no supervisor ever sees them (the writer works for none)."""
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    encounter_id = uuid.uuid4()
    outbox = [
        device.mutation(
            "create",
            "care.encounter",
            encounter_id,
            {"unit_id": str(crew_member.unit.pk), "started_at": timezone.now().isoformat(), "location": "x"},
        ),
        device.mutation("create", "care.note", uuid.uuid4(), {"encounter_id": str(encounter_id), "body": "Calm."}),
    ]
    crew_member.user.memberships.all().delete()
    lock_out(crew_member)

    results = device.push(*outbox)

    assert [r["status"] for r in results] == ["quarantined"] * 2
    assert results[0]["error"]["code"] == code
    kept = supervisor.client().get("/api/v1/sync/quarantine/").json()["results"]
    assert sorted((m["mutation_id"], m["program"]) for m in kept) == [
        (m["mutation_id"], str(program.pk)) for m in outbox
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("lock_out", "code"), LOCKOUTS)
def test_a_push_in_flight_when_its_device_is_locked_out_is_kept_not_applied(
    program: Program, crew_member: CrewMember, lock_out: Callable[[CrewMember], None], code: str
) -> None:
    """A push authenticated before the tablet was reported lost (or its user deactivated),
    still waiting for the device's earlier push to end when that commits, stores its
    mutations after the lockout: they must be kept for review like any the device hands
    over then, not applied (a found tablet may be in anyone's hands)."""
    record_id = encounter(crew_member, assessment="as first written")
    device = SimDevice(crew_member)
    outbox = _offline_work(device, record_id)
    holding, release = threading.Event(), threading.Event()
    answers: list[list[dict[str, Any]]] = []

    def earlier_push() -> None:  # holds the device's push lock, as a push of it running does
        try:
            with transaction.atomic():
                lock_device(crew_member.device.pk)
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    def push() -> None:
        try:
            answers.append(device.push(*outbox))
        finally:
            connection.close()

    earlier = threading.Thread(target=earlier_push)
    earlier.start()
    assert holding.wait(10)
    pushing = threading.Thread(target=push)
    pushing.start()
    pushing.join(1)  # authenticated, and waiting for the earlier push
    assert pushing.is_alive()
    lock_out(crew_member)
    release.set()
    earlier.join(10)
    pushing.join(30)

    [results] = answers
    assert [(r["status"], r["error"]["code"]) for r in results] == [("quarantined", code)] * 2
    assert Encounter.objects.get(pk=record_id).assessment == "as first written"
    assert not ClinicalNote.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/api/v1/sync/feed/", "/api/v1/sync/snapshot/", "/api/v1/sync/watermelon/pull/"])
@pytest.mark.parametrize(("lock_out", "code"), LOCKOUTS)
def test_a_read_in_flight_when_its_device_is_locked_out_serves_nothing(
    program: Program, crew_member: CrewMember, lock_out: Callable[[CrewMember], None], code: str, path: str
) -> None:
    """A pull authenticated just before the tablet was reported lost (or its user deactivated),
    and still reading when that commits, must not hand the crew's records to whoever holds it:
    it answers as the next request would, 401 and the order to purge."""
    encounter(crew_member, assessment="Calm; safety plan made.")
    assert sync_client(crew_member).get("/api/v1/sync/feed/").status_code == 200  # its scopes stored
    # The user joins another crew; the pull brings their scopes up to date, under the lock of
    # the stored ones, which another change of their access holds for now.
    UnitMemberFactory.create(unit=UnitFactory.create(program=program), user=crew_member.user)
    holding, release = threading.Event(), threading.Event()
    answers: list[Any] = []

    def other_change_of_access() -> None:
        try:
            with transaction.atomic():
                UserScopeState.objects.select_for_update().get(user=crew_member.user)
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    def pull() -> None:
        try:
            answers.append(sync_client(crew_member).get(path))
        finally:
            connection.close()

    other = threading.Thread(target=other_change_of_access)
    other.start()
    assert holding.wait(10)
    pulling = threading.Thread(target=pull)
    pulling.start()
    pulling.join(1)  # authenticated, and waiting for the lock
    assert pulling.is_alive()
    lock_out(crew_member)
    release.set()
    other.join(10)
    pulling.join(30)

    [response] = answers
    assert response.status_code == 401, response.content
    assert {key: response.json()[key] for key in ("code", "purge_local_data", "push_outbox_first")} == {
        "code": code,
        "purge_local_data": True,
        "push_outbox_first": True,
    }
