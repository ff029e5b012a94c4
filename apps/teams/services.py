"""Writes for crews: who rides in which unit.

A change of crew changes what the member's devices may see: it is announced with
``apps.accounts.services.access_changed``, inside the same transaction.
"""

from __future__ import annotations

from django.db import transaction

from apps.accounts.models import User
from apps.accounts.services import access_changed
from apps.teams.models import Unit, UnitMember


@transaction.atomic
def unit_member_add(*, unit: Unit, user: User, is_on_shift: bool = False) -> UnitMember:
    member, created = UnitMember.objects.get_or_create(unit=unit, user=user, defaults={"is_on_shift": is_on_shift})
    if created:
        access_changed(user_id=user.pk)
    return member


@transaction.atomic
def unit_member_remove(*, unit: Unit, user: User) -> bool:
    removed, _ = UnitMember.objects.filter(unit=unit, user=user).delete()
    if removed:
        access_changed(user_id=user.pk)
    return bool(removed)
