"""Who may read the API's description (its OpenAPI schema and docs page), and how often.

In production only a signed-in device or staff member may (the test settings keep
production's choice); in development anyone may. Each address reads it a limited number of
times a minute, as it signs in.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.test import Client, override_settings
from rest_framework.settings import api_settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from apps.accounts.models import User
from tests.accounts.factories import UserFactory
from tests.conftest import CrewMember, sign_in_to_admin
from tests.live import PROJECT_ROOT

pytestmark = pytest.mark.django_db

SCHEMA = "/api/schema/"
DOCS = "/api/docs/"


@pytest.fixture
def staff_member() -> User:
    return UserFactory.create(is_staff=True)


@pytest.mark.parametrize("url", [SCHEMA, DOCS])
def test_someone_signed_out_is_refused_the_description(api_client: APIClient, url: str) -> None:
    response = api_client.get(url)

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_a_signed_in_device_reads_the_schema(crew_member: CrewMember) -> None:
    response = crew_member.client().get(SCHEMA, HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    assert "/api/v1/auth/devices/" in response.json()["paths"]


@pytest.mark.parametrize("url", [SCHEMA, DOCS])
def test_staff_signed_in_to_the_admin_read_the_description_in_their_browser(staff_member: User, url: str) -> None:
    browser = sign_in_to_admin(Client(), staff_member)

    assert browser.get(url).status_code == 200


def test_a_session_that_has_not_given_its_one_time_code_is_refused(client: Client, staff_member: User) -> None:
    client.force_login(staff_member)  # a password and no code

    assert client.get(SCHEMA).status_code == 401


def test_a_signed_in_user_who_is_not_staff_is_refused_by_session(client: Client, crew_member: CrewMember) -> None:
    client.force_login(crew_member.user)

    assert client.get(SCHEMA).status_code == 401


@override_settings(API_SCHEMA_PUBLIC=True)
@pytest.mark.parametrize("url", [SCHEMA, DOCS])
def test_a_deployment_that_publishes_it_serves_it_to_anyone(api_client: APIClient, url: str) -> None:
    assert api_client.get(url).status_code == 200


@pytest.fixture
def three_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {**api_settings.DEFAULT_THROTTLE_RATES, "schema": "3/min"}
    )


@override_settings(API_SCHEMA_PUBLIC=True)
def test_each_address_reads_it_a_limited_number_of_times_a_minute(
    three_per_minute: None, api_client: APIClient
) -> None:
    statuses = [api_client.get(url).status_code for url in (DOCS, f"{DOCS}?script", SCHEMA, SCHEMA)]
    refused = api_client.get(SCHEMA)

    assert statuses == [200, 200, 200, 429]
    assert refused.json()["code"] == "throttled"
    assert int(refused["Retry-After"]) > 0
    assert APIClient(REMOTE_ADDR="10.0.0.2").get(SCHEMA).status_code == 200


def test_signed_in_readers_are_limited_too(three_per_minute: None, crew_member: CrewMember) -> None:
    statuses = [crew_member.client().get(SCHEMA).status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]


@pytest.mark.parametrize(
    ("settings_module", "public"),
    [("config.settings.development", True), ("config.settings.production", False), ("config.settings.test", False)],
)
def test_only_development_publishes_the_description_unless_told(settings_module: str, public: bool) -> None:
    read = "import django; django.setup(); from django.conf import settings; print(settings.API_SCHEMA_PUBLIC)"
    env = {key: value for key, value in os.environ.items() if key != "API_SCHEMA_PUBLIC"}
    env.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
    )

    result = subprocess.run(
        [sys.executable, "-c", read], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.stdout.strip() == str(public), result.stderr
