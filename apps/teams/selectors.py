"""Reads for zones and units, always filtered by what the acting user may see."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from apps.accounts.models import Role, User
from apps.accounts.selectors import programs_of, programs_where
from apps.teams.models import Unit, Zone


def units_visible_to(*, user: User) -> QuerySet[Unit]:
    """Program-wide staff see every unit of their programs; crews see only their own units."""
    program_wide = programs_where(user=user, roles=Role.program_wide_roles())
    return (
        Unit.objects.filter(Q(program__in=program_wide) | Q(memberships__user=user))
        .select_related("program", "home_zone")
        .distinct()
        .order_by("call_sign")
    )


def zones_visible_to(*, user: User) -> QuerySet[Zone]:
    return Zone.objects.filter(program__in=programs_of(user=user)).select_related("program").order_by("code")


def unit_ids_of(*, user: User) -> list[str]:
    """The units a user rides in (for live delivery to their devices)."""
    return [str(unit_id) for unit_id in Unit.objects.filter(memberships__user=user).values_list("id", flat=True)]
