"""Writes for crews: who rides in which unit.

A change of crew changes what the member's devices may see: it is announced with
``apps.accounts.services.access_changed``, inside the same transaction. A member who leaves
loses their place at once; their spell on the crew is kept (``PastUnitMember``), for what
they recorded while on it and push later.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.services import access_changed
from apps.teams.models import PastUnitMember, Unit, UnitMember


@transaction.atomic
def unit_member_add(*, unit: Unit, user: User, is_on_shift: bool = False) -> UnitMember:
    member, created = UnitMember.objects.get_or_create(unit=unit, user=user, defaults={"is_on_shift": is_on_shift})
    if created:
        access_changed(user_id=user.pk)
    return member


@transaction.atomic
def unit_member_remove(*, unit: Unit, user: User) -> bool:
    member = UnitMember.objects.filter(unit=unit, user=user).first()
    if member is None:
        return False
    removed, _ = UnitMember.objects.filter(pk=member.pk).delete()
    if not removed:  # by a concurrent removal, which kept the spell
        return False
    _record_spell(unit_id=unit.pk, user_id=user.pk, joined_at=member.created_at)
    access_changed(user_id=user.pk)
    return True


CrewPlaces = dict[UUID, tuple[UUID, datetime]]


def crew_places(*, unit_id: UUID) -> CrewPlaces:
    """Who holds each place on the unit's crew, since when: read before the admin saves the
    crew, for ``crew_saved``."""
    return {
        place.pk: (place.user_id, place.created_at)
        for place in UnitMember.objects.filter(unit_id=unit_id).only("user_id", "created_at")
    }


def crew_saved(*, unit_id: UUID, before: CrewPlaces) -> None:
    """After the admin saved the unit's crew: the spells of those who left it (a place
    deleted, or given to someone else) are kept, as ``unit_member_remove`` keeps them. A
    place given to someone else is dated anew: its creation dates the first holder's spell,
    and left so, the new holder's spell, once over, would reach back before they joined."""
    now = timezone.now()
    after = dict(UnitMember.objects.filter(unit_id=unit_id).values_list("pk", "user_id"))
    for place_id, (user_id, joined_at) in before.items():
        if after.get(place_id) != user_id:
            _record_spell(unit_id=unit_id, user_id=user_id, joined_at=joined_at, left_at=now)
            if place_id in after:
                UnitMember.objects.filter(pk=place_id).update(created_at=now)


def _record_spell(*, unit_id: UUID, user_id: UUID, joined_at: datetime, left_at: datetime | None = None) -> None:
    PastUnitMember.objects.create(
        unit_id=unit_id, user_id=user_id, joined_at=joined_at, left_at=left_at or timezone.now()
    )
