from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from django.utils import timezone

from apps.accounts.models import Program, Role
from apps.care.models import Referral
from apps.care.services import referral_outcome_record
from apps.dispatch import services as dispatch
from apps.followups import services as followups
from apps.followups.models import FollowUpStep, StepStatus
from apps.sync.services import conflict_resolve
from apps.workspace.selectors import end_of_today, queue_counts, queue_queryset
from tests.accounts.factories import ProgramFactory
from tests.conftest import in_the_admin, make_crew_member
from tests.followups.factories import case_manager
from tests.workspace.scenario import staff, workday


def counts(user: object, now: dt.datetime) -> dict[str, int]:
    return {queue.key: queue.count for queue in queue_counts(user=user, now=now)}  # type: ignore[arg-type]


def test_each_queue_counts_its_programs_work(program: Program) -> None:
    day = workday(program)
    now = timezone.now()
    # One of the manager's steps comes due later today.
    midnight = end_of_today(now, program.time_zone)
    later_today = now + (midnight - now) / 2
    open_steps = [step for step in day.steps if step.status == StepStatus.PENDING]
    followups.step_reschedule(
        step=open_steps[-1],
        actor=day.case_manager,
        due_at=later_today,
        reason="agreed time",
        accessor=in_the_admin(day.case_manager),
    )
    steps = FollowUpStep.objects.filter(pk__in=[step.pk for step in open_steps])
    overdue = [step for step in steps if step.due_at < now]
    due_today = [step for step in steps if now <= step.due_at < midnight and step.owner == day.case_manager]
    assert open_steps[-1] in due_today

    assert counts(day.case_manager, now) == {
        "steps_due_today": len(due_today),
        "steps_overdue": len(overdue),
        "referrals_awaiting_outcome": 1,
        "assignments_not_acknowledged": 1,
        "checkins_missed": 1,
        "conflicts_to_resolve": 1,
        "quarantined_to_review": 1,
        "eligible_not_served": 1,
    }
    [unserved] = [queue for queue in queue_counts(user=day.case_manager, now=now) if queue.key == "eligible_not_served"]
    assert [(label, count) for label, count, _url in unserved.breakdown] == [("No unit available", 1)]
    assert unserved.breakdown[0][2].endswith("?queue=eligible_not_served&unserved_reason__exact=no_unit_available")
    # The supervisor sees the program's queues too, but no step is theirs to do today.
    assert counts(day.supervisor, now)["steps_due_today"] == 0
    assert counts(day.supervisor, now)["conflicts_to_resolve"] == 1


def test_the_counts_drop_as_the_work_is_done(program: Program) -> None:
    day = workday(program)
    now = timezone.now()
    open_steps = [step for step in day.steps if step.status == StepStatus.PENDING]
    followups.step_reschedule(
        step=open_steps[-1],
        actor=day.case_manager,
        due_at=now + (end_of_today(now, program.time_zone) - now) / 2,
        reason="agreed",
        accessor=in_the_admin(day.case_manager),
    )
    before = counts(day.case_manager, timezone.now())
    assert before["steps_overdue"] >= 1, "the scenario's encounter ended days ago: its first step is overdue"

    other_manager = case_manager(day.crew, of_program=False).user
    followups.step_assign(
        step=open_steps[-1], actor=day.case_manager, owner=other_manager, accessor=in_the_admin(day.case_manager)
    )
    assert counts(day.case_manager, timezone.now())["steps_due_today"] == before["steps_due_today"] - 1

    overdue_step = next(step for step in open_steps if step.due_at < now)
    followups.step_complete(step=overdue_step, actor=day.case_manager, accessor=in_the_admin(day.case_manager))
    assert counts(day.case_manager, timezone.now())["steps_overdue"] == before["steps_overdue"] - 1

    referral_outcome_record(
        referral=Referral.objects.get(pk=day.referral_id),
        outcome="connected",
        observed_at=timezone.now(),
        details="",
        actor=day.case_manager,
        accessor=in_the_admin(day.case_manager),
    )
    crew = make_crew_member(program, unit=day.unacknowledged.unit)
    dispatch.assignment_acknowledge(assignment_id=day.unacknowledged.pk, user=crew.user, device=crew.device)
    rider = make_crew_member(program, unit=day.missed_checkin.unit)
    dispatch.assignment_check_in(assignment_id=day.missed_checkin.pk, user=rider.user, device=rider.device)

    conflict_resolve(
        conflict=day.conflict, choice="server", resolved_by=day.case_manager, accessor=in_the_admin(day.case_manager)
    )

    after = counts(day.case_manager, timezone.now())
    assert (
        after["referrals_awaiting_outcome"],
        after["assignments_not_acknowledged"],
        after["checkins_missed"],
        after["conflicts_to_resolve"],
    ) == (0, 0, 0, 0)


def test_the_outsider_of_another_program_counts_none_of_it(program: Program) -> None:
    day = workday(program)
    elsewhere = ProgramFactory.create(slug="boston-pilot", name="Boston pilot")
    outsider = staff(make_crew_member(elsewhere, role=Role.CASE_MANAGER).user)
    field_staff = staff(make_crew_member(program, role=Role.CLINICIAN).user)

    assert set(counts(outsider, timezone.now()).values()) == {0}
    assert queue_counts(user=field_staff) == []  # not a workspace role: no queues at all
    assert counts(day.case_manager, timezone.now())["conflicts_to_resolve"] == 1


def test_due_today_is_the_programs_day_not_utcs(program: Program) -> None:
    day = workday(program)
    program.time_zone = "America/Los_Angeles"
    program.save(update_fields=["time_zone"])
    los_angeles = ZoneInfo(program.time_zone)
    some_day = (timezone.now().astimezone(los_angeles) + dt.timedelta(days=2)).date()

    def local(days: int, hour: int) -> dt.datetime:
        return dt.datetime.combine(some_day + dt.timedelta(days=days), dt.time(hour), tzinfo=los_angeles)

    late_evening, after_midnight = local(0, 22), local(1, 1)
    open_steps = [step for step in day.steps if step.status == StepStatus.PENDING][:2]
    for step, due_at in zip(open_steps, (late_evening, after_midnight), strict=True):
        followups.step_reschedule(
            step=step,
            actor=day.case_manager,
            due_at=due_at,
            reason="agreed time",
            accessor=in_the_admin(day.case_manager),
        )

    def due_today(now: dt.datetime) -> set[object]:
        rows = queue_queryset(user=day.case_manager, key="steps_due_today", now=now)
        return set(rows.filter(pk__in=[step.pk for step in open_steps]).values_list("pk", flat=True))

    # 19:00 in Los Angeles is already tomorrow in UTC: both steps fall on that UTC day, but
    # only the one before local midnight is due today.
    evening = local(0, 19)
    assert evening.astimezone(dt.UTC).date() == after_midnight.astimezone(dt.UTC).date()
    assert due_today(evening) == {open_steps[0].pk}
    # 15:00 in Los Angeles is still today in UTC, and 22:00 local is tomorrow in UTC: due today all the same.
    afternoon = local(0, 15)
    assert afternoon.astimezone(dt.UTC).date() < late_evening.astimezone(dt.UTC).date()
    assert due_today(afternoon) == {open_steps[0].pk}
    assert counts(day.case_manager, afternoon)["steps_due_today"] >= 1
