"""Reads of care records, filtered by what the user may see: their units' records, and every
record of a program where they are a case manager, supervisor or administrator."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from apps.accounts.models import User
from apps.care.models import Referral
from apps.care.services import RESOLVER_ROLES
from apps.teams.selectors import crewed_unit_ids


def visible_to(user: User) -> Q:
    """The filter of care-like records (with ``program`` and ``unit``) the user may see."""
    unit_ids = crewed_unit_ids(user=user)
    program_ids = user.memberships.filter(role__in=RESOLVER_ROLES).values_list("program_id", flat=True)
    return Q(unit_id__in=unit_ids) | Q(program_id__in=program_ids)


def referrals_visible_to(*, user: User) -> QuerySet[Referral]:
    return (
        Referral.objects.filter(visible_to(user), is_deleted=False)
        .prefetch_related("outcomes", "task_events")
        .order_by("-created_at")
    )
