from __future__ import annotations

import itertools
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice
from rest_framework.test import APIClient

from apps.accounts.api.views import LoginThrottle
from apps.accounts.models import Membership, Program, Role, User
from apps.audit.models import AuditEvent
from apps.care.models import Encounter, Referral
from apps.demo.nyc import precinct_stats, sample_incidents
from apps.demo.services import DEFAULT_DEMO_PASSWORD, WAITING_CALLS, admin_one_time_codes
from apps.dispatch import services
from apps.dispatch.models import Incident, IncidentStatus, UnservedReason
from apps.dispatch.services import INCIDENT_RECORD
from apps.followups import services as followups
from apps.followups.models import CaseManagerAssignment, FollowUpStep
from apps.notifications.models import AttemptStatus, Channel, NotificationAttempt
from apps.sync.models import Mutation
from apps.teams.models import ResponseModel, Unit, UnitMember, UnitStatus, Zone
from tests.dispatch.factories import seed_default_triage_policy
from tests.live import LiveWorker
from tests.sync.helpers import PROTOCOL

pytestmark = pytest.mark.django_db

DEMO_PASSWORD = "a-demo-passphrase-for-tests"
COUNTED = (Program, Zone, Unit, UnitMember, User, Membership, Incident, Encounter, Mutation, FollowUpStep)


@pytest.fixture(autouse=True)
def fresh_sign_in_budget() -> None:
    """Sign-ins are throttled per address across the whole run; give these tests a full budget."""
    throttle = LoginThrottle()
    throttle.cache.delete(throttle.cache_format % {"scope": throttle.scope, "ident": "127.0.0.1"})


@pytest.fixture(autouse=True)
def default_triage_policy(db: None) -> None:
    """The seed takes calls in through triage, whose default policy a transactional test flushes."""
    seed_default_triage_policy()


@pytest.fixture
def demo_password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DEMO_PASSWORD", DEMO_PASSWORD)
    return DEMO_PASSWORD


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in COUNTED}


def sign_in(username: str, password: str, **headers: str) -> APIClient:
    client = APIClient()
    response = client.post(
        "/api/v1/auth/devices/",
        {"username": username, "password": password, "device_name": "Demo tablet", "platform": "android"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}", **headers)
    return client


def test_seed_creates_two_programs(demo_password: str) -> None:
    seed()

    programs = {program.slug: program for program in Program.objects.all()}
    assert set(programs) == {"nyc-bheard", "boston"}
    assert programs["nyc-bheard"].name == "NYC B-HEARD (demo)"
    assert programs["nyc-bheard"].time_zone == "America/New_York"
    assert programs["boston"].name == "Boston crisis response (demo)"


def test_seed_creates_a_user_of_every_role(demo_password: str) -> None:
    seed()

    assert set(Membership.objects.values_list("role", flat=True)) == set(Role.values)
    for slug in ("nyc-bheard", "boston"):
        roles = set(Membership.objects.filter(program__slug=slug).values_list("role", flat=True))
        assert Role.program_wide_roles() <= roles, slug


def test_nyc_has_units_of_every_response_model_and_boston_its_three(demo_password: str) -> None:
    seed()

    nyc = set(Unit.objects.filter(program__slug="nyc-bheard").values_list("response_model", flat=True))
    boston = set(Unit.objects.filter(program__slug="boston").values_list("response_model", flat=True))
    assert nyc == set(ResponseModel.values)
    assert boston == {ResponseModel.CO_RESPONSE, ResponseModel.EMT_CLINICIAN, ResponseModel.COMMUNITY_RESPONSE}


def test_every_unit_has_a_crew_of_two_to_four_in_the_roles_its_model_needs(demo_password: str) -> None:
    seed()

    expected_roles = {
        ResponseModel.EMT_CLINICIAN: {Role.EMT, Role.CLINICIAN},
        ResponseModel.CO_RESPONSE: {Role.POLICE_OFFICER, Role.CLINICIAN},
        ResponseModel.COMMUNITY_RESPONSE: {Role.PEER_RESPONDER},
        ResponseModel.MOBILE_TREATMENT: {Role.CLINICIAN, Role.PARAMEDIC, Role.PEER_RESPONDER},
    }
    for unit in Unit.objects.all():
        members = list(unit.members.all())
        roles = set(Membership.objects.filter(user__in=members, program=unit.program).values_list("role", flat=True))
        assert 2 <= len(members) <= 4, unit.call_sign
        assert roles == expected_roles[ResponseModel(unit.response_model)], unit.call_sign
        on_shift = set(UnitMember.objects.filter(unit=unit).values_list("is_on_shift", flat=True))
        assert on_shift == {unit.status != UnitStatus.OUT_OF_SERVICE}, unit.call_sign


def test_nyc_zones_are_the_precincts_of_the_extract(demo_password: str) -> None:
    seed()

    zones = Zone.objects.filter(program__slug="nyc-bheard")
    assert set(zones.values_list("code", flat=True)) == {stats.zone_code for stats in precinct_stats()}
    harlem = zones.get(code="PCT-025")
    assert (harlem.name, harlem.borough) == ("25th Precinct (Manhattan)", "Manhattan")
    # No coordinates are made up.
    assert not Zone.objects.filter(latitude__isnull=False).exists()
    assert not Zone.objects.filter(longitude__isnull=False).exists()


def test_nyc_units_are_based_in_the_precincts_with_most_mental_health_calls(demo_password: str) -> None:
    seed()

    units = Unit.objects.filter(program__slug="nyc-bheard")
    busiest = [stats.zone_code for stats in precinct_stats()[: units.count()]]
    assert sorted(units.values_list("home_zone__code", flat=True)) == sorted(busiest)
    first_home = units.get(call_sign="BH-01").home_zone
    assert first_home is not None
    assert first_home.code == busiest[0]


def test_administrator_is_a_superuser_and_can_use_the_admin(demo_password: str) -> None:
    seed()

    admin = User.objects.get(username="admin")
    assert admin.is_staff and admin.is_superuser
    assert admin.roles_in(Program.objects.get(slug="nyc-bheard")) == {Role.ADMINISTRATOR}
    code = admin_one_time_codes(admin)[0]
    client = Client()
    signed_in = client.post(
        "/admin/login/?next=/admin/",
        {
            "username": "admin",
            "password": demo_password,
            "otp_device": StaticDevice.objects.get(user=admin).persistent_id,
            "otp_token": code,
        },
    )
    assert signed_in.status_code == 302
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/auth/group/").status_code == 200


def test_only_the_administrator_case_managers_and_supervisors_are_staff(demo_password: str) -> None:
    seed()

    staff = set(User.objects.filter(is_staff=True).values_list("username", flat=True))
    assert staff == {"admin", "nyc.casemanager", "nyc.supervisor", "bos.casemanager", "bos.supervisor"}
    assert set(User.objects.filter(is_superuser=True).values_list("username", flat=True)) == {"admin"}


def test_a_demo_case_manager_works_in_the_admin_on_their_program_only(demo_password: str) -> None:
    seed()
    case_manager = User.objects.get(username="nyc.casemanager")
    code = admin_one_time_codes(case_manager)[0]
    client = Client()

    signed_in = client.post(
        "/admin/login/?next=/admin/",
        {
            "username": "nyc.casemanager",
            "password": demo_password,
            "otp_device": StaticDevice.objects.get(user=case_manager).persistent_id,
            "otp_token": code,
        },
    )

    assert signed_in.status_code == 302
    assert client.get("/admin/").status_code == 200
    units = client.get("/admin/teams/unit/")
    assert units.status_code == 200
    assert "BH-01" in units.content.decode()
    boston_unit = Unit.objects.filter(program__slug="boston").first()
    assert boston_unit is not None
    assert client.get(f"/admin/teams/unit/{boston_unit.pk}/change/").status_code == 404


def test_running_twice_creates_nothing_twice(demo_password: str) -> None:
    seed()
    first = counts()

    seed()

    assert counts() == first
    assert first["Program"] == 2


def test_running_again_keeps_what_changed_while_the_demo_was_used(demo_password: str) -> None:
    seed()
    Unit.objects.filter(call_sign="BH-01").update(status=UnitStatus.ON_SCENE)

    seed()

    assert Unit.objects.get(program__slug="nyc-bheard", call_sign="BH-01").status == UnitStatus.ON_SCENE


def test_demo_crew_member_signs_in_and_sees_only_their_own_unit(demo_password: str) -> None:
    seed()

    client = sign_in("nyc.bh01.clinician", demo_password)
    units = client.get("/api/v1/units/").json()["results"]

    assert [unit["call_sign"] for unit in units] == ["BH-01"]


def test_demo_dispatcher_of_boston_sees_no_nyc_unit(demo_password: str) -> None:
    seed()

    client = sign_in("bos.dispatcher", demo_password)
    units = client.get("/api/v1/units/").json()["results"]
    zones = client.get("/api/v1/zones/").json()["results"]

    assert {unit["program"] for unit in units} == {"boston"}
    assert len(units) == Unit.objects.filter(program__slug="boston").count()
    assert {zone["program"] for zone in zones} == {"boston"}


def test_the_samples_latest_calls_wait_on_the_nyc_board_received_a_quarter_hour_apart(demo_password: str) -> None:
    before = timezone.now()
    seed()

    latest = sample_incidents()[-WAITING_CALLS:]
    client = sign_in("nyc.dispatcher", demo_password)
    listed = client.get("/api/v1/dispatch/incidents/", {"program": "nyc-bheard", "status": "open"}).json()["results"]
    waiting = Incident.objects.filter(program__slug="nyc-bheard").order_by("received_at")

    assert sorted(call["id"] for call in listed) == sorted(str(incident.pk) for incident in waiting)
    assert [(i.external_call_id, i.zone and i.zone.code) for i in waiting] == [
        (f"FDNY-{call.cad_incident_id}", call.zone_code) for call in latest
    ]
    assert all(i.status == IncidentStatus.OPEN and i.mental_health_nexus for i in waiting)
    assert all(i.recommended_response == i.chosen_response != "" for i in waiting)
    times = [i.received_at for i in waiting]
    assert [later - earlier for earlier, later in itertools.pairwise(times)] == [timedelta(minutes=15)] * 5
    assert before - timedelta(minutes=15 * WAITING_CALLS) <= times[0] and times[-1] <= timezone.now()
    assert not Incident.objects.filter(program__slug="boston").exists()
    # Taken in through dispatch's intake, so each creation is attributed to the dispatcher.
    created = AuditEvent.objects.filter(record_type=INCIDENT_RECORD, action="create")
    assert set(created.values_list("actor_username", flat=True)) == {"nyc.dispatcher"}
    assert created.count() == WAITING_CALLS


def test_running_again_leaves_a_waiting_call_as_the_dispatcher_left_it(demo_password: str) -> None:
    seed()
    dispatcher = User.objects.get(username="nyc.dispatcher")
    first = Incident.objects.filter(program__slug="nyc-bheard").earliest("received_at")
    services.incident_close(
        incident=first, actor=dispatcher, device=None, unserved_reason=UnservedReason.OTHER, note="Demo"
    )

    seed()

    assert Incident.objects.filter(program__slug="nyc-bheard").count() == WAITING_CALLS
    assert Incident.objects.get(pk=first.pk).status == IncidentStatus.CLOSED


@pytest.mark.django_db(transaction=True)
def test_a_crews_tablet_documented_care_whose_follow_ups_the_case_manager_owns(demo_password: str) -> None:
    seed()

    encounters = Encounter.objects.filter(program__slug="nyc-bheard").order_by("ended_at")
    assert [(e.unit.call_sign, e.disposition) for e in encounters] == [
        ("BH-01", "referred"),
        ("BH-01", "referred"),
        ("BH-01", "resolved_on_scene"),
    ]
    assert {e.created_by.username for e in encounters} == {"nyc.bh01.clinician"}
    referrals = Referral.objects.filter(program__slug="nyc-bheard").order_by("created_at")
    assert sorted(r.status for r in referrals) == ["open", "scheduled"]
    # Every encounter got its follow-up plan, the case manager owns its steps, and the two
    # older encounters' first contacts are overdue (past due and margin): the queue has work.
    steps = FollowUpStep.objects.filter(program__slug="nyc-bheard")
    assert steps.values("plan").distinct().count() == 3
    assert set(steps.values_list("owner__username", flat=True)) == {"nyc.casemanager"}
    now = timezone.now()
    overdue = [
        (step.plan.encounter_id, step.key)
        for step in steps.select_related("plan")
        if step.status == "pending" and step.due_at + timedelta(minutes=step.overdue_margin_minutes) < now
    ]
    assert sorted(key for _encounter, key in overdue) == ["connection_check", "first_contact", "first_contact"]
    assert {encounter for encounter, _key in overdue} == {encounters[0].pk, encounters[1].pk}
    referral = referrals.get(status="scheduled")
    assert referral.appointment_at is not None and referral.appointment_at > now
    boston = CaseManagerAssignment.objects.get(program__slug="boston", zone=None)
    assert boston.case_manager.username == "bos.casemanager"
    assert not Encounter.objects.filter(program__slug="boston").exists()
    # Pushed as a tablet pushes: every record is versioned and in the case manager's feed.
    case_manager = sign_in("nyc.casemanager", demo_password, **PROTOCOL)
    fed = case_manager.get("/api/v1/sync/feed/", {"limit": 500}).json()["entries"]
    assert {entry["id"] for entry in fed} >= {str(e.pk) for e in encounters}


@pytest.mark.django_db(transaction=True)
def test_the_demos_reminders_and_overdue_alerts_reach_an_address(demo_password: str, worker: LiveWorker) -> None:
    """The sends enqueue delivery tasks: the live worker takes them, and the test ends once it
    is idle (the ``worker`` fixture), so no delivery still reads the tables being emptied."""
    seed()

    # What beat's first follow-up sweep does: the case manager's due reminders (in-app and
    # email) and the supervisor's overdue alerts (no device yet: straight to email).
    followups.reminders_send(reminder_ids=followups.reminders_claim_due(now=timezone.now()))

    emails = NotificationAttempt.objects.filter(channel=Channel.EMAIL).select_related("notification")
    assert {(attempt.notification.kind, attempt.address) for attempt in emails} == {
        ("followup.due", "nyc.casemanager@example.org"),
        ("followup.overdue", "nyc.supervisor@example.org"),
    }
    assert not emails.filter(status=AttemptStatus.FAILED).exists()


def test_every_demo_login_has_an_email_address_and_a_fictional_phone_number(demo_password: str) -> None:
    seed()

    users = User.objects.all()
    assert all(user.email == f"{user.username}@example.org" for user in users)
    numbers = [user.phone_number for user in users.exclude(username="admin")]
    assert len(set(numbers)) == len(numbers)
    # 555-0100 to 555-0199: the numbers set aside for fiction, in each program's area code.
    assert all(re.fullmatch(r"\+1(212|617)55501\d\d", number) for number in numbers)


def test_running_again_keeps_a_changed_address_and_fills_in_a_missing_one(demo_password: str) -> None:
    seed()
    User.objects.filter(username="nyc.casemanager").update(email="casework@agency.example")
    User.objects.filter(username="nyc.supervisor").update(email="", phone_number="")
    number = User.objects.get(username="nyc.bh01.emt").phone_number

    seed()

    assert User.objects.get(username="nyc.casemanager").email == "casework@agency.example"
    supervisor = User.objects.get(username="nyc.supervisor")
    assert supervisor.email == "nyc.supervisor@example.org" and supervisor.phone_number != ""
    assert User.objects.get(username="nyc.bh01.emt").phone_number == number


@override_settings(DEBUG=True)
def test_default_password_works_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)

    output = seed()

    assert DEFAULT_DEMO_PASSWORD in output
    sign_in("nyc.dispatcher", DEFAULT_DEMO_PASSWORD)


@override_settings(DEBUG=False)
def test_default_password_is_refused_outside_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)

    with pytest.raises(CommandError, match="Set DEMO_PASSWORD"):
        seed()

    assert not Program.objects.exists()
    assert not User.objects.exists()


def test_weak_demo_password_is_refused_and_creates_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PASSWORD", "short")

    with pytest.raises(CommandError, match="too weak"):
        seed()

    assert not Program.objects.exists()
    assert not User.objects.exists()


def test_output_lists_urls_and_logins_but_not_a_configured_password(demo_password: str) -> None:
    output = seed()

    assert demo_password not in output
    for url in ("/admin/", "/api/docs/", "/healthz", "ws://127.0.0.1:8000/ws/v1/device/"):
        assert url in output
    lines = output.splitlines()
    assert any(line.split()[:4] == ["nyc.bh01.emt", "EMT", "nyc-bheard", "BH-01"] for line in lines if line.strip())


def test_urls_follow_the_configured_port(demo_password: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_PORT", "8123")

    output = seed()

    assert "http://127.0.0.1:8123/admin/" in output


def test_a_new_password_reaches_existing_users_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PASSWORD", "first-demo-passphrase")
    seed()
    monkeypatch.setenv("DEMO_PASSWORD", "second-demo-passphrase")

    seed()
    kept = User.objects.get(username="nyc.ct01.peer1").check_password("first-demo-passphrase")
    seed("--reset-passwords")

    assert kept
    assert User.objects.get(username="nyc.ct01.peer1").check_password("second-demo-passphrase")
