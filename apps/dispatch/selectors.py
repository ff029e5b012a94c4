"""Reads for dispatch, always filtered by what the acting user may see.

Dispatchers and supervisors of a program see and act on all of its incidents; a crew member
sees only the assignments of the units they ride in (and the incident inside each one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db.models import Prefetch, Q, QuerySet

from apps.accounts.models import Membership, Program, Role, User
from apps.accounts.selectors import programs_where
from apps.common import bulk
from apps.dispatch.models import (
    Assignment,
    AssignmentStatus,
    Incident,
    ResponseTiming,
    TriagePolicy,
)
from apps.teams.models import Unit, UnitStatus
from apps.teams.selectors import crewed_unit_ids

DISPATCH_ROLES = frozenset({Role.DISPATCHER, Role.SUPERVISOR})


def dispatch_programs(*, user: User) -> QuerySet[Program]:
    """Programs in which the user dispatches or supervises."""
    return programs_where(user=user, roles=DISPATCH_ROLES)


def dispatch_program_ids(*, user: User | UUID) -> QuerySet[Membership, UUID]:
    """The ids of the programs in which the user (or the user of this id) dispatches or
    supervises, for a rule that holds only users' ids (dispatch_programs takes a user)."""
    user_id = user.pk if isinstance(user, User) else user
    return Membership.objects.filter(user_id=user_id, role__in=DISPATCH_ROLES).values_list("program_id", flat=True)


def can_dispatch(*, user: User, program_id: UUID) -> bool:
    return dispatch_program_ids(user=user).filter(program_id=program_id).exists()


def is_crew_of(*, user: User, unit_id: UUID) -> bool:
    return crewed_unit_ids(user=user).filter(unit_id=unit_id).exists()


def units_of_assignments_reported(*, reports: Mapping[UUID, Iterable[UUID]]) -> QuerySet[Assignment, UUID]:
    """The units of the assignments that users (by id) would report a status of, each of
    those they may report: as a crew member of its unit or a dispatcher or supervisor of its
    program (is_crew_of, can_dispatch), whatever its status. One query for all of them."""
    reportable: Q | None = None
    for user_id, assignment_ids in reports.items():
        reported_by_user = Q(pk__in=bulk.any_of(assignment_ids, "uuid")) & (
            Q(unit_id__in=crewed_unit_ids(user=user_id))
            | Q(incident__program_id__in=dispatch_program_ids(user=user_id))
        )
        reportable = reported_by_user if reportable is None else reportable | reported_by_user
    if reportable is None:
        return Assignment.objects.none().values_list("unit_id", flat=True)
    return Assignment.objects.filter(reportable).values_list("unit_id", flat=True).distinct()


def incidents_visible_to(*, user: User) -> QuerySet[Incident]:
    return Incident.objects.filter(program__in=dispatch_programs(user=user)).select_related("program")


def crew_assignments(*, user: User) -> QuerySet[Assignment]:
    """Assignments of the units the user rides in: the ones they may answer."""
    return Assignment.objects.filter(unit_id__in=crewed_unit_ids(user=user))


def assignments_visible_to(*, user: User) -> QuerySet[Assignment]:
    crew_units = crewed_unit_ids(user=user)
    return (
        Assignment.objects.filter(Q(incident__program__in=dispatch_programs(user=user)) | Q(unit_id__in=crew_units))
        .select_related("incident", "unit")
        .order_by("-offered_at")
    )


def units_actionable_by(*, user: User) -> QuerySet[Unit]:
    """Units whose availability the user may set: their own, or any in a program they dispatch for."""
    crew_units = crewed_unit_ids(user=user)
    return Unit.objects.filter(Q(pk__in=crew_units) | Q(program__in=dispatch_programs(user=user)))


def units_for_dispatch(*, user: User, program: Program) -> QuerySet[Unit]:
    """The unit board of a program, each unit with its active assignments."""
    if not can_dispatch(user=user, program_id=program.pk):
        return Unit.objects.none()
    active = Assignment.objects.filter(status__in=AssignmentStatus.active()).order_by("offered_at")
    return (
        Unit.objects.filter(program=program)
        .select_related("home_zone")
        .prefetch_related(Prefetch("assignments", queryset=active, to_attr="active_assignments"))
        .order_by("status", "call_sign")
    )


def triage_policy_for(*, program_id: UUID) -> TriagePolicy:
    """The program's own policy, or the default every program starts with."""
    policy = (
        TriagePolicy.objects.filter(Q(program_id=program_id) | Q(program=None))
        .order_by("program_id")  # the program's own sorts before NULL
        .prefetch_related("rules")
        .first()
    )
    if policy is None:
        raise LookupError("No triage policy: the default is seeded by a migration; was it removed?")
    return policy


@dataclass(frozen=True)
class Timing:
    ack_resend_seconds: int
    ack_escalate_seconds: int
    checkin_interval_seconds: int


def timing_for(*, program_id: UUID, priority: str) -> Timing:
    row = ResponseTiming.objects.filter(program_id=program_id, priority=priority).first()
    if row is not None:
        return Timing(row.ack_resend_seconds, row.ack_escalate_seconds, row.checkin_interval_seconds)
    return Timing(
        settings.DISPATCH_ACK_RESEND_SECONDS,
        settings.DISPATCH_ACK_ESCALATE_SECONDS,
        settings.DISPATCH_CHECKIN_INTERVAL_SECONDS,
    )


@dataclass(frozen=True)
class UnitRecommendation:
    unit: Unit
    distance_km: float | None
    same_zone: bool

    def as_data(self) -> dict[str, Any]:
        return {
            "unit": str(self.unit.pk),
            "call_sign": self.unit.call_sign,
            "response_model": self.unit.response_model,
            "distance_km": round(self.distance_km, 3) if self.distance_km is not None else None,
            "same_zone": self.same_zone,
        }


def _distance_km(
    lat1: Decimal | None, lon1: Decimal | None, lat2: Decimal | None, lon2: Decimal | None
) -> float | None:
    if lat1 is None or lon1 is None or lat2 is None or lon2 is None:
        return None
    # Haversine: exact enough for "which unit is nearest" within a city.
    phi1, phi2 = math.radians(float(lat1)), math.radians(float(lat2))
    d_phi = phi2 - phi1
    d_lambda = math.radians(float(lon2) - float(lon1))
    a = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(a))


def recommended_units(*, incident: Incident, exclude_unit_ids: set[UUID] | None = None) -> list[UnitRecommendation]:
    """Available units of the chosen response model: nearest first by coordinates, then same zone first.

    Units without a position come after every unit with one; among them, those whose home
    zone is the incident's zone come first.
    """
    units = Unit.objects.filter(
        program_id=incident.program_id, response_model=incident.chosen_response, status=UnitStatus.AVAILABLE
    ).exclude(pk__in=exclude_unit_ids or set())
    recommendations = [
        UnitRecommendation(
            unit=unit,
            distance_km=_distance_km(incident.latitude, incident.longitude, unit.latitude, unit.longitude),
            same_zone=incident.zone_id is not None and unit.home_zone_id == incident.zone_id,
        )
        for unit in units
    ]
    recommendations.sort(key=lambda r: (r.distance_km is None, r.distance_km or 0.0, not r.same_zone, r.unit.call_sign))
    return recommendations


def units_already_offered(*, incident: Incident) -> set[UUID]:
    return set(Assignment.objects.filter(incident=incident).values_list("unit_id", flat=True))


def alerted_staff_ids(*, program_id: UUID) -> tuple[list[UUID], list[UUID]]:
    """Who hears of escalations: the program's active supervisors, and its active dispatchers
    who are not also its supervisors (the first work in the admin workspace, the others in the
    dispatch console only)."""
    rows = (
        User.objects.filter(
            is_active=True,
            memberships__program_id=program_id,
            memberships__role__in=[Role.SUPERVISOR, Role.DISPATCHER],
        )
        .order_by("pk")
        .values_list("pk", "memberships__role")
    )
    supervisors = sorted({user_id for user_id, role in rows if role == Role.SUPERVISOR})
    dispatchers = sorted({user_id for user_id, role in rows if role == Role.DISPATCHER} - set(supervisors))
    return supervisors, dispatchers
