from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts import services
from apps.accounts.models import Device, DeviceToken
from apps.accounts.selectors import TokenRejected
from tests.accounts.factories import PASSWORD, UserFactory
from tests.conftest import CrewMember

pytestmark = pytest.mark.django_db

REGISTER_URL = "/api/v1/auth/devices/"


def register_body(username: str, **overrides: object) -> dict[str, object]:
    return {
        "username": username,
        "password": PASSWORD,
        "device_name": "Unit 7 tablet",
        "platform": "android",
        **overrides,
    }


def test_sign_in_registers_a_device_and_its_token_works(api_client: APIClient) -> None:
    user = UserFactory.create()

    response = api_client.post(REGISTER_URL, register_body(user.username), format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["device"]["name"] == "Unit 7 tablet"
    assert body["token"].startswith("tdm_")
    me = api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert me.status_code == 200
    assert me.json()["username"] == user.username


def test_token_is_stored_only_as_a_hash(api_client: APIClient) -> None:
    user = UserFactory.create()

    raw_token = api_client.post(REGISTER_URL, register_body(user.username), format="json").json()["token"]

    stored = DeviceToken.objects.get(device__user=user)
    assert raw_token not in (stored.key_hash, stored.key_prefix)
    assert len(stored.key_hash) == 64


def test_wrong_password_is_refused_and_registers_nothing(api_client: APIClient) -> None:
    user = UserFactory.create()

    response = api_client.post(REGISTER_URL, register_body(user.username, password="nope"), format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
    assert not Device.objects.exists()


def test_malformed_json_gets_400_in_the_error_shape(api_client: APIClient) -> None:
    response = api_client.generic("POST", REGISTER_URL, '{"username": "a",', content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "status": 400,
        "code": "parse_error",
        "detail": response.json()["detail"],
        "errors": [],
    }
    assert "JSON" in response.json()["detail"]


def test_wrong_type_names_the_field(api_client: APIClient) -> None:
    user = UserFactory.create()

    response = api_client.post(REGISTER_URL, register_body(user.username, platform="toaster"), format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_input"
    assert body["errors"] == [
        {"field": "platform", "code": "invalid_choice", "detail": '"toaster" is not a valid choice.'}
    ]


def test_missing_fields_are_each_named(api_client: APIClient) -> None:
    response = api_client.post(REGISTER_URL, {}, format="json")

    assert response.status_code == 400
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"username", "password", "device_name", "platform"}


def test_unknown_field_is_refused_not_ignored(api_client: APIClient) -> None:
    user = UserFactory.create()

    response = api_client.post(REGISTER_URL, register_body(user.username, devce_name="typo"), format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "devce_name", "code": "unknown_field", "detail": "Unknown field."}]
    assert not Device.objects.exists()


def test_a_json_array_instead_of_an_object_is_refused(api_client: APIClient) -> None:
    response = api_client.post(REGISTER_URL, [1, 2], format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"


def test_request_without_token_is_401(api_client: APIClient) -> None:
    response = api_client.get("/api/v1/me/")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_unknown_token_is_401(api_client: APIClient) -> None:
    response = api_client.get("/api/v1/me/", HTTP_AUTHORIZATION="Bearer tdm_forged")

    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"


def test_malformed_authorization_header_is_401(api_client: APIClient) -> None:
    response = api_client.get("/api/v1/me/", HTTP_AUTHORIZATION="Bearer two parts")

    assert response.status_code == 401
    assert response.json()["code"] == "token_malformed"


def test_expired_token_is_401_and_says_so(api_client: APIClient, crew_member: CrewMember) -> None:
    DeviceToken.objects.filter(device=crew_member.device).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = crew_member.client().get("/api/v1/me/")

    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"


def test_revoked_device_is_401_at_once(api_client: APIClient, crew_member: CrewMember) -> None:
    assert crew_member.client().get("/api/v1/me/").status_code == 200

    revoke = crew_member.client().post(
        f"/api/v1/devices/{crew_member.device.pk}/revoke/", {"reason": "lost"}, format="json"
    )

    assert revoke.status_code == 200
    assert revoke.json()["revoked_at"] is not None
    response = crew_member.client().get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "device_revoked"


def test_revoking_one_device_leaves_the_others_working(api_client: APIClient, crew_member: CrewMember) -> None:
    from tests.accounts.factories import device_with_token

    phone, phone_token = device_with_token(crew_member.user, name="Phone")

    crew_member.client().post(f"/api/v1/devices/{phone.pk}/revoke/", {}, format="json")

    assert api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {phone_token}").status_code == 401
    assert crew_member.client().get("/api/v1/me/").status_code == 200


def test_rotation_replaces_the_token_once_the_new_one_is_used(api_client: APIClient, crew_member: CrewMember) -> None:
    response = crew_member.client().post("/api/v1/auth/token/rotate/")
    new_token = response.json()["token"]

    assert response.status_code == 201
    assert crew_member.client().get("/api/v1/me/").status_code == 200  # the answer may not have arrived
    assert api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {new_token}").status_code == 200
    assert crew_member.client().get("/api/v1/me/").status_code == 401
    assert api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {new_token}").status_code == 200


def test_a_device_that_lost_the_rotations_answer_rotates_again_and_the_lost_token_stops_working(
    api_client: APIClient, crew_member: CrewMember
) -> None:
    lost = crew_member.client().post("/api/v1/auth/token/rotate/").json()["token"]
    again = crew_member.client().post("/api/v1/auth/token/rotate/")
    received = again.json()["token"]

    assert again.status_code == 201
    assert api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {lost}").status_code == 401
    assert api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {received}").status_code == 200
    assert crew_member.client().get("/api/v1/me/").status_code == 401


def test_a_rotated_token_whose_successor_is_never_used_stops_after_the_grace_period(
    api_client: APIClient, crew_member: CrewMember
) -> None:
    first = crew_member.client().post("/api/v1/auth/token/rotate/").json()["token"]
    rotated_at = DeviceToken.objects.get(device=crew_member.device, replaces=None).replaced_at
    assert rotated_at is not None
    DeviceToken.objects.filter(replaced_at=rotated_at).update(replaced_at=rotated_at - timedelta(minutes=59))
    again = crew_member.client().post("/api/v1/auth/token/rotate/")  # within the grace: allowed,
    assert again.status_code == 201  # and it does not start the grace anew
    DeviceToken.objects.filter(replaced_at__isnull=False).update(replaced_at=rotated_at - timedelta(minutes=61))

    assert crew_member.client().get("/api/v1/me/").status_code == 401
    assert api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {first}").status_code == 401
    assert api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {again.json()['token']}").status_code == 200


def test_a_rotation_that_arrives_after_the_successor_was_used_mints_nothing(crew_member: CrewMember) -> None:
    old = crew_member.device.tokens.get()
    _new, new_raw = services.device_token_rotate(token=old)
    assert APIClient().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {new_raw}").status_code == 200

    # A rotation authenticated with the old token just before the new one's first use retired it.
    with pytest.raises(TokenRejected):
        services.device_token_rotate(token=old)
    assert DeviceToken.objects.filter(device=crew_member.device, revoked_at=None).count() == 1


def test_a_rotation_that_arrives_after_its_device_was_revoked_mints_nothing_and_says_to_purge(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revocation commits between the rotation's authentication and its lock: the device
    is told it was revoked (hand over the outbox, then wipe), not that its token is unknown,
    which it would take for a token to sign in again over, keeping what it holds."""
    rotate = services.device_token_rotate

    def revoked_on_the_way(*, token: DeviceToken) -> tuple[DeviceToken, str]:
        services.device_revoke(device=crew_member.device, revoked_by=None, reason="lost")
        return rotate(token=token)

    monkeypatch.setattr(services, "device_token_rotate", revoked_on_the_way)

    response = crew_member.client().post("/api/v1/auth/token/rotate/")

    assert response.status_code == 401
    body = response.json()
    assert (body["code"], body["purge_local_data"], body["push_outbox_first"]) == ("device_revoked", True, True)
    assert DeviceToken.objects.filter(device=crew_member.device).count() == 1


def test_outsider_cannot_see_or_revoke_another_users_device(
    api_client: APIClient, crew_member: CrewMember, outsider: CrewMember
) -> None:
    listed = outsider.client().get("/api/v1/devices/")
    response = outsider.client().post(f"/api/v1/devices/{crew_member.device.pk}/revoke/", {}, format="json")

    assert [device["id"] for device in listed.json()] == [str(outsider.device.pk)]
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    crew_member.device.refresh_from_db()
    assert crew_member.device.revoked_at is None


def test_revoke_with_wrong_type_names_the_field(api_client: APIClient, crew_member: CrewMember) -> None:
    response = crew_member.client().post(
        f"/api/v1/devices/{crew_member.device.pk}/revoke/", {"reason": ["x"]}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "reason"
    crew_member.device.refresh_from_db()
    assert crew_member.device.revoked_at is None


def test_rotation_refuses_a_body_it_does_not_understand(crew_member: CrewMember) -> None:
    response = crew_member.client().post("/api/v1/auth/token/rotate/", {"keep_old": True}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0] == {"field": "keep_old", "code": "unknown_field", "detail": "Unknown field."}
    assert crew_member.client().get("/api/v1/me/").status_code == 200


@pytest.mark.parametrize("body", [[], [1], False, 0, ""], ids=repr)
def test_rotation_refuses_a_body_that_is_not_an_object(crew_member: CrewMember, body: object) -> None:
    response = crew_member.client().post("/api/v1/auth/token/rotate/", body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"
    assert DeviceToken.objects.filter(device=crew_member.device).count() == 1


def test_repeated_failed_sign_ins_lock_the_account(api_client: APIClient) -> None:
    user = UserFactory.create()
    for _ in range(5):
        api_client.post(REGISTER_URL, register_body(user.username, password="wrong"), format="json")

    locked = api_client.post(REGISTER_URL, register_body(user.username), format="json")

    assert locked.status_code == 429
    assert locked.json()["code"] == "account_locked"
    assert int(locked["Retry-After"]) > 0
    assert not Device.objects.filter(user=user).exists()


def test_revoked_device_is_told_to_purge_its_local_data(crew_member: CrewMember) -> None:
    from apps.accounts import services

    services.device_revoke(device=crew_member.device, revoked_by=None, reason="lost")

    response = crew_member.client().get("/api/v1/me/")

    assert response.status_code == 401
    assert response.json()["code"] == "device_revoked"
    assert response.json()["purge_local_data"] is True
    assert response.json()["push_outbox_first"] is True


UNREACHABLE_CHANNEL_LAYER = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:1/0", "socket_connect_timeout": 1}]},
    }
}


@pytest.mark.django_db(transaction=True)
def test_a_revocation_and_a_rotation_committed_while_the_channel_layer_is_down_are_answered_as_applied(
    settings: Any, api_client: APIClient, crew_member: CrewMember
) -> None:
    """Telling open sockets only hurries them (a socket finds its token refused at its next
    read, the device at its next request): a channel layer out of reach must not answer a
    committed rotation or revocation with a 500, which the device retries, nor fail the first
    request with a rotated token, which completes the rotation."""
    from tests.accounts.factories import device_with_token

    phone, _phone_token = device_with_token(crew_member.user, name="Phone")
    settings.CHANNEL_LAYERS = UNREACHABLE_CHANNEL_LAYER
    client = crew_member.client()
    client.raise_request_exception = api_client.raise_request_exception = False

    rotated = client.post("/api/v1/auth/token/rotate/")
    assert rotated.status_code == 201, rotated.content
    first_use = api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {rotated.json()['token']}")
    assert first_use.status_code == 200, first_use.content
    assert client.get("/api/v1/me/").status_code == 401  # the rotation completed
    revoked = api_client.post(
        f"/api/v1/devices/{phone.pk}/revoke/",
        {"reason": "lost"},
        format="json",
        HTTP_AUTHORIZATION=f"Bearer {rotated.json()['token']}",
    )

    assert revoked.status_code == 200, revoked.content
    assert Device.objects.get(pk=phone.pk).revoked_at is not None


def test_me_lists_no_unit_of_a_program_the_user_was_taken_off(crew_member: CrewMember) -> None:
    """A place on a crew left behind when the membership was deleted grants nothing (every
    crew rule says so): /me/ must not tell the device it still crews that unit."""
    from apps.accounts.models import Membership

    assert crew_member.client().get("/api/v1/me/").json()["units"] == [str(crew_member.unit.pk)]
    Membership.objects.filter(user=crew_member.user).delete()

    me = crew_member.client().get("/api/v1/me/").json()

    assert (me["memberships"], me["units"]) == ([], [])
