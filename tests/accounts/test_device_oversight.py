"""A supervisor sees the devices of the program's people and revokes a lost one."""

from __future__ import annotations

import time

import pytest

from apps.accounts.models import Device, DeviceToken, Program, Role
from tests.conftest import CrewMember, make_crew_member
from tests.live import AsgiServer
from tests.realtime.client import assert_locked_out, authenticated_socket


@pytest.fixture
def supervisor(program: Program) -> CrewMember:
    return make_crew_member(program, role=Role.SUPERVISOR)


def devices_url(program: Program) -> str:
    return f"/api/v1/programs/{program.slug}/devices/"


def revoke_url(program: Program, device: Device) -> str:
    return f"/api/v1/programs/{program.slug}/devices/{device.pk}/revoke/"


def revocation_state() -> list[tuple[object, ...]]:
    return sorted(Device.objects.values_list("pk", "revoked_at", "revoke_reason")) + sorted(
        DeviceToken.objects.values_list("pk", "revoked_at")
    )


@pytest.mark.django_db
def test_a_supervisor_lists_the_devices_of_the_programs_people_only(
    program: Program, supervisor: CrewMember, crew_member: CrewMember, foreign_dispatcher: CrewMember
) -> None:
    response = supervisor.client().get(devices_url(program))

    assert response.status_code == 200
    listed = {(device["id"], device["user"]["username"]) for device in response.json()["results"]}
    assert listed == {
        (str(crew_member.device.pk), crew_member.user.username),
        (str(supervisor.device.pk), supervisor.user.username),
    }


@pytest.mark.django_db
def test_an_administrator_may_oversee_devices_too(program: Program, crew_member: CrewMember) -> None:
    administrator = make_crew_member(program, role=Role.ADMINISTRATOR)
    response = administrator.client().post(revoke_url(program, crew_member.device), {"reason": "left"}, format="json")
    assert response.status_code == 200
    assert response.json()["revoke_reason"] == "left"


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
def test_a_revoked_device_loses_its_token_and_socket_at_once_and_is_told_to_purge(
    asgi: AsgiServer, program: Program, supervisor: CrewMember, crew_member: CrewMember
) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        started = time.monotonic()
        response = supervisor.client().post(
            revoke_url(program, crew_member.device), {"reason": "reported lost"}, format="json"
        )

        assert response.status_code == 200
        assert_locked_out(socket, "device.revoked", since=started)

    # On its next contact over HTTP the device is refused and told to wipe what it holds.
    refused = crew_member.client().get("/api/v1/me/")
    assert refused.status_code == 401
    assert (refused.json()["code"], refused.json()["purge_local_data"]) == ("device_revoked", True)
    device = Device.objects.get(pk=crew_member.device.pk)
    assert (device.revoked_by_id, device.revoke_reason) == (supervisor.user.pk, "reported lost")


@pytest.mark.django_db
def test_someone_from_another_program_gets_404_and_changes_nothing(
    program: Program, crew_member: CrewMember, foreign_dispatcher: CrewMember
) -> None:
    foreign_supervisor = make_crew_member(foreign_dispatcher.user.memberships.get().program, role=Role.SUPERVISOR)
    before = revocation_state()

    for outsider in (foreign_supervisor, foreign_dispatcher):
        listed = outsider.client().get(devices_url(program))
        revoked = outsider.client().post(revoke_url(program, crew_member.device), {}, format="json")
        assert (listed.status_code, revoked.status_code) == (404, 404)

    # Nor may a foreign supervisor reach the device through their own program's address.
    foreign_program = foreign_supervisor.user.memberships.get().program
    sideways = foreign_supervisor.client().post(revoke_url(foreign_program, crew_member.device), {}, format="json")
    assert sideways.status_code == 404
    assert revocation_state() == before


@pytest.mark.django_db
def test_a_crew_member_of_the_program_may_not_oversee_devices(
    program: Program, crew_member: CrewMember, outsider: CrewMember
) -> None:
    before = revocation_state()

    listed = outsider.client().get(devices_url(program))
    revoked = outsider.client().post(revoke_url(program, crew_member.device), {}, format="json")

    assert (listed.status_code, revoked.status_code) == (403, 403)
    assert revocation_state() == before


@pytest.mark.django_db
def test_bad_input_is_refused_naming_the_field(
    program: Program, supervisor: CrewMember, crew_member: CrewMember
) -> None:
    client = supervisor.client()
    too_long = client.post(revoke_url(program, crew_member.device), {"reason": "x" * 201}, format="json")
    unknown = client.post(revoke_url(program, crew_member.device), {"wipe": True}, format="json")

    assert (too_long.status_code, unknown.status_code) == (400, 400)
    assert [error["field"] for error in too_long.json()["errors"]] == ["reason"]
    assert [(error["field"], error["code"]) for error in unknown.json()["errors"]] == [("wipe", "unknown_field")]
    assert Device.objects.get(pk=crew_member.device.pk).revoked_at is None
