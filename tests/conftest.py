from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hypothesis
import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from apps.accounts import services as account_services
from apps.accounts.models import Device, Program, Role, User
from apps.audit.models import AccessChannel
from apps.audit.services import Accessor
from apps.teams.models import Unit
from tests.accounts.factories import PASSWORD, MembershipFactory, ProgramFactory, UserFactory, device_with_token
from tests.emptying import empty_by_deleting
from tests.live import AsgiServer, LiveWorker, asgi_server, celery_worker, wait_until_worker_idle
from tests.teams.factories import UnitFactory, UnitMemberFactory

ARTIFACTS = Path(__file__).resolve().parent.parent / ".data" / "test-artifacts"


# On developer machines property-based tests explore new examples on every run; in CI they
# replay a fixed set, so a submission's verdict does not depend on the luck of one draw.
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")

empty_by_deleting()


@pytest.fixture(autouse=True)
def fresh_throttles() -> Iterator[None]:
    """Rate-limit counters live in Redis and would leak from one test into the next."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match="*throttle_*", count=1000):
        client.delete(key)
    client.close()
    yield


@pytest.fixture(scope="session")
def live_server_logs() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def asgi(django_db_setup: None, live_server_logs: Path) -> Iterator[AsgiServer]:
    """A real uvicorn process serving config.asgi against the test database."""
    with asgi_server(live_server_logs) as server:
        yield server


@pytest.fixture(scope="session")
def session_worker(django_db_setup: None, live_server_logs: Path) -> Iterator[LiveWorker]:
    with celery_worker(live_server_logs) as process:
        yield process


@pytest.fixture
def worker(session_worker: LiveWorker) -> Iterator[LiveWorker]:
    """A real Celery worker process consuming from the test Redis against the test database.

    The test ends once the worker has finished what it was given and what that set off (a
    sweep's alert sends notifications): its tables are emptied next, and a task still
    reading them would deadlock the emptying and leave rows to the next test.
    """
    yield session_worker
    wait_until_worker_idle(session_worker)


@dataclass
class CrewMember:
    """A field user riding in a unit, signed in on one device."""

    user: User
    unit: Unit
    device: Device
    token: str

    def client(self) -> APIClient:
        """An API client signed in as this member's device."""
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.token}")
        return client


def in_the_admin(user: User) -> Accessor:
    """Who acts in a server-side write a test makes directly (a move, a conflict resolved),
    as the workspace's actions pass it."""
    return Accessor(user=user, device_id=None, channel=AccessChannel.ADMIN)


@contextmanager
def audit_trail_refusing(action: str, record_type: str) -> Iterator[None]:
    """The audit trail refuses its rows of one action on one record type: PostgreSQL raises
    "audit trail unavailable" on their insert (a trigger). For tests that a write of health
    information is never kept without its audit row (P8); in a transactional test, as the
    trigger is committed, and taken away again however the test ends."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_audit_rows() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'audit trail unavailable'; END $$;"
            "CREATE TRIGGER refuse_audit_rows BEFORE INSERT ON audit_auditevent FOR EACH ROW"
            f" WHEN (NEW.action = '{action}' AND NEW.record_type = '{record_type}')"
            " EXECUTE FUNCTION refuse_audit_rows()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER refuse_audit_rows ON audit_auditevent; DROP FUNCTION refuse_audit_rows()")


def make_crew_member(program: Program, role: Role = Role.CLINICIAN, unit: Unit | None = None) -> CrewMember:
    user = UserFactory.create()
    MembershipFactory.create(user=user, program=program, role=role)
    unit = unit or UnitFactory.create(program=program)
    UnitMemberFactory.create(unit=unit, user=user)
    device, token = device_with_token(user)
    return CrewMember(user, unit, device, token)


def revoke_device(member: CrewMember) -> None:
    account_services.device_revoke(device=member.device, revoked_by=None, reason="lost tablet")


def deactivate_user(member: CrewMember) -> None:
    member.user.is_active = False
    member.user.save(update_fields=["is_active"])


# The two ways a device is locked out, with the code it is told: parameters for a test
# taking (lock_out, code).
LOCKOUTS = [
    pytest.param(revoke_device, "device_revoked", id="revoked"),
    pytest.param(deactivate_user, "user_deactivated", id="deactivated"),
]


@pytest.fixture
def program(db: None) -> Program:
    return ProgramFactory.create(slug="bheard-harlem", name="B-HEARD Harlem")


@pytest.fixture
def crew_member(program: Program) -> CrewMember:
    return make_crew_member(program)


@pytest.fixture
def outsider(program: Program) -> CrewMember:
    """A crew member of another unit of the same program: sees nothing of crew_member's unit."""
    return make_crew_member(program)


@pytest.fixture
def foreign_dispatcher(db: None) -> CrewMember:
    """A dispatcher of another program: sees nothing of this program at all."""
    return make_crew_member(ProgramFactory.create(slug="boston-pilot", name="Boston pilot"), role=Role.DISPATCHER)


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


def sign_in_to_admin(client: Client, user: User) -> Client:
    """Sign a staff user in through the real admin form, password and one-time code."""
    device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    code = str(TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()).zfill(device.digits)
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": user.username, "password": PASSWORD, "otp_device": device.persistent_id, "otp_token": code},
    )
    assert response.status_code == 302, response.content
    return client


@pytest.fixture
def superuser_client(client: Client, db: None) -> Client:
    return sign_in_to_admin(client, UserFactory.create(is_staff=True, is_superuser=True))
