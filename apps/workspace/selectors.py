"""The queues on the admin home: what a case manager or supervisor must work next.

Each queue is a condition on one model. The home page counts it within the user's programs,
and the model's changelist applies the same condition when opened from the home page
(``?queue=<key>``), so the count and the list always agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from django.db.models import Count, DateTimeField, Exists, Expression, F, Model, OuterRef, Q, Value
from django.db.models.sql.compiler import SQLCompiler
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import User
from apps.care.models import Referral, ReferralStatus
from apps.dispatch.models import (
    AlertKind,
    Assignment,
    AssignmentStatus,
    Incident,
    IncidentStatus,
    Response,
    SupervisorAlert,
    UnservedReason,
)
from apps.followups.models import FollowUpStep, StepStatus
from apps.sync.models import Conflict, Mutation
from apps.sync.selectors import AWAITING_REVIEW
from apps.workspace.access import workspace_program_ids


def end_of_today(now: dt.datetime, time_zone: str) -> dt.datetime:
    """Midnight after ``now`` in the time zone (a program's): "today" is the program's day, not UTC's."""
    local = now.astimezone(ZoneInfo(time_zone))
    tomorrow = local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(tomorrow, dt.time.min, tzinfo=ZoneInfo(time_zone))


class EndOfLocalDay(Expression):
    """``end_of_today`` in SQL, per row, in the time zone the row's program names.

    One condition serves a user whose programs lie in different zones, and the home page
    needs no query for the zones first."""

    output_field = DateTimeField()

    def __init__(self, now: dt.datetime, time_zone: str) -> None:
        super().__init__()
        self.now: Any = Value(now, output_field=DateTimeField())
        self.time_zone: Any = F(time_zone)  # a column once the query resolves it

    def get_source_expressions(self) -> list[Any]:
        return [self.now, self.time_zone]

    def set_source_expressions(self, exprs: Sequence[Any]) -> None:
        self.now, self.time_zone = exprs

    def as_sql(self, compiler: SQLCompiler, connection: Any) -> tuple[str, list[Any]]:
        now_sql, now_params = compiler.compile(self.now)
        zone_sql, zone_params = compiler.compile(self.time_zone)
        # timestamptz AT TIME ZONE z is the local wall time; local midnight AT TIME ZONE z is back
        # to an instant (so a day of 23 or 25 hours is right too).
        sql = f"((date_trunc('day', ({now_sql}) AT TIME ZONE {zone_sql}) + interval '1 day') AT TIME ZONE {zone_sql})"
        return sql, [*now_params, *zone_params, *zone_params]


def _my_steps_due_today(user: User, now: dt.datetime) -> Q:
    return Q(
        status=StepStatus.PENDING,
        owner=user,
        due_at__gte=now,
        due_at__lt=EndOfLocalDay(now, "program__time_zone"),
    )


def _overdue_steps(user: User, now: dt.datetime) -> Q:
    return Q(status=StepStatus.PENDING, due_at__lt=now)


def _referrals_awaiting_outcome(user: User, now: dt.datetime) -> Q:
    # Open (nothing heard yet) or scheduled (an appointment, but not yet whether they went).
    return Q(status__in=[ReferralStatus.OPEN, ReferralStatus.SCHEDULED], is_deleted=False)


def _assignments_not_acknowledged(user: User, now: dt.datetime) -> Q:
    return Q(status=AssignmentStatus.OFFERED)


def _missed_checkins(user: User, now: dt.datetime) -> Q:
    """An active assignment whose crew missed a safety check-in and has not checked in since.

    Dispatch raises a ``checkin_missed`` alert and keeps no "resolved" flag; a later check-in
    by the crew is what works it."""
    missed = SupervisorAlert.objects.filter(assignment=OuterRef("pk"), kind=AlertKind.CHECKIN_MISSED)
    return Q(status__in=AssignmentStatus.active()) & (
        Q(Exists(missed), last_checkin_at=None) | Q(Exists(missed.filter(raised_at__gt=OuterRef("last_checkin_at"))))
    )


def _conflicts_to_resolve(user: User, now: dt.datetime) -> Q:
    return Q(resolved_at=None)


def _quarantined_to_review(user: User, now: dt.datetime) -> Q:
    return AWAITING_REVIEW


def _eligible_not_served(user: User, now: dt.datetime) -> Q:
    teams = Response.team_responses()
    return Q(status=IncidentStatus.CLOSED, served_at=None) & (
        Q(recommended_response__in=teams) | Q(chosen_response__in=teams)
    )


@dataclass(frozen=True)
class QueueDefinition:
    key: str
    label: str
    model: type[Model]
    program_path: str
    condition: Callable[[User, dt.datetime], Q]

    def changelist_url(self) -> str:
        meta = self.model._meta
        return f"{reverse(f'admin:{meta.app_label}_{meta.model_name}_changelist')}?queue={self.key}"


QUEUES: list[QueueDefinition] = [
    QueueDefinition("steps_due_today", "My follow-up steps due today", FollowUpStep, "program", _my_steps_due_today),
    QueueDefinition("steps_overdue", "Overdue follow-up steps", FollowUpStep, "program", _overdue_steps),
    QueueDefinition(
        "referrals_awaiting_outcome", "Referrals awaiting an outcome", Referral, "program", _referrals_awaiting_outcome
    ),
    QueueDefinition(
        "assignments_not_acknowledged",
        "Assignments not acknowledged",
        Assignment,
        "incident__program",
        _assignments_not_acknowledged,
    ),
    QueueDefinition("checkins_missed", "Check-ins missed", Assignment, "incident__program", _missed_checkins),
    QueueDefinition("conflicts_to_resolve", "Sync conflicts to resolve", Conflict, "program", _conflicts_to_resolve),
    QueueDefinition(
        "quarantined_to_review", "Quarantined changes to review", Mutation, "program", _quarantined_to_review
    ),
    QueueDefinition("eligible_not_served", "Eligible calls not served", Incident, "program", _eligible_not_served),
]
QUEUES_BY_KEY = {queue.key: queue for queue in QUEUES}


def queues_of(model: type[Model]) -> list[QueueDefinition]:
    return [queue for queue in QUEUES if queue.model is model]


@dataclass(frozen=True)
class QueueCount:
    key: str
    label: str
    count: int
    url: str
    # For the unserved calls: the count per reason, each with its own link.
    breakdown: tuple[tuple[str, int, str], ...] = ()


def _program_ids(user: User) -> list[UUID] | None:
    """None means every program (a superuser)."""
    return None if user.is_superuser else workspace_program_ids(user)


def queue_queryset(*, user: User, key: str, now: dt.datetime | None = None) -> Any:
    queue = QUEUES_BY_KEY[key]
    now = now or timezone.now()
    rows = queue.model._default_manager.filter(queue.condition(user, now))
    program_ids = _program_ids(user)
    if program_ids is not None:
        rows = rows.filter(**{f"{queue.program_path}__in": program_ids})
    return rows


def queue_counts(*, user: User, now: dt.datetime | None = None) -> list[QueueCount]:
    """The home page's queues for this user, within their programs (every program for a superuser)."""
    now = now or timezone.now()
    if not user.is_superuser and not workspace_program_ids(user):
        return []
    counts = []
    for queue in QUEUES:
        rows = queue_queryset(user=user, key=queue.key, now=now)
        breakdown: tuple[tuple[str, int, str], ...] = ()
        if queue.key == "eligible_not_served":
            by_reason = rows.order_by().values("unserved_reason").annotate(n=Count("pk")).order_by("-n")
            labels = dict(UnservedReason.choices)
            breakdown = tuple(
                (
                    labels.get(row["unserved_reason"], row["unserved_reason"]),
                    row["n"],
                    f"{queue.changelist_url()}&unserved_reason__exact={row['unserved_reason']}",
                )
                for row in by_reason
            )
            count = sum(n for _label, n, _url in breakdown)
        else:
            count = rows.count()
        counts.append(QueueCount(queue.key, queue.label, count, queue.changelist_url(), breakdown))
    return counts
