from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.test import Client, override_settings
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.models import User
from apps.accounts.sessions import SIGNED_IN_AT
from tests.accounts.factories import PASSWORD, UserFactory
from tests.conftest import sign_in_to_admin

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


def test_a_session_within_its_absolute_lifetime_works(client: Client, staff: User) -> None:
    sign_in_to_admin(client, staff)

    assert client.get("/admin/").status_code == 200
    session = Session.objects.get(session_key=client.session.session_key)
    assert (session.expire_date - timezone.now()).total_seconds() == pytest.approx(15 * 60, abs=5)


LIFETIME = 4  # seconds: long enough for a sign-in and a page, short enough to wait out


@override_settings(SESSION_ABSOLUTE_TIMEOUT_SECONDS=LIFETIME)
def test_a_session_past_its_absolute_lifetime_is_signed_out_however_active(client: Client, staff: User) -> None:
    started = time.monotonic()
    sign_in_to_admin(client, staff)
    old_key = client.session.session_key
    assert client.get("/admin/").status_code == 200
    assert time.monotonic() - started < LIFETIME, "too slow to see the session within its lifetime"
    # Active the whole time: a page every half second, far inside the idle timeout.
    while time.monotonic() - started < LIFETIME + 0.5:
        time.sleep(0.5)
        last = client.get("/admin/")

    assert last.status_code == 302
    assert last["Location"].startswith("/admin/login/")
    assert not Session.objects.filter(session_key=old_key).exists()
    # Signing in again, with a one-time code again, gives a new session.
    assert client.get("/admin/").status_code == 302
    sign_in_to_admin(client, staff)
    assert client.get("/admin/").status_code == 200


def test_a_session_that_does_not_say_when_it_signed_in_is_signed_out(client: Client, staff: User) -> None:
    """A session signed in before the lifetime was kept: its age is unknown."""
    sign_in_to_admin(client, staff)
    session = client.session
    del session[SIGNED_IN_AT]
    session.save()

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
