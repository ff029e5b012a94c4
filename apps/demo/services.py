"""Writes that build the demo: two programs with zones, units, crews and the people in them,
real calls waiting on the NYC dispatcher's board, and the care records a crew's tablet
documented (``apps.demo.care``), whose follow-ups the program's case manager owns.

Every row is found by its natural key (program slug, zone code, call sign, username,
membership role, a call's CAD id, the demo tablet), so seeding again creates nothing twice.
What changes while the demo is used (a unit's status, who is on shift, a password, a call,
a follow-up) is set only when the row is created, so re-running the seed on start-up does
not undo what someone just showed.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken

from apps.accounts.models import Membership, Program, Role, User
from apps.audit.models import AccessChannel
from apps.audit.services import Accessor
from apps.demo.care import care_stories_push
from apps.demo.nyc import PrecinctStats, SampleIncident, precinct_stats, sample_incidents
from apps.dispatch.models import Incident, IncidentSource
from apps.dispatch.services import incident_intake
from apps.followups.models import CaseManagerAssignment
from apps.teams.models import ResponseModel, Unit, UnitMember, UnitStatus, Zone

# Demo data only: a published password for made-up accounts, never for real ones.
# Outside DEBUG the seed_demo command refuses it and asks for DEMO_PASSWORD instead.
DEFAULT_DEMO_PASSWORD = "tandem-demo-2024!"  # noqa: S105
ADMIN_USERNAME = "admin"

# Every demo login has an address to reach, so the demo's reminders and alerts go out (to
# the notification outbox, without a provider account): mail at a domain reserved for
# examples, and a number from 555-0100 to 555-0199 of the program's area code, the lines
# set aside for fiction. No real person gets either.
DEMO_EMAIL_DOMAIN = "example.org"
FICTIONAL_LINES = range(100, 200)


@dataclass(frozen=True)
class ZonePlan:
    code: str
    name: str
    borough: str


@dataclass(frozen=True)
class UnitPlan:
    call_sign: str
    response_model: ResponseModel
    status: UnitStatus
    home_zone_code: str


@dataclass(frozen=True)
class ProgramPlan:
    slug: str
    name: str
    time_zone: str
    username_prefix: str
    zones: Sequence[ZonePlan]
    units: Sequence[UnitPlan]
    crews: Mapping[str, Sequence[Role]]
    # Real calls of the sample, waiting on the dispatcher's board when the demo starts.
    waiting_calls: Sequence[SampleIncident] = ()
    # The unit whose clinician's tablet documented the demo's care records, if any.
    care_stories_unit: str | None = None
    # Of the demo logins' (fictional) phone numbers.
    area_code: str = "212"


@dataclass(frozen=True)
class DemoLogin:
    username: str
    role: str
    program: str
    unit: str


# Who rides in each kind of unit, after the public descriptions of the NYC and Boston
# programs (DESIGN.md section 1).
NYC_CREWS: Mapping[str, Sequence[Role]] = {
    ResponseModel.EMT_CLINICIAN: (Role.EMT, Role.CLINICIAN),
    # NYC co-response teams pair two police officers with one clinician.
    ResponseModel.CO_RESPONSE: (Role.POLICE_OFFICER, Role.POLICE_OFFICER, Role.CLINICIAN),
    ResponseModel.COMMUNITY_RESPONSE: (Role.PEER_RESPONDER, Role.PEER_RESPONDER),
    ResponseModel.MOBILE_TREATMENT: (Role.CLINICIAN, Role.PARAMEDIC, Role.PEER_RESPONDER),
}
BOSTON_CREWS: Mapping[str, Sequence[Role]] = {
    # Boston's co-response is one officer and one clinician in a dedicated car.
    ResponseModel.CO_RESPONSE: (Role.POLICE_OFFICER, Role.CLINICIAN),
    ResponseModel.EMT_CLINICIAN: (Role.EMT, Role.CLINICIAN),
    ResponseModel.COMMUNITY_RESPONSE: (Role.PEER_RESPONDER, Role.PEER_RESPONDER, Role.PEER_RESPONDER),
}

# NYC units in the order they get home zones: the busiest precincts come first, so the
# first unit of every response model lands where most EDP calls are.
NYC_UNITS: Sequence[tuple[str, ResponseModel, UnitStatus]] = (
    ("BH-01", ResponseModel.EMT_CLINICIAN, UnitStatus.AVAILABLE),
    ("CR-01", ResponseModel.CO_RESPONSE, UnitStatus.AVAILABLE),
    ("CT-01", ResponseModel.COMMUNITY_RESPONSE, UnitStatus.AVAILABLE),
    ("MT-01", ResponseModel.MOBILE_TREATMENT, UnitStatus.AVAILABLE),
    ("BH-02", ResponseModel.EMT_CLINICIAN, UnitStatus.AVAILABLE),
    ("CR-02", ResponseModel.CO_RESPONSE, UnitStatus.OUT_OF_SERVICE),
    ("CT-02", ResponseModel.COMMUNITY_RESPONSE, UnitStatus.AVAILABLE),
    ("MT-02", ResponseModel.MOBILE_TREATMENT, UnitStatus.OUT_OF_SERVICE),
    ("BH-03", ResponseModel.EMT_CLINICIAN, UnitStatus.AVAILABLE),
    ("BH-04", ResponseModel.EMT_CLINICIAN, UnitStatus.OUT_OF_SERVICE),
)

# The sample's latest calls wait on the NYC board, one received every quarter of an hour
# up to the seed's first run: a dispatcher has calls to offer and crews get offers.
WAITING_CALLS = 6
WAITING_CALLS_APART = timedelta(minutes=15)

# Boston Police districts (their real names; there is no Boston call data in the repo).
BOSTON_ZONES: Sequence[ZonePlan] = (
    ZonePlan("BPD-A1", "A-1 Downtown, Beacon Hill, Chinatown", "Boston"),
    ZonePlan("BPD-A7", "A-7 East Boston", "Boston"),
    ZonePlan("BPD-A15", "A-15 Charlestown", "Boston"),
    ZonePlan("BPD-B2", "B-2 Roxbury", "Boston"),
    ZonePlan("BPD-B3", "B-3 Mattapan", "Boston"),
    ZonePlan("BPD-C6", "C-6 South Boston", "Boston"),
    ZonePlan("BPD-C11", "C-11 Dorchester", "Boston"),
    ZonePlan("BPD-D4", "D-4 South End, Back Bay, Fenway", "Boston"),
    ZonePlan("BPD-D14", "D-14 Allston, Brighton", "Boston"),
    ZonePlan("BPD-E5", "E-5 West Roxbury", "Boston"),
    ZonePlan("BPD-E13", "E-13 Jamaica Plain", "Boston"),
    ZonePlan("BPD-E18", "E-18 Hyde Park", "Boston"),
)
# Placed after the public reporting on the 2021 pilot: most mental-health calls came from
# Dorchester, Roxbury and the South End; co-response started downtown, in Charlestown and
# in Roxbury. The pilot had three response models, so no mobile treatment unit here.
BOSTON_UNITS: Sequence[UnitPlan] = (
    UnitPlan("CR-1", ResponseModel.CO_RESPONSE, UnitStatus.AVAILABLE, "BPD-A1"),
    UnitPlan("CR-2", ResponseModel.CO_RESPONSE, UnitStatus.AVAILABLE, "BPD-B2"),
    UnitPlan("CR-3", ResponseModel.CO_RESPONSE, UnitStatus.OUT_OF_SERVICE, "BPD-A15"),
    UnitPlan("EC-1", ResponseModel.EMT_CLINICIAN, UnitStatus.AVAILABLE, "BPD-C11"),
    UnitPlan("EC-2", ResponseModel.EMT_CLINICIAN, UnitStatus.AVAILABLE, "BPD-D4"),
    UnitPlan("CT-1", ResponseModel.COMMUNITY_RESPONSE, UnitStatus.AVAILABLE, "BPD-C11"),
)

PROGRAM_STAFF_ROLES = (Role.DISPATCHER, Role.SUPERVISOR, Role.CASE_MANAGER)
ADMIN_WORKSPACE_ROLES = frozenset({Role.SUPERVISOR, Role.CASE_MANAGER})
ROLE_SHORT_NAMES = {
    Role.EMT: "emt",
    Role.PARAMEDIC: "paramedic",
    Role.CLINICIAN: "clinician",
    Role.PEER_RESPONDER: "peer",
    Role.POLICE_OFFICER: "officer",
    Role.DISPATCHER: "dispatcher",
    Role.SUPERVISOR: "supervisor",
    Role.CASE_MANAGER: "casemanager",
    Role.ADMINISTRATOR: "admin",
}
# Made-up names, picked from the username so a user keeps theirs between runs.
FIRST_NAMES = (
    "Maria", "James", "Aisha", "Wei", "Carlos", "Priya", "Kevin", "Fatima", "Daniel", "Grace",
    "Luis", "Keisha", "Tomasz", "Mei", "Andre", "Sofia", "Omar", "Rachel", "Diego", "Nadia",
)  # fmt: skip
LAST_NAMES = (
    "Rivera", "Johnson", "Khan", "Chen", "Lopez", "Patel", "O'Brien", "Okafor", "Cohen", "Nguyen",
    "Williams", "Santos", "Kowalski", "Haddad", "Brown", "Murphy", "Diaz", "Kim", "Jackson", "Reyes",
)  # fmt: skip


def apportion(weights: Sequence[int], seats: int) -> list[int]:
    """Indexes of `weights`, one per seat, in the order seats are won (D'Hondt).

    Each seat goes to the entry with the largest weight per seat already held, so busy
    entries get more seats and the first seats go to the busiest ones.
    """
    held = [0] * len(weights)
    order: list[int] = []
    for _ in range(seats):
        winner = max(range(len(weights)), key=lambda index: (weights[index] / (held[index] + 1), -index))
        held[winner] += 1
        order.append(winner)
    return order


def nyc_plan(precincts: Sequence[PrecinctStats]) -> ProgramPlan:
    zones = [ZonePlan(stats.zone_code, stats.zone_name, stats.borough) for stats in precincts]
    homes = apportion([stats.edp_calls for stats in precincts], len(NYC_UNITS))
    units = [
        UnitPlan(call_sign, model, status, precincts[home].zone_code)
        for (call_sign, model, status), home in zip(NYC_UNITS, homes, strict=True)
    ]
    return ProgramPlan(
        slug="nyc-bheard",
        name="NYC B-HEARD (demo)",
        time_zone="America/New_York",
        username_prefix="nyc",
        zones=zones,
        units=units,
        crews=NYC_CREWS,
        waiting_calls=sample_incidents()[-WAITING_CALLS:],
        care_stories_unit="BH-01",
    )


def boston_plan() -> ProgramPlan:
    return ProgramPlan(
        slug="boston",
        name="Boston crisis response (demo)",
        time_zone="America/New_York",
        username_prefix="bos",
        area_code="617",
        zones=BOSTON_ZONES,
        units=BOSTON_UNITS,
        crews=BOSTON_CREWS,
    )


def demo_plans() -> list[ProgramPlan]:
    return [nyc_plan(precinct_stats()), boston_plan()]


def crew_usernames(prefix: str, call_sign: str, roles: Sequence[Role]) -> list[str]:
    """`nyc.bh01.emt`; a role held twice in one crew is numbered (`nyc.cr01.officer2`)."""
    unit_part = call_sign.replace("-", "").lower()
    names = []
    for position, role in enumerate(roles):
        short = ROLE_SHORT_NAMES[role]
        if roles.count(role) > 1:
            short += str(roles[: position + 1].count(role))
        names.append(f"{prefix}.{unit_part}.{short}")
    return names


def _name_for(username: str) -> tuple[str, str]:
    checksum = zlib.crc32(username.encode())
    return FIRST_NAMES[checksum % len(FIRST_NAMES)], LAST_NAMES[(checksum // len(FIRST_NAMES)) % len(LAST_NAMES)]


class _Seeder:
    def __init__(self, *, password_hash: str, reset_passwords: bool) -> None:
        self.password_hash = password_hash
        self.reset_passwords = reset_passwords
        self.logins: list[DemoLogin] = []
        self.lines_given: dict[str, int] = {}

    def phone_number(self, area_code: str) -> str:
        """The next fictional number of the area code; the same login gets the same one each run."""
        given = self.lines_given.get(area_code, 0)
        if given >= len(FICTIONAL_LINES):
            raise ValueError(f"More demo logins in area code {area_code} than fictional numbers.")
        self.lines_given[area_code] = given + 1
        return f"+1{area_code}555{FICTIONAL_LINES[given]:04d}"

    def user(self, username: str, *, administrator: bool = False, staff: bool = False, phone_number: str = "") -> User:
        first_name, last_name = _name_for(username)
        if administrator:
            first_name, last_name = "Demo", "Administrator"
        fields: dict[str, object] = {
            "first_name": first_name,
            "last_name": last_name,
            "is_staff": administrator or staff,
            "is_superuser": administrator,
        }
        contact = {"email": f"{username}@{DEMO_EMAIL_DOMAIN}", "phone_number": phone_number}
        user, created = User.objects.update_or_create(
            username=username,
            defaults=fields,
            create_defaults={**fields, **contact, "password": self.password_hash},
        )
        if not created:
            # An address changed while the demo was used stays; one missing (a demo seeded
            # before logins had addresses) is filled in.
            for field, value in contact.items():
                if value:
                    User.objects.filter(pk=user.pk, **{field: ""}).update(**{field: value})
        if self.reset_passwords and not created:
            User.objects.filter(pk=user.pk).update(password=self.password_hash)
        return user

    def member(self, user: User, program: Program, role: Role, unit: Unit | None = None) -> None:
        Membership.objects.get_or_create(user=user, program=program, role=role)
        if unit is not None:
            UnitMember.objects.get_or_create(
                unit=unit, user=user, defaults={"is_on_shift": unit.status != UnitStatus.OUT_OF_SERVICE}
            )
        self.logins.append(DemoLogin(user.username, role.label, program.slug, unit.call_sign if unit else ""))

    def program(self, plan: ProgramPlan) -> Program:
        program, _ = Program.objects.update_or_create(
            slug=plan.slug, defaults={"name": plan.name, "time_zone": plan.time_zone}
        )
        zones = {}
        care_stories_crew: tuple[User, Unit] | None = None  # who documented the care records, in which unit
        for zone_plan in plan.zones:
            # No coordinates: the extract has none, and made-up ones would pass for real.
            zones[zone_plan.code], _ = Zone.objects.update_or_create(
                program=program,
                code=zone_plan.code,
                defaults={"name": zone_plan.name, "borough": zone_plan.borough},
            )
        staff = {}
        for role in PROGRAM_STAFF_ROLES:
            # Case managers and supervisors work in the admin (scoped to their program).
            user = self.user(
                f"{plan.username_prefix}.{ROLE_SHORT_NAMES[role]}",
                staff=role in ADMIN_WORKSPACE_ROLES,
                phone_number=self.phone_number(plan.area_code),
            )
            self.member(user, program, role)
            staff[role] = user
        for unit_plan in plan.units:
            structure = {"response_model": unit_plan.response_model, "home_zone": zones[unit_plan.home_zone_code]}
            unit, _ = Unit.objects.update_or_create(
                program=program,
                call_sign=unit_plan.call_sign,
                defaults=structure,
                create_defaults={**structure, "status": unit_plan.status, "status_changed_at": timezone.now()},
            )
            roles = plan.crews[unit_plan.response_model]
            for username, role in zip(
                crew_usernames(plan.username_prefix, unit_plan.call_sign, roles), roles, strict=True
            ):
                user = self.user(username, phone_number=self.phone_number(plan.area_code))
                self.member(user, program, role, unit)
                if unit.call_sign == plan.care_stories_unit and role == Role.CLINICIAN:
                    care_stories_crew = (user, unit)
        waiting_calls_intake(program, plan.waiting_calls, dispatcher=staff[Role.DISPATCHER], zones=zones)
        # The case manager owns the program's follow-ups, so each new plan's steps are theirs.
        CaseManagerAssignment.objects.get_or_create(
            program=program, zone=None, defaults={"case_manager": staff[Role.CASE_MANAGER]}
        )
        if plan.care_stories_unit is not None:
            if care_stories_crew is None:
                raise ValueError(f"Unit {plan.care_stories_unit} of the demo plan has no clinician to document care.")
            clinician, unit = care_stories_crew
            care_stories_push(program=program, unit=unit, clinician=clinician)
        return program


def waiting_calls_intake(
    program: Program, calls: Sequence[SampleIncident], *, dispatcher: User, zones: Mapping[str, Zone]
) -> None:
    """Take in the sample's calls as the dispatcher would from CAD, through dispatch's own
    intake (triage, timeline, feed, audit). A call taken in before is left as it is now:
    offered, closed, or still waiting."""
    known = set(
        Incident.objects.filter(program=program, external_call_id__in=[_call_id(call) for call in calls]).values_list(
            "external_call_id", flat=True
        )
    )
    new_calls = [call for call in calls if _call_id(call) not in known]
    first_received = timezone.now() - WAITING_CALLS_APART * len(new_calls)
    seeder = Accessor(user=dispatcher, device_id=None, channel=AccessChannel.TASK)
    for position, call in enumerate(new_calls, start=1):
        incident_intake(
            program=program,
            actor=dispatcher,
            device=None,
            accessor=seeder,
            external_call_id=_call_id(call),
            **_call_fields(call, received_at=first_received + WAITING_CALLS_APART * position, zones=zones),
        )


def _call_id(call: SampleIncident) -> str:
    return f"FDNY-{call.cad_incident_id}"


def _call_fields(call: SampleIncident, *, received_at: datetime, zones: Mapping[str, Zone]) -> dict[str, object]:
    # The sample gives the call type (EDP: an emotionally disturbed person), where and when,
    # and nothing of what the caller said: the call type answers the mental-health question,
    # and the safety questions it cannot answer are answered no.
    return {
        "source": IncidentSource.CALL_911,
        "received_at": received_at,
        "zone": zones.get(call.zone_code),
        "address": f"{call.borough} {call.zipcode}",
        "nature": "Emotionally disturbed person (FDNY call type EDP)",
        "mental_health_nexus": True,
        "weapon": False,
        "violence_in_progress": False,
        "imminent_self_harm": False,
        "medical_emergency": False,
    }


def admin_one_time_codes(admin: User, count: int = 5) -> list[str]:
    """Fresh single-use sign-in codes for the demo administrator's second factor.

    The admin asks staff for a one-time code; a demo has no authenticator app set up, so
    each seed issues new random backup codes (and withdraws the old ones) and prints them.
    """
    device, _ = StaticDevice.objects.get_or_create(user=admin, name="demo backup codes", defaults={"confirmed": True})
    device.token_set.all().delete()
    codes = [secrets.token_hex(4) for _ in range(count)]
    StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    return codes


@transaction.atomic
def demo_seed(*, password: str, reset_passwords: bool = False) -> list[DemoLogin]:
    """Create (or complete) the demo programs and return every demo login.

    Every demo user gets the same password; it is hashed once for all of them, which keeps
    a fresh seed fast (one slow hash instead of one per user) at no cost for demo accounts
    that share a password anyway. Raises django's ValidationError for a weak password.
    """
    validate_password(password)
    seeder = _Seeder(password_hash=make_password(password), reset_passwords=reset_passwords)
    programs = [seeder.program(plan) for plan in demo_plans()]
    # One administrator for the whole deployment, a superuser so the Django admin works.
    admin = seeder.user(ADMIN_USERNAME, administrator=True)
    for program in programs:
        seeder.member(admin, program, Role.ADMINISTRATOR)
    return seeder.logins
