from __future__ import annotations

import pytest
from django.test import Client

from apps.accounts.models import Device
from tests.conftest import CrewMember

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
