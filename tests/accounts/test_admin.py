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
