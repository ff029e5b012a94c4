"""Reads of follow-ups, filtered to what the user may see (their units', or their programs' as
case manager / supervisor)."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import User
from apps.care.selectors import visible_to
from apps.followups.models import FollowUpStep


def steps_visible_to(*, user: User) -> QuerySet[FollowUpStep]:
    return FollowUpStep.objects.filter(visible_to(user)).select_related("plan").order_by("due_at", "pk")


def step_queue(
    *, user: User, status: str | None = None, mine: bool = False, due_before: object = None
) -> QuerySet[FollowUpStep]:
    steps = steps_visible_to(user=user)
    if status:
        steps = steps.filter(status=status)
    if mine:
        steps = steps.filter(owner=user)
    if due_before is not None:
        steps = steps.filter(due_at__lte=due_before)
    return steps
