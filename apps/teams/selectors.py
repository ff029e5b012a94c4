"""Reads for zones and units, always filtered by what the acting user may see."""

from __future__ import annotations

from uuid import UUID

from django.db.models import Q, QuerySet

from apps.accounts.models import Membership, Role, User
from apps.accounts.selectors import programs_of, programs_where
from apps.teams.models import Unit, UnitMember, Zone


def crewed_unit_ids(*, user: User | UUID) -> QuerySet[UnitMember, UUID]:
    """The units the user (or the user of this id) rides in, in programs they still work
    for: a place on a crew outlives the user's removal from its program (an admin deletes
    the membership and not the crew), and grants nothing then. Every rule of what a crew may
    see and do asks here."""
    user_id = user.pk if isinstance(user, User) else user
    return UnitMember.objects.filter(
        user_id=user_id, unit__program__in=Membership.objects.filter(user_id=user_id).values("program_id")
    ).values_list("unit_id", flat=True)


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
