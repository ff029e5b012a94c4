from __future__ import annotations

import uuid

import pytest
from django.test import Client

from apps.accounts.models import Device, Membership, Program, Role
from apps.sync import services as sync_services
from apps.sync.models import ChangeEntry
from apps.sync.scopes import user_scope
from tests.admin_pages import resubmitted
from tests.conftest import CrewMember, make_crew_member
from tests.sync.helpers import SimDevice, encounter_fields

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/accounts/user/",
        "/admin/accounts/device/",
        "/admin/accounts/program/",
        "/admin/teams/unit/",
        "/admin/teams/zone/",
        "/admin/audit/auditevent/",
    ],
)
def test_admin_pages_render(superuser_client: Client, crew_member: CrewMember, path: str) -> None:
    assert superuser_client.get(path).status_code == 200


def test_admin_revokes_a_lost_device_through_the_service(superuser_client: Client, crew_member: CrewMember) -> None:
    response = superuser_client.post(
        "/admin/accounts/device/", {"action": "revoke_devices", "_selected_action": [str(crew_member.device.pk)]}
    )

    assert response.status_code == 302
    device = Device.objects.get(pk=crew_member.device.pk)
    assert device.revoked_at is not None
    assert device.revoke_reason == "revoked in the admin"
    assert crew_member.client().get("/api/v1/me/").json()["code"] == "device_revoked"


def test_a_role_taken_away_in_the_admin_takes_its_records_off_the_users_devices(
    superuser_client: Client, program: Program, crew_member: CrewMember
) -> None:
    # A case manager (of another unit) sees the crew's encounter through the program's
    # case-manager scope only.
    case_manager = make_crew_member(program, role=Role.CASE_MANAGER)
    encounter_id = uuid.uuid4()
    device = SimDevice(crew_member)
    assert (
        device.push(device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew_member)))[0][
            "status"
        ]
        == "applied"
    )
    sync_services.user_scopes_refresh(user=case_manager.user)  # as at the case manager's last pull
    change_url = f"/admin/accounts/user/{case_manager.user.pk}/change/"
    data = resubmitted(superuser_client.get(change_url))
    assert data["memberships-0-role"] == [Role.CASE_MANAGER.value]

    response = superuser_client.post(change_url, {**data, "memberships-0-role": Role.CLINICIAN.value})

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    assert Membership.objects.get(user=case_manager.user).role == Role.CLINICIAN
    # Told at once, not at the device's next pull: its feed holds the removal already.
    removal = ChangeEntry.objects.get(scope=user_scope(case_manager.user.pk), record_id=encounter_id)
    assert (removal.operation, removal.reason) == ("remove", "out_of_scope")


def test_a_user_taken_off_a_program_in_the_admin_loses_its_crews_records_though_still_on_the_crew(
    superuser_client: Client, program: Program, crew_member: CrewMember
) -> None:
    """The admin deletes the membership, not the place on the crew: it grants nothing then."""
    encounter_id = uuid.uuid4()
    colleague = make_crew_member(program, unit=crew_member.unit)
    colleagues_device = SimDevice(colleague)
    colleagues_device.push(
        colleagues_device.mutation("create", "care.encounter", encounter_id, encounter_fields(colleague))
    )
    referral_id = uuid.uuid4()
    [referred] = colleagues_device.push(
        colleagues_device.mutation(
            "create",
            "care.referral",
            referral_id,
            {"encounter_id": str(encounter_id), "service_type": "crisis_stabilisation"},
        )
    )
    assert referred["status"] == "applied", referred
    sync_services.user_scopes_refresh(user=crew_member.user)  # as at the member's last pull
    change_url = f"/admin/accounts/user/{crew_member.user.pk}/change/"
    data = resubmitted(superuser_client.get(change_url))

    response = superuser_client.post(change_url, {**data, "memberships-0-DELETE": "on"})

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    assert not Membership.objects.filter(user=crew_member.user).exists()
    assert crew_member.user.unit_memberships.filter(unit=crew_member.unit).exists()
    removed = ChangeEntry.objects.filter(scope=user_scope(crew_member.user.pk), operation="remove")
    assert {entry.record_id for entry in removed} == {encounter_id, referral_id}
    assert crew_member.client().get(f"/api/v1/care/referrals/{referral_id}/").status_code == 404
    device = SimDevice(crew_member)
    [edit] = device.push(device.mutation("update", "care.encounter", encounter_id, {"location": "x"}, 1))
    assert (edit["status"], edit["error"]["code"]) == ("quarantined", "not_permitted")


def test_a_program_time_zone_that_names_no_zone_is_refused_in_the_admin(
    superuser_client: Client, program: Program
) -> None:
    """Every reminder to the person reads quiet hours on the program's clock: a typo there would
    fail each of them, so the admin refuses it as the notification preferences do."""
    change_url = f"/admin/accounts/program/{program.pk}/change/"
    data = resubmitted(superuser_client.get(change_url))

    response = superuser_client.post(change_url, {**data, "time_zone": "America/NewYork"})

    assert response.status_code == 200
    assert "time_zone" in response.context["adminform"].form.errors
    assert Program.objects.get(pk=program.pk).time_zone == "America/New_York"
    assert superuser_client.post(change_url, {**data, "time_zone": "Europe/Berlin"}).status_code == 302
    assert Program.objects.get(pk=program.pk).time_zone == "Europe/Berlin"
