from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tests.conftest import CrewMember

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    cache.clear()
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {**api_settings.DEFAULT_THROTTLE_RATES, "device": "3/min"}
    )


def test_a_device_over_its_rate_gets_429_with_retry_after(three_per_minute: None, crew_member: CrewMember) -> None:
    statuses = [crew_member.client().get("/api/v1/me/").status_code for _ in range(4)]
    refused = crew_member.client().get("/api/v1/me/")

    assert statuses == [200, 200, 200, 429]
    assert refused.json()["code"] == "throttled"
    assert int(refused["Retry-After"]) > 0


def test_the_limit_is_per_device_not_per_crew(
    three_per_minute: None, crew_member: CrewMember, outsider: CrewMember
) -> None:
    for _ in range(3):
        crew_member.client().get("/api/v1/me/")

    assert crew_member.client().get("/api/v1/me/").status_code == 429
    assert outsider.client().get("/api/v1/me/").status_code == 200


def test_the_count_starts_again_in_the_next_window(
    three_per_minute: None, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.accounts.throttling import DeviceRateThrottle

    clock = [1_800_000_000.0 + 50]  # ten seconds before a minute ends
    monkeypatch.setattr(DeviceRateThrottle, "timer", lambda self: clock[0])
    statuses = [crew_member.client().get("/api/v1/me/").status_code for _ in range(4)]
    refused = crew_member.client().get("/api/v1/me/")
    clock[0] += 10

    assert statuses == [200, 200, 200, 429]
    assert int(refused["Retry-After"]) == 10
    assert crew_member.client().get("/api/v1/me/").status_code == 200


def test_sign_ins_are_counted_per_address_whatever_x_forwarded_for_the_client_sends(
    monkeypatch: pytest.MonkeyPatch, api_client: APIClient
) -> None:
    """The address is the connection's (a trusted proxy's header is already folded into it by
    the server, as the lockout and the audit trail read it): a header the client writes itself
    must not give each guess a fresh count."""
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {**api_settings.DEFAULT_THROTTLE_RATES, "login": "3/min"})
    body = {"username": "nobody", "password": "guess", "device_name": "Tablet", "platform": "android"}

    statuses = [
        api_client.post("/api/v1/auth/devices/", body, format="json", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code
        for n in range(4)
    ]

    assert statuses == [401, 401, 401, 429]
