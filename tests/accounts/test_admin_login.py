from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.models import User
from tests.accounts.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

LOGIN_URL = "/admin/login/?next=/admin/"


@pytest.fixture
def staff() -> User:
    return UserFactory.create(is_staff=True, is_superuser=True)


def current_code(device: TOTPDevice) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return str(totp.token()).zfill(device.digits)


def test_admin_refuses_a_password_without_a_one_time_code(client: Client, staff: User) -> None:
    TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)

    response = client.post(LOGIN_URL, {"username": staff.username, "password": PASSWORD})

    assert response.status_code == 200  # the form again, with an error
    assert client.get("/admin/").status_code == 302


def test_admin_admits_staff_with_password_and_code(client: Client, staff: User) -> None:
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)

    response = client.post(
        LOGIN_URL,
        {
            "username": staff.username,
            "password": PASSWORD,
            "otp_device": device.persistent_id,
            "otp_token": current_code(device),
        },
    )

    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_admin_session_ends_after_idle_timeout(client: Client, staff: User) -> None:
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    client.post(
        LOGIN_URL,
        {
            "username": staff.username,
            "password": PASSWORD,
            "otp_device": device.persistent_id,
            "otp_token": current_code(device),
        },
    )

    assert client.get("/admin/").status_code == 200
    session_key = client.session.session_key
    # Every request pushes the expiry out by the idle timeout; nothing for 15 minutes ends it.
    session = Session.objects.get(session_key=session_key)
    assert (session.expire_date - timezone.now()).total_seconds() == pytest.approx(15 * 60, abs=5)
    Session.objects.filter(session_key=session_key).update(expire_date=timezone.now() - timedelta(seconds=1))

    assert client.get("/admin/").status_code == 302


def test_admin_pages_carry_a_content_security_policy(client: Client) -> None:
    response = client.get(LOGIN_URL)

    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy


def test_a_failed_admin_sign_in_keeps_no_one_time_code_in_the_lockout_records(client: Client, staff: User) -> None:
    """The lockout keeps the form of each failed sign-in: a code typed with a wrong password
    (a printed backup code is good until used) must not be readable there afterwards."""
    from axes.models import AccessAttempt
    from django_otp.plugins.otp_static.models import StaticDevice, StaticToken

    backup = StaticDevice.objects.create(user=staff, name="backup", confirmed=True)
    StaticToken.objects.create(device=backup, token="k3y9x2p7")

    client.post(
        LOGIN_URL,
        {
            "username": staff.username,
            "password": "mistyped",
            "otp_device": backup.persistent_id,
            "otp_token": "k3y9x2p7",
        },
    )

    attempt = AccessAttempt.objects.get(username=staff.username)
    assert "k3y9x2p7" not in attempt.post_data
    assert "mistyped" not in attempt.post_data
