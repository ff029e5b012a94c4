"""Known data for the program dashboard: one program's first ten days of November 2026."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from apps.accounts.models import Program, Role, User
from apps.care.models import Encounter, Referral, ReferralOutcomeEvent
from apps.dispatch.models import Assignment, AssignmentStatus, Incident, IncidentStatus, UnservedReason
from apps.followups.models import FollowUpPlan, FollowUpStep, StepStatus
from apps.teams.models import Unit, Zone
from tests.accounts.factories import DeviceFactory, MembershipFactory, ProgramFactory, UserFactory
from tests.teams.factories import UnitFactory, ZoneFactory

NEW_YORK = ZoneInfo("America/New_York")
# 1 to 10 November 2026 in New York; summer time ends at 02:00 on the 1st.
WINDOW_START, WINDOW_END = dt.date(2026, 11, 1), dt.date(2026, 11, 10)
NOW = dt.datetime(2026, 11, 14, 12, 0, tzinfo=dt.UTC)
_call_ids = itertools.count(1)


def local(day: int, hour: int, minute: int = 0, month: int = 11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=NEW_YORK)


def staff_member(program: Program, role: Role) -> User:
    user = UserFactory.create(is_staff=True)
    MembershipFactory.create(user=user, program=program, role=role)
    return user


@dataclass
class Known:
    program: Program
    harlem: Zone
    east_harlem: Zone
    unit: Unit
    author: User


def incident(known: Known, received_at: dt.datetime, **fields: Any) -> Incident:
    values: dict[str, Any] = {
        "program": known.program,
        "external_call_id": f"CAD-{next(_call_ids):06d}",
        "source": "911",
        "received_at": received_at,
        "zone": known.harlem,
        "mental_health_nexus": True,
        "weapon": False,
        "violence_in_progress": False,
        "imminent_self_harm": False,
        "medical_emergency": False,
        "recommended_response": "emt_clinician",
        "chosen_response": "emt_clinician",
        "status": IncidentStatus.OPEN,
    }
    return Incident.objects.create(**(values | fields))


def closed(received_at: dt.datetime) -> dict[str, Any]:
    return {"status": IncidentStatus.CLOSED, "closed_at": received_at + dt.timedelta(hours=2)}


def served(known: Known, received_at: dt.datetime, on_scene_after: int, ack_after: int, **fields: Any) -> Incident:
    """A served call: offered a minute after it came in, acknowledged, on scene."""
    call = incident(
        known,
        received_at,
        served_at=received_at + dt.timedelta(seconds=on_scene_after),
        **closed(received_at),
        **fields,
    )
    offered_at = received_at + dt.timedelta(minutes=1)
    Assignment.objects.create(
        incident=call,
        unit=known.unit,
        status=AssignmentStatus.CLEARED,
        offered_at=offered_at,
        acknowledged_at=offered_at + dt.timedelta(seconds=ack_after),
        acknowledged_by=known.author,
        acknowledged_device=DeviceFactory.create(user=known.author),
        ended_at=received_at + dt.timedelta(hours=1),
    )
    return call


def unserved(known: Known, received_at: dt.datetime, reason: str, **fields: Any) -> Incident:
    return incident(known, received_at, unserved_reason=reason, **closed(received_at), **fields)


def encounter(known: Known, started_at: dt.datetime, disposition: str, **fields: Any) -> Encounter:
    return Encounter.objects.create(
        program=known.program,
        unit=known.unit,
        created_by=known.author,
        started_at=started_at,
        disposition=disposition,
        **fields,
    )


def referral(known: Known, created_at: dt.datetime, outcomes: list[tuple[str, dt.timedelta]], **fields: Any) -> None:
    made = Referral.objects.create(
        program=known.program,
        unit=known.unit,
        created_by=known.author,
        encounter=encounter(known, created_at, "referred"),
        service_type="outpatient_mental_health",
        **fields,
    )
    Referral.objects.filter(pk=made.pk).update(created_at=created_at)  # auto_now_add otherwise
    for outcome, after in outcomes:
        ReferralOutcomeEvent.objects.create(
            program=known.program,
            unit=known.unit,
            created_by=known.author,
            referral=made,
            outcome=outcome,
            observed_at=created_at + after,
        )


def step(known: Known, plan: FollowUpPlan, due_at: dt.datetime, status: str, closed_after: dt.timedelta | None) -> None:
    FollowUpStep.objects.create(
        program=known.program,
        unit=known.unit,
        plan=plan,
        key=f"step-{next(_call_ids)}",
        label="Call back",
        due_at=due_at,
        status=status,
        overdue_margin_minutes=60,
        closed_at=None if closed_after is None else due_at + closed_after,
    )


def known_program(program: Program) -> Known:
    """One program's first ten days of November, with rows just outside the range and in
    another program that no figure may count."""
    known = Known(
        program,
        ZoneFactory.create(program=program, name="Harlem"),
        ZoneFactory.create(program=program, name="East Harlem"),
        UnitFactory.create(program=program),
        UserFactory.create(),
    )
    # Calls. On-scene times 10, 20, 30, 40 min; acknowledgements after 30, 60, 90, 120 s.
    served(known, local(2, 9, 15), 600, 30)
    served(known, local(3, 9, 40), 1200, 60)
    served(
        known,
        local(5, 23, 30),
        1800,
        90,
        zone=known.east_harlem,
        recommended_response="community_response",
        chosen_response="community_response",
    )
    served(
        known,
        local(6, 14),
        2400,
        120,
        zone=known.east_harlem,
        recommended_response="co_response",
        override_reason="Officer not needed: no weapon",
    )
    # 00:10 on the 1st is still summer time (04:10 UTC): inside the range. Not eligible (police).
    incident(known, local(1, 0, 10), zone=None, recommended_response="police", chosen_response="police")
    declined_call = unserved(known, local(7, 10), UnservedReason.NO_UNIT_AVAILABLE)
    Assignment.objects.create(
        incident=declined_call,
        unit=known.unit,
        status=AssignmentStatus.DECLINED,
        offered_at=local(7, 10, 1),
        ended_at=local(7, 10, 5),
        end_reason="Busy",
    )
    unserved(known, local(8, 11), UnservedReason.NO_UNIT_AVAILABLE)
    unserved(
        known,
        local(9, 12),
        UnservedReason.PERSON_NOT_FOUND,
        zone=known.east_harlem,
        recommended_response="community_response",
        chosen_response="community_response",
    )
    incident(known, local(10, 13))
    # Outside: 23:50 on 31 October (03:50 UTC on the 1st) and 00:05 on the 11th.
    served(known, local(31, 23, 50, month=10), 60, 5)
    served(known, local(11, 0, 5), 60, 5)

    # Encounters started in the range: 2 resolved, 2 transported (one to a crisis centre, one
    # to hospital), 1 without a disposition (and 4 referred, from the referrals below); a
    # deleted one and one outside do not count.
    encounter(known, local(2, 10), "resolved_on_scene")
    encounter(known, local(4, 10), "resolved_on_scene")
    encounter(known, local(4, 12), "transported_voluntary", transport_destination="community_location")
    encounter(known, local(5, 12), "transported_involuntary", transport_destination="hospital")
    encounter(known, local(6, 12), "")
    encounter(known, local(6, 13), "resolved_on_scene", is_deleted=True)
    encounter(known, local(12, 13), "resolved_on_scene")

    # Referrals: connected after 3 days; attended after 10; only a no-show (and a deleted
    # "connected" event); connected after 1 day but made on the 9th.
    day = dt.timedelta(days=1)
    referral(known, local(2, 12), [("scheduled", day), ("connected", 3 * day)])
    referral(known, local(3, 12), [("attended", 10 * day)])
    referral(known, local(5, 12), [("no_show", 2 * day)])
    referral(known, local(9, 12), [("connected", day)])
    made = Referral.objects.get(created_at=local(5, 12))
    ReferralOutcomeEvent.objects.create(
        program=program,
        unit=known.unit,
        created_by=known.author,
        referral=made,
        outcome="connected",
        observed_at=local(6, 12),
        is_deleted=True,
    )

    # Follow-up steps (60 min margin): on time, late, missed, open, early; one due outside.
    plan = FollowUpPlan.objects.create(
        program=program,
        unit=known.unit,
        encounter=encounter(known, local(1, 8), "referred", is_deleted=True),
        trigger="referral",
        anchor_at=local(1, 9),
    )
    step(known, plan, local(2, 10), StepStatus.COMPLETED, dt.timedelta(minutes=30))
    step(known, plan, local(3, 10), StepStatus.COMPLETED, dt.timedelta(hours=2))
    step(known, plan, local(4, 6), StepStatus.MISSED, dt.timedelta(days=1))
    step(known, plan, local(5, 10), StepStatus.PENDING, None)
    step(known, plan, local(6, 10), StepStatus.COMPLETED, -dt.timedelta(days=1))
    step(known, plan, local(11, 10), StepStatus.COMPLETED, dt.timedelta(minutes=5))

    # Another program's call in the same hours: never counted.
    other = ProgramFactory.create(slug="elsewhere", name="Elsewhere")
    stranger = Known(
        other,
        ZoneFactory.create(program=other, name="Harlem"),
        ZoneFactory.create(program=other),
        UnitFactory.create(program=other),
        known.author,
    )
    served(stranger, local(2, 9, 15), 100, 10)
    return known
