"""Reads for zones and units, always filtered by what the acting user may see."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from django.db.models import Q, QuerySet

from apps.accounts.models import Membership, Role, User
from apps.accounts.selectors import programs_of, programs_where
from apps.teams.models import PastUnitMember, Unit, UnitMember, Zone


def crewed_unit_ids(*, user: User) -> QuerySet[UnitMember, UUID]:
    """The units the user rides in, in programs they still work for: a place on a crew
    outlives the user's removal from its program (an admin deletes the membership and not
    the crew), and grants nothing then. Every rule of what a crew may see and do asks here."""
    return UnitMember.objects.filter(
        user=user, unit__program__in=Membership.objects.filter(user=user).values("program_id")
    ).values_list("unit_id", flat=True)


def was_on_crew_at(*, user: User, unit_id: UUID, at: datetime, leeway: timedelta) -> bool:
    """Whether the user had left the unit's crew, and was on it at ``at`` (within ``leeway``,
    a device's clock against the server's), in a program they still work for. For a record
    they made then and push now; it grants no access to anything of the unit's."""
    return PastUnitMember.objects.filter(
        user=user,
        unit_id=unit_id,
        unit__program__in=Membership.objects.filter(user=user).values("program_id"),
        joined_at__lte=at + leeway,
        left_at__gte=at - leeway,
    ).exists()


def units_visible_to(*, user: User) -> QuerySet[Unit]:
    """Program-wide staff see every unit of their programs; crews see only their own units."""
    program_wide = programs_where(user=user, roles=Role.program_wide_roles())
    return (
        Unit.objects.filter(Q(program__in=program_wide) | Q(pk__in=crewed_unit_ids(user=user)))
        .select_related("program", "home_zone")
        .distinct()
        .order_by("call_sign")
    )


def zones_visible_to(*, user: User) -> QuerySet[Zone]:
    return Zone.objects.filter(program__in=programs_of(user=user)).select_related("program").order_by("code")


def unit_ids_of(*, user: User) -> list[str]:
    """The units a user rides in (for live delivery to their devices)."""
    return [str(unit_id) for unit_id in crewed_unit_ids(user=user)]
