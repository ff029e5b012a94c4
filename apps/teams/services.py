"""Writes for crews: who rides in which unit.

A change of crew changes what the member's devices may see. The mechanisms above (the
change feed, the websockets) register with ``on_crew_change`` and are told, inside the same
transaction, whose crews changed; this app knows nothing of them.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from django.db import transaction

from apps.accounts.models import User
from apps.teams.models import Unit, UnitMember

CrewChangeListener = Callable[[UUID], None]

_crew_change_listeners: list[CrewChangeListener] = []


def on_crew_change(listener: CrewChangeListener) -> None:
    """Register a callable taking a user id, run whenever that user joins or leaves a unit."""
    if listener not in _crew_change_listeners:
        _crew_change_listeners.append(listener)


def crew_changed(*, user_id: UUID) -> None:
    """Tell the listeners; call inside the transaction that changed the crew."""
    for listener in _crew_change_listeners:
        listener(user_id)


@transaction.atomic
def unit_member_add(*, unit: Unit, user: User, is_on_shift: bool = False) -> UnitMember:
    member, created = UnitMember.objects.get_or_create(unit=unit, user=user, defaults={"is_on_shift": is_on_shift})
    if created:
        crew_changed(user_id=user.pk)
    return member


@transaction.atomic
def unit_member_remove(*, unit: Unit, user: User) -> bool:
    removed, _ = UnitMember.objects.filter(unit=unit, user=user).delete()
    if removed:
        crew_changed(user_id=user.pk)
    return bool(removed)
