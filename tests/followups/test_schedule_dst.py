"""Due times of planned steps across daylight-saving changes: days on the program's clock, hours elapsed."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from apps.accounts.models import Program
from apps.followups.models import FollowUpPlan, PlanTrigger, ScheduleStep
from apps.followups.schedule import due_after
from tests.care.factories import encounter
from tests.conftest import CrewMember
from tests.followups.factories import referral, steps_of

UTC = dt.UTC
NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.django_db(transaction=True)
def test_the_default_schedule_keeps_the_local_time_of_day_across_the_switch(crew_member: CrewMember) -> None:
    assert crew_member.unit.program.time_zone == "America/New_York"
    # 10:00 EDT on Wednesday 2026-10-28; clocks go back on Sunday 2026-11-01.
    referral_id = referral(crew_member, encounter_fields={"ended_at": "2026-10-28T14:00:00+00:00"})

    due = {step.key: step.due_at for step in steps_of(referral_id)}

    assert due == {
        "first_contact": dt.datetime(2026, 10, 29, 14, 0, tzinfo=UTC),  # 10:00 EDT
        "connection_check": dt.datetime(2026, 10, 31, 14, 0, tzinfo=UTC),  # 10:00 EDT
        "outcome_7d": dt.datetime(2026, 11, 4, 15, 0, tzinfo=UTC),  # 10:00 EST
        "outcome_30d": dt.datetime(2026, 11, 27, 15, 0, tzinfo=UTC),  # 10:00 EST
    }
    assert {moment.astimezone(NEW_YORK).time() for moment in due.values()} == {dt.time(10, 0)}


@pytest.mark.django_db(transaction=True)
def test_a_programs_schedule_counts_whole_days_on_its_clock_and_the_rest_as_elapsed_time(
    crew_member: CrewMember,
) -> None:
    program = crew_member.unit.program
    Program.objects.filter(pk=program.pk).update(time_zone="America/Los_Angeles")
    offsets = {"in_three_hours": 180, "next_day_and_a_half_hour": 24 * 60 + 90, "in_a_week": 7 * 24 * 60}
    for key, offset in offsets.items():
        ScheduleStep.objects.create(
            program=program,
            trigger=PlanTrigger.COMMUNITY,
            key=key,
            label=key,
            offset_minutes=offset,
            overdue_margin_minutes=60,
            completed_by_outcomes=[],
        )

    # 00:30 PDT on 2026-11-01: at 02:00 PDT the clocks go back to 01:00 PST.
    encounter(crew_member, ended_at="2026-11-01T07:30:00+00:00", disposition="resolved_on_scene")

    [plan] = FollowUpPlan.objects.all()
    assert {step.key: step.due_at for step in plan.steps.all()} == {
        # Three hours are three hours, whatever the clock on the wall says (01:30 PST).
        "in_three_hours": dt.datetime(2026, 11, 1, 10, 30, tzinfo=UTC),
        # The next day at 00:30 PST, then 90 minutes.
        "next_day_and_a_half_hour": dt.datetime(2026, 11, 2, 10, 0, tzinfo=UTC),
        # A week later at 00:30 PST.
        "in_a_week": dt.datetime(2026, 11, 8, 8, 30, tzinfo=UTC),
    }


@pytest.mark.parametrize(
    ("anchor", "offset_minutes", "due"),
    [
        # 10:00 EST the day before spring forward (2026-03-08) is 10:00 EDT a day later: 23 hours.
        (dt.datetime(2026, 3, 7, 15, 0, tzinfo=UTC), 24 * 60, dt.datetime(2026, 3, 8, 14, 0, tzinfo=UTC)),
        # 02:30 EST: 02:30 does not exist on 2026-03-08; it is read with the offset before the
        # gap (RFC 5545), which is 03:30 EDT.
        (dt.datetime(2026, 3, 7, 7, 30, tzinfo=UTC), 24 * 60, dt.datetime(2026, 3, 8, 7, 30, tzinfo=UTC)),
        # 01:30 EDT: 01:30 happens twice on 2026-11-01; the first one (EDT) is taken.
        (dt.datetime(2026, 10, 31, 5, 30, tzinfo=UTC), 24 * 60, dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),
        # An anchor in the repeated hour (01:30 EST, the second one) keeps 01:30 a day later.
        (dt.datetime(2026, 11, 1, 6, 30, tzinfo=UTC), 24 * 60, dt.datetime(2026, 11, 2, 6, 30, tzinfo=UTC)),
        # An hour before the switch, two hours later: elapsed time, not the wall clock.
        (dt.datetime(2026, 11, 1, 4, 30, tzinfo=UTC), 120, dt.datetime(2026, 11, 1, 6, 30, tzinfo=UTC)),
        # An anchor given in another zone is read on the program's clock.
        (
            dt.datetime(2026, 10, 28, 10, 0, tzinfo=ZoneInfo("America/New_York")),
            7 * 24 * 60,
            dt.datetime(2026, 11, 4, 15, 0, tzinfo=UTC),
        ),
    ],
)
def test_due_after_on_the_day_of_the_switch(anchor: dt.datetime, offset_minutes: int, due: dt.datetime) -> None:
    assert due_after(anchor, offset_minutes=offset_minutes, time_zone="America/New_York") == due
