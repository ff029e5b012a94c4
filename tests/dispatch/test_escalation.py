from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from apps.accounts.models import Program, Role
from apps.accounts.services import device_revoke
from apps.dispatch import services, tasks
from apps.dispatch.models import AlertKind, Assignment, AssignmentStatus, EventKind, SupervisorAlert, TimelineEvent
from apps.dispatch.payloads import assignment_payload
from apps.sync import nudges
from apps.sync.models import ChangeEntry
from apps.sync.scopes import program_role_scope, unit_scope
from apps.teams.models import ResponseModel, Unit, UnitStatus
from tests.conftest import CrewMember, make_crew_member
from tests.dispatch.factories import fast_timing, make_incident
from tests.live import LiveProcess, celery_worker
from tests.teams.factories import UnitFactory


def offered(program: Program, dispatcher: CrewMember, unit: Unit) -> Assignment:
    return services.assignment_offer(incident=make_incident(program, dispatcher), unit=unit, actor=dispatcher.user)


def later(seconds: int) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


def test_first_deadline_resends_the_offer_once(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment = offered(program, dispatcher, crew_member.unit)
    crew_entries = ChangeEntry.objects.filter(record_id=assignment.pk, scope=unit_scope(crew_member.unit.pk))

    first = services.sweep_deadlines(now=later(61))
    again = services.sweep_deadlines(now=later(61))

    assignment.refresh_from_db()
    assert (first.resent, first.escalated, again.resent) == (1, 0, 0)
    assert assignment.status == AssignmentStatus.OFFERED and assignment.resend_count == 1
    assert assignment.resend_due_at is None and assignment.escalate_due_at is not None
    assert crew_entries.count() == 2  # the offer, and the offer again: every device is nudged anew
    assert assignment.timeline.filter(kind=EventKind.RESENT).count() == 1


def test_deadlines_are_configured_per_priority(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    fast_timing(program, resend=5, escalate=10)
    assignment = offered(program, dispatcher, crew_member.unit)

    assert services.sweep_deadlines(now=later(6)).resent == 1
    assert assignment.escalate_due_at - assignment.offered_at == timedelta(seconds=10)  # type: ignore[operator]


def test_second_deadline_alerts_supervisors_and_offers_the_next_unit(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    next_unit = UnitFactory.create(program=program)
    assignment = offered(program, dispatcher, crew_member.unit)

    result = services.sweep_deadlines(now=later(121))

    assignment.refresh_from_db()
    assert result.escalated == 1
    assert assignment.status == AssignmentStatus.TIMED_OUT and assignment.superseded_by is not None
    successor = assignment.superseded_by
    assert (successor.unit_id, successor.status) == (next_unit.pk, AssignmentStatus.OFFERED)
    alert = SupervisorAlert.objects.get(assignment=assignment)
    assert alert.kind == AlertKind.ACK_OVERDUE
    assert set(ChangeEntry.objects.filter(record_id=alert.pk).values_list("scope", flat=True)) == {
        program_role_scope(program.pk, "dispatcher"),
        program_role_scope(program.pk, "supervisor"),
    }
    # The first crew is told to drop the call; the next crew gets it.
    crew_view = ChangeEntry.objects.filter(record_id=assignment.pk, scope=unit_scope(crew_member.unit.pk)).last()
    assert crew_view is not None and crew_view.operation == "remove" and "incident" not in crew_view.data
    assert ChangeEntry.objects.filter(record_id=successor.pk, scope=unit_scope(next_unit.pk)).exists()


def test_an_offer_to_a_crew_whose_devices_were_all_revoked_still_escalates_on_its_deadline(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Nobody of the crew can answer any more; the revocation does not touch the offer, whose
    deadlines still run: at the second the call goes to the next unit, the supervisors told."""
    assignment = offered(program, dispatcher, crew_member.unit)
    device_revoke(device=crew_member.device, revoked_by=dispatcher.user, reason="Lost tablet")
    next_unit = UnitFactory.create(program=program)

    result = services.sweep_deadlines(now=later(121))

    assignment.refresh_from_db()
    assert result.escalated == 1 and assignment.status == AssignmentStatus.TIMED_OUT
    assert assignment.superseded_by is not None and assignment.superseded_by.unit_id == next_unit.pk
    assert list(SupervisorAlert.objects.values_list("kind", flat=True)) == ["ack_overdue"]


def test_a_late_ack_after_the_re_offer_is_told_superseded(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    UnitFactory.create(program=program)
    assignment = offered(program, dispatcher, crew_member.unit)
    services.sweep_deadlines(now=later(121))

    response = crew_member.client().post(f"/api/v1/dispatch/assignments/{assignment.pk}/acknowledge/")

    assert response.status_code == 409
    assert (response.json()["code"], response.json()["errors"][0]["field"]) == ("superseded", "assignment")
    assignment.refresh_from_db()
    assert assignment.acknowledged_at is None and assignment.status == AssignmentStatus.TIMED_OUT


def test_with_no_other_unit_free_the_offer_stays_and_supervisors_hear_so(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment = offered(program, dispatcher, crew_member.unit)

    services.sweep_deadlines(now=later(121))
    again = services.sweep_deadlines(now=later(300))

    assignment.refresh_from_db()
    assert assignment.status == AssignmentStatus.OFFERED and assignment.escalate_due_at is not None  # still looking
    assert assignment_payload(assignment)["ack_due_at"] is None  # past due, as the devices were told
    assert sorted(SupervisorAlert.objects.values_list("kind", flat=True)) == ["ack_overdue", "no_unit_available"]
    assert (again.escalated, again.unit_searches) == (0, 1)
    ack = crew_member.client().post(f"/api/v1/dispatch/assignments/{assignment.pk}/acknowledge/")
    assert ack.status_code == 200  # a late ack is still welcome: nobody else could go
    # The crew answered: the search for another unit ends, and so do the alerts.
    UnitFactory.create(program=program)
    assert services.sweep_deadlines(now=later(1200)).as_dict() == services.SweepResult().as_dict()
    assert SupervisorAlert.objects.count() == 2


def test_a_call_no_unit_was_free_for_goes_to_the_first_unit_that_frees_up(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, settings: SettingsWrapper
) -> None:
    """Escalation found nobody free: the sweep keeps looking every few seconds, and the
    moment a unit is back in service the call is offered to it, the silent one timed out."""
    settings.DISPATCH_NO_UNIT_RETRY_SECONDS = 10
    assignment = offered(program, dispatcher, crew_member.unit)
    spare = UnitFactory.create(program=program, status=UnitStatus.OUT_OF_SERVICE)

    services.sweep_deadlines(now=later(121))
    assert services.sweep_deadlines(now=later(125)).unit_searches == 0  # not due again yet
    assert services.sweep_deadlines(now=later(135)).unit_searches == 1  # still nobody free
    services.unit_set_availability(unit=spare, actor=dispatcher.user, device=None, status=UnitStatus.AVAILABLE)
    found = services.sweep_deadlines(now=later(150))

    assignment.refresh_from_db()
    assert found.unit_searches == 1
    assert assignment.status == AssignmentStatus.TIMED_OUT and assignment.superseded_by is not None
    successor = assignment.superseded_by
    assert (successor.unit_id, successor.status, successor.offered_by) == (spare.pk, AssignmentStatus.OFFERED, None)
    assert successor.escalate_due_at is not None  # the new offer has deadlines of its own
    assert ChangeEntry.objects.filter(record_id=successor.pk, scope=unit_scope(spare.pk)).exists()
    crew_view = ChangeEntry.objects.filter(record_id=assignment.pk, scope=unit_scope(crew_member.unit.pk)).last()
    assert crew_view is not None and crew_view.operation == "remove"
    assert sorted(SupervisorAlert.objects.values_list("kind", flat=True)) == ["ack_overdue", "no_unit_available"]


def test_supervisors_hear_again_of_a_call_still_waiting_for_a_unit_at_a_slower_cadence(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, settings: SettingsWrapper
) -> None:
    settings.DISPATCH_NO_UNIT_RETRY_SECONDS = 10
    settings.DISPATCH_NO_UNIT_REALERT_SECONDS = 300
    assignment = offered(program, dispatcher, crew_member.unit)

    searches = sum(services.sweep_deadlines(now=later(seconds)).unit_searches for seconds in range(121, 741, 10))

    no_unit = SupervisorAlert.objects.filter(assignment=assignment, kind=AlertKind.NO_UNIT_AVAILABLE)
    assert searches == 61  # every sweep after the escalation looked again
    assert no_unit.count() == 3  # at the escalation, five minutes on and ten minutes on
    assert SupervisorAlert.objects.filter(kind=AlertKind.ACK_OVERDUE).count() == 1
    assert assignment.timeline.filter(kind=EventKind.ESCALATED).count() == 1


def test_a_call_a_dispatcher_offered_by_hand_while_it_waited_is_no_longer_searched_for(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, settings: SettingsWrapper
) -> None:
    """The dispatcher took the call in hand (here to a unit of another model, which the
    recommendation does not list): the sweep stops looking and alerting. A unit of the call's
    own model freeing up later is not sent to it as well."""
    settings.DISPATCH_NO_UNIT_RETRY_SECONDS = 10
    assignment = offered(program, dispatcher, crew_member.unit)
    other_model = UnitFactory.create(program=program, response_model=ResponseModel.MOBILE_TREATMENT)
    services.sweep_deadlines(now=later(121))
    fast_timing(program, resend=900, escalate=1800)  # the new offer's own deadlines stay out of the way

    services.assignment_offer(incident=assignment.incident, unit=other_model, actor=dispatcher.user)
    spare = UnitFactory.create(program=program)
    searched = [services.sweep_deadlines(now=later(seconds)).unit_searches for seconds in (135, 500, 800)]

    assignment.refresh_from_db()
    assert searched == [0, 0, 0]
    assert assignment.status == AssignmentStatus.OFFERED and assignment.escalate_due_at is None
    assert not Assignment.objects.filter(unit=spare).exists()
    assert SupervisorAlert.objects.filter(kind=AlertKind.NO_UNIT_AVAILABLE).count() == 1


def test_closing_a_call_that_waits_for_a_unit_ends_the_search(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment = offered(program, dispatcher, crew_member.unit)
    services.sweep_deadlines(now=later(121))

    services.incident_close(
        incident=assignment.incident, actor=dispatcher.user, device=None, unserved_reason="no_unit_available"
    )
    spare = UnitFactory.create(program=program)

    assert services.sweep_deadlines(now=later(1000)).unit_searches == 0
    assert not Assignment.objects.filter(unit=spare).exists()
    assert SupervisorAlert.objects.filter(kind=AlertKind.NO_UNIT_AVAILABLE).count() == 1


def declined(assignment: Assignment, member: CrewMember) -> Assignment:
    return services.assignment_decline(
        assignment_id=assignment.pk, user=member.user, device=member.device, reason="Vehicle breakdown"
    )


def test_a_call_declined_with_no_other_unit_free_waits_and_goes_to_the_first_unit_that_frees_up(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, settings: SettingsWrapper
) -> None:
    """The crew declined and nobody else was free: the call waits as an escalated one does.
    The sweep looks every few seconds, never offers it back to the crew that declined (free
    again now), and the moment another unit is back in service the call is offered to it."""
    settings.DISPATCH_NO_UNIT_RETRY_SECONDS = 10
    assignment = offered(program, dispatcher, crew_member.unit)
    spare = UnitFactory.create(program=program, status=UnitStatus.OUT_OF_SERVICE)

    declined(assignment, crew_member)
    assert Unit.objects.get(pk=crew_member.unit.pk).status == UnitStatus.AVAILABLE
    assert services.sweep_deadlines(now=later(5)).unit_searches == 0  # not due yet
    assert services.sweep_deadlines(now=later(15)).unit_searches == 1  # still nobody free
    services.unit_set_availability(unit=spare, actor=dispatcher.user, device=None, status=UnitStatus.AVAILABLE)
    found = services.sweep_deadlines(now=later(30))

    assert found.unit_searches == 1
    successor = Assignment.objects.get(incident=assignment.incident, status=AssignmentStatus.OFFERED)
    assert (successor.unit_id, successor.offered_by) == (spare.pk, None)
    assert successor.escalate_due_at is not None and successor.awaiting_unit_since is None  # deadlines of its own
    assert ChangeEntry.objects.filter(record_id=successor.pk, scope=unit_scope(spare.pk)).exists()
    assignment.refresh_from_db()
    assert assignment.status == AssignmentStatus.DECLINED and assignment.escalate_due_at is None  # the wait is over
    assert not Assignment.objects.filter(unit=crew_member.unit).exclude(pk=assignment.pk).exists()
    assert list(SupervisorAlert.objects.values_list("kind", flat=True)) == ["no_unit_available"]
    assert services.sweep_deadlines(now=later(60)).unit_searches == 0


def test_supervisors_hear_again_of_a_declined_call_still_waiting_for_a_unit(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, settings: SettingsWrapper
) -> None:
    settings.DISPATCH_NO_UNIT_RETRY_SECONDS = 10
    settings.DISPATCH_NO_UNIT_REALERT_SECONDS = 300
    assignment = offered(program, dispatcher, crew_member.unit)
    declined(assignment, crew_member)

    searches = sum(services.sweep_deadlines(now=later(seconds)).unit_searches for seconds in range(11, 631, 10))

    assert searches == 62  # every sweep after the decline looked again
    no_unit = SupervisorAlert.objects.filter(incident=assignment.incident, kind=AlertKind.NO_UNIT_AVAILABLE)
    assert no_unit.count() == 3  # at the decline, five minutes on and ten minutes on
    assert not Assignment.objects.exclude(pk=assignment.pk).exists()


def test_a_declined_call_a_dispatcher_offered_by_hand_is_no_longer_searched_for(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, settings: SettingsWrapper
) -> None:
    settings.DISPATCH_NO_UNIT_RETRY_SECONDS = 10
    assignment = offered(program, dispatcher, crew_member.unit)
    other_model = UnitFactory.create(program=program, response_model=ResponseModel.MOBILE_TREATMENT)
    declined(assignment, crew_member)
    fast_timing(program, resend=900, escalate=1800)  # the new offer's own deadlines stay out of the way

    services.assignment_offer(incident=assignment.incident, unit=other_model, actor=dispatcher.user)
    spare = UnitFactory.create(program=program)
    searched = [services.sweep_deadlines(now=later(seconds)).unit_searches for seconds in (15, 400, 800)]

    assert searched == [0, 0, 0]
    assert not Assignment.objects.filter(unit=spare).exists()
    assert SupervisorAlert.objects.filter(kind=AlertKind.NO_UNIT_AVAILABLE).count() == 1


def test_closing_a_declined_call_that_waits_for_a_unit_ends_the_search(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment = offered(program, dispatcher, crew_member.unit)
    declined(assignment, crew_member)

    services.incident_close(
        incident=assignment.incident, actor=dispatcher.user, device=None, unserved_reason="cancelled_by_caller"
    )
    spare = UnitFactory.create(program=program)

    assert services.sweep_deadlines(now=later(1000)).unit_searches == 0
    assert not Assignment.objects.filter(unit=spare).exists()
    assert SupervisorAlert.objects.filter(kind=AlertKind.NO_UNIT_AVAILABLE).count() == 1
    assert Assignment.objects.get(pk=assignment.pk).escalate_due_at is None


def test_a_silent_crew_that_declines_while_its_call_waits_leaves_the_call_waiting(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, settings: SettingsWrapper
) -> None:
    """Escalation found no unit and kept the offer open; its crew then declines it. The call
    still has nobody: it keeps waiting, and goes to the first unit that frees up."""
    settings.DISPATCH_NO_UNIT_RETRY_SECONDS = 10
    assignment = offered(program, dispatcher, crew_member.unit)
    services.sweep_deadlines(now=later(121))

    declined(assignment, crew_member)
    spare = UnitFactory.create(program=program)
    found = services.sweep_deadlines(now=later(140))

    assert found.unit_searches == 1
    successor = Assignment.objects.get(incident=assignment.incident, status=AssignmentStatus.OFFERED)
    assert successor.unit_id == spare.pk
    assert Assignment.objects.get(pk=assignment.pk).status == AssignmentStatus.DECLINED


def test_a_decline_of_the_offer_a_dispatcher_made_while_the_call_waited_leaves_the_call_waiting(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, settings: SettingsWrapper
) -> None:
    """The call waited on a silent offer; a dispatcher offered it by hand, which ended the
    wait; that crew declines. The silent offer, already escalated, has no deadline left and
    does not hold the call: the call waits again (the supervisors hear so) and goes to the
    first unit that frees up."""
    settings.DISPATCH_NO_UNIT_RETRY_SECONDS = 10
    silent = offered(program, dispatcher, crew_member.unit)
    services.sweep_deadlines(now=later(121))
    by_hand = make_crew_member(program, unit=UnitFactory.create(program=program, status=UnitStatus.OUT_OF_SERVICE))
    services.unit_set_availability(unit=by_hand.unit, actor=dispatcher.user, device=None, status=UnitStatus.AVAILABLE)
    hand_offer = services.assignment_offer(incident=silent.incident, unit=by_hand.unit, actor=dispatcher.user)

    declined(hand_offer, by_hand)
    spare = UnitFactory.create(program=program)
    found = services.sweep_deadlines(now=later(140))

    assert found.unit_searches == 1
    assert SupervisorAlert.objects.filter(kind=AlertKind.NO_UNIT_AVAILABLE).count() == 2  # at escalation, at decline
    successor = Assignment.objects.get(incident=silent.incident, unit=spare)
    assert successor.status == AssignmentStatus.OFFERED and successor.escalate_due_at is not None
    silent.refresh_from_db()
    assert silent.status == AssignmentStatus.TIMED_OUT and silent.superseded_by_id == successor.pk


def test_a_dispatcher_who_cancels_a_calls_last_offer_keeps_the_call_in_hand(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, settings: SettingsWrapper
) -> None:
    """Unlike a decline, a cancel is the dispatcher's own choice: it sends the call to no other
    unit and starts no wait, even of a call that waited for a unit. The call stays open on the
    board until the dispatcher offers it again or closes it."""
    settings.DISPATCH_NO_UNIT_RETRY_SECONDS = 10
    waiting = offered(program, dispatcher, crew_member.unit)
    services.sweep_deadlines(now=later(121))
    fresh = offered(program, dispatcher, UnitFactory.create(program=program))
    spare = UnitFactory.create(program=program)

    for assignment in (waiting, fresh):
        services.assignment_cancel(assignment_id=assignment.pk, actor=dispatcher.user, device=None, reason="Recalled")
    swept = [services.sweep_deadlines(now=later(seconds)) for seconds in (140, 400, 800)]

    assert [(result.unit_searches, result.escalated) for result in swept] == [(0, 0)] * 3
    assert not Assignment.objects.filter(unit=spare).exists()
    assert SupervisorAlert.objects.filter(kind=AlertKind.NO_UNIT_AVAILABLE).count() == 1  # the escalation's only
    assert not Assignment.objects.exclude(escalate_due_at=None).exists()
    waiting.incident.refresh_from_db()
    assert not waiting.incident.is_closed


def test_a_decline_by_the_crew_that_acknowledged_a_call_whose_other_offer_escalated_sends_it_on(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """A second unit's offer escalated while the first crew held the call, so it kept no
    deadline; the crew that holds it then declines. The silent offer does not hold the call:
    it goes to the next free unit, with deadlines of its own."""
    incident = make_incident(program, dispatcher)
    answering = make_crew_member(program, unit=UnitFactory.create(program=program))
    silent = services.assignment_offer(incident=incident, unit=crew_member.unit, actor=dispatcher.user)
    answered = services.assignment_offer(incident=incident, unit=answering.unit, actor=dispatcher.user)
    services.assignment_acknowledge(assignment_id=answered.pk, user=answering.user, device=answering.device)
    services.sweep_deadlines(now=later(121))
    third = UnitFactory.create(program=program)

    declined(answered, answering)

    successor = Assignment.objects.get(incident=incident, unit=third)
    assert successor.status == AssignmentStatus.OFFERED and successor.escalate_due_at is not None
    silent.refresh_from_db()
    assert silent.status == AssignmentStatus.OFFERED  # still open to a late acknowledgement


def test_an_overdue_offer_of_a_call_another_unit_has_acknowledged_is_offered_to_no_third_unit(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """As when a crew declines: the call goes to the next unit only when no unit holds it. A
    second unit's silence is told to the supervisors; a third unit is not sent to a call
    that another crew is already answering."""
    incident = make_incident(program, dispatcher)
    answering = make_crew_member(program, unit=UnitFactory.create(program=program))
    third = UnitFactory.create(program=program)
    silent = services.assignment_offer(incident=incident, unit=crew_member.unit, actor=dispatcher.user)
    answered = services.assignment_offer(incident=incident, unit=answering.unit, actor=dispatcher.user)
    services.assignment_acknowledge(assignment_id=answered.pk, user=answering.user, device=answering.device)

    first = services.sweep_deadlines(now=later(121))
    again = services.sweep_deadlines(now=later(300))

    silent.refresh_from_db()
    assert (first.escalated, again.escalated) == (1, 0)
    assert not Assignment.objects.filter(unit=third).exists()
    assert list(SupervisorAlert.objects.values_list("kind", "assignment")) == [("ack_overdue", silent.pk)]
    assert silent.status == AssignmentStatus.OFFERED and silent.escalate_due_at is None  # a late ack still counts


def test_two_unanswered_offers_of_one_call_each_escalate_to_a_further_unit(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """An offer nobody has acknowledged covers nothing: two silent units do not hold each
    other's escalation back."""
    incident = make_incident(program, dispatcher)
    first = services.assignment_offer(incident=incident, unit=crew_member.unit, actor=dispatcher.user)
    second = services.assignment_offer(
        incident=incident, unit=UnitFactory.create(program=program), actor=dispatcher.user
    )
    further = {UnitFactory.create(program=program).pk, UnitFactory.create(program=program).pk}

    assert services.sweep_deadlines(now=later(121)).escalated == 2

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == second.status == AssignmentStatus.TIMED_OUT
    assert {first.superseded_by.unit_id, second.superseded_by.unit_id} == further  # type: ignore[union-attr]


def test_missed_check_in_alerts_the_supervisor_and_a_check_in_does_not(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    fast_timing(program, checkin=600)
    quiet = offered(program, dispatcher, crew_member.unit)
    services.assignment_acknowledge(assignment_id=quiet.pk, user=crew_member.user, device=crew_member.device)
    services.assignment_update_status(
        assignment_id=quiet.pk, user=crew_member.user, device=crew_member.device, status=AssignmentStatus.ON_SCENE
    )

    early = services.sweep_deadlines(now=later(300))
    # Ten minutes on, the crew checks in just before its deadline: the next one moves out.
    Assignment.objects.filter(pk=quiet.pk).update(checkin_due_at=later(1))
    services.assignment_check_in(assignment_id=quiet.pk, user=crew_member.user, device=crew_member.device)
    still_fine = services.sweep_deadlines(now=later(300))
    missed = services.sweep_deadlines(now=later(700))

    assert (early.checkins_missed, still_fine.checkins_missed, missed.checkins_missed) == (0, 0, 1)
    assert SupervisorAlert.objects.get().kind == AlertKind.CHECKIN_MISSED
    assert quiet.timeline.filter(kind=EventKind.CHECKIN_MISSED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_act_on_each_deadline_exactly_once(program: Program, dispatcher: CrewMember) -> None:
    """Two beats (or a retried task) run sweeps at once: SKIP LOCKED hands each due row to one."""
    busy = [UnitFactory.create(program=program) for _ in range(12)]
    spare = [UnitFactory.create(program=program) for _ in range(12)]
    assignments = [offered(program, dispatcher, unit) for unit in busy]
    sweepers = 4
    barrier = threading.Barrier(sweepers)
    results: list[services.SweepResult] = []

    def sweep() -> None:
        try:
            barrier.wait()
            results.append(services.sweep_deadlines(now=later(121)))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(sweepers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(result.escalated for result in results) == len(assignments)
    assert sum(result.failed for result in results) == 0
    for assignment in assignments:
        assert TimelineEvent.objects.filter(assignment=assignment, kind=EventKind.ESCALATED).count() == 1
        assert SupervisorAlert.objects.filter(assignment=assignment, kind=AlertKind.ACK_OVERDUE).count() == 1
        assert Assignment.objects.filter(incident_id=assignment.incident_id).count() == 2
        successor = Assignment.objects.get(incident_id=assignment.incident_id, status=AssignmentStatus.OFFERED)
        assert successor.unit_id != assignment.unit_id
    # Sweeps raced for the free units; the unique index let each unit take one offer only.
    new_units = list(Assignment.objects.filter(status=AssignmentStatus.OFFERED).values_list("unit_id", flat=True))
    assert len(new_units) == len(set(new_units)) == len(spare)


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_look_once_for_each_waiting_call(program: Program, dispatcher: CrewMember) -> None:
    """Two beats over calls waiting for a unit: each call is looked at once per due time, a
    freed unit is offered one call, and the supervisors' reminder is raised once per call."""
    # The silent crews' units are of another model, which the recommendation does not list. Of
    # the call's own model, each would be free again once its call went to a spare, and would
    # take the next call ahead of the spares left whenever one sweep got there before the
    # others had begun: which units the calls go to would be down to the threads' timing.
    silent = [UnitFactory.create(program=program, response_model=ResponseModel.MOBILE_TREATMENT) for _ in range(6)]
    assignments = [offered(program, dispatcher, unit) for unit in silent]
    spare = [UnitFactory.create(program=program, status=UnitStatus.OUT_OF_SERVICE) for _ in range(3)]
    services.sweep_deadlines(now=later(121))
    for unit in spare:
        services.unit_set_availability(unit=unit, actor=dispatcher.user, device=None, status=UnitStatus.AVAILABLE)
    sweepers = 4
    barrier = threading.Barrier(sweepers)
    results: list[services.SweepResult] = []

    def sweep() -> None:
        try:
            barrier.wait()
            results.append(services.sweep_deadlines(now=later(430)))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(sweepers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(result.unit_searches for result in results) == len(assignments)
    assert sum(result.failed for result in results) == 0
    offers = list(Assignment.objects.filter(unit__in=spare).values_list("unit_id", flat=True))
    assert sorted(offers) == sorted(unit.pk for unit in spare)
    still_waiting = 0
    for assignment in assignments:
        assignment.refresh_from_db()
        alerts = SupervisorAlert.objects.filter(assignment=assignment, kind=AlertKind.NO_UNIT_AVAILABLE).count()
        if assignment.status == AssignmentStatus.TIMED_OUT:
            assert alerts == 1
        else:
            assert (assignment.status, alerts) == (AssignmentStatus.OFFERED, 2)
            still_waiting += 1
    assert still_waiting == len(assignments) - len(spare)  # the calls no spare was left for


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_look_once_for_each_declined_call(program: Program, dispatcher: CrewMember) -> None:
    """Two beats over declined calls waiting for a unit: each is looked at once per due time,
    a freed unit is offered one call, and the supervisors' reminder is raised once per call."""
    calls = []
    for _ in range(6):
        member = make_crew_member(program)
        calls.append(declined(offered(program, dispatcher, member.unit), member))
        # Out of service: the crew that declined one call is not free for the next either.
        services.unit_set_availability(
            unit=member.unit, actor=dispatcher.user, device=None, status=UnitStatus.OUT_OF_SERVICE
        )
    assert not Assignment.objects.filter(status=AssignmentStatus.OFFERED).exists()
    spare = [UnitFactory.create(program=program) for _ in range(3)]
    sweepers = 4
    barrier = threading.Barrier(sweepers)
    results: list[services.SweepResult] = []

    def sweep() -> None:
        try:
            barrier.wait()
            results.append(services.sweep_deadlines(now=later(310)))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(sweepers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(result.unit_searches for result in results) == len(calls)
    assert sum(result.failed for result in results) == 0
    offers = list(Assignment.objects.filter(unit__in=spare).values_list("unit_id", flat=True))
    assert sorted(offers) == sorted(unit.pk for unit in spare)
    for call in calls:
        alerts = SupervisorAlert.objects.filter(incident=call.incident, kind=AlertKind.NO_UNIT_AVAILABLE).count()
        if Assignment.objects.filter(incident=call.incident, unit__in=spare).exists():
            assert alerts == 1
        else:
            assert alerts == 2


def make_due(assignment: Assignment) -> None:
    past = timezone.now() - timedelta(seconds=1)
    Assignment.objects.filter(pk=assignment.pk).update(resend_due_at=None, escalate_due_at=past)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_sweep(worker: LiveProcess, program: Program, dispatcher: CrewMember) -> None:
    first = UnitFactory.create(program=program)
    UnitFactory.create(program=program)
    assignment = offered(program, dispatcher, first)
    make_due(assignment)

    result = tasks.sweep_deadlines.apply_async(ignore_result=False).get(timeout=30)

    assert result["escalated"] == 1
    assignment.refresh_from_db()
    assert assignment.status == AssignmentStatus.TIMED_OUT


def test_beat_runs_the_sweep_every_few_seconds() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["dispatch-sweep-deadlines"]

    assert entry["task"] == tasks.sweep_deadlines.name
    assert 0 < entry["schedule"] <= 10  # type: ignore[operator]


def _kill_worker_and_its_children(worker: LiveProcess) -> None:
    pid = worker.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    os.kill(pid, signal.SIGKILL)  # the parent first, so it cannot re-queue the task itself
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    worker.process.wait(10)


def _blocked_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_escalation_is_redelivered_and_escalates_once(
    live_server_logs: Path, program: Program, dispatcher: CrewMember
) -> None:
    queue = f"dispatch-kill-{os.getpid()}"
    first = UnitFactory.create(program=program)
    next_unit = UnitFactory.create(program=program)
    assignment = offered(program, dispatcher, first)
    make_due(assignment)

    with celery_worker(live_server_logs, name="doomed-worker", queues=queue) as doomed:
        # Hold the next unit's row, so the worker blocks half-way through the escalation:
        # alert and timeline written, the new offer waiting on the unit.
        with transaction.atomic():
            Unit.objects.select_for_update().get(pk=next_unit.pk)
            task = tasks.sweep_deadlines.apply_async(queue=queue)
            deadline = time.monotonic() + 30
            while _blocked_backends() == 0:
                assert time.monotonic() < deadline, doomed.log()
                time.sleep(0.05)
            _kill_worker_and_its_children(doomed)
        # The killed worker's transaction never commits: nothing of the escalation is left.
        _wait_until_lockable(assignment)
        assert SupervisorAlert.objects.count() == 0
        assert Assignment.objects.get(pk=assignment.pk).status == AssignmentStatus.OFFERED

    time.sleep(1.5)  # older than the visibility timeout of the worker that takes over
    with celery_worker(live_server_logs, name="heir-worker", queues=queue, CELERY_VISIBILITY_TIMEOUT="1") as heir:
        deadline = time.monotonic() + 30
        while Assignment.objects.get(pk=assignment.pk).status == AssignmentStatus.OFFERED:
            assert time.monotonic() < deadline, heir.log()
            time.sleep(0.1)
        assert task.id in heir.log()  # the very task the killed worker held, delivered again

    assert TimelineEvent.objects.filter(assignment=assignment, kind=EventKind.ESCALATED).count() == 1
    assert SupervisorAlert.objects.filter(kind=AlertKind.ACK_OVERDUE).count() == 1
    successor = Assignment.objects.get(incident_id=assignment.incident_id, status=AssignmentStatus.OFFERED)
    assert successor.unit_id == next_unit.pk


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_search_for_a_declined_call_leaves_it_to_the_next_worker(
    live_server_logs: Path, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    queue = f"dispatch-kill-search-{os.getpid()}"
    assignment = declined(offered(program, dispatcher, crew_member.unit), crew_member)
    spare = UnitFactory.create(program=program)
    make_due(assignment)

    with celery_worker(live_server_logs, name="doomed-worker", queues=queue) as doomed:
        # Hold the free unit's row, so the worker blocks half-way through offering it the call.
        with transaction.atomic():
            Unit.objects.select_for_update().get(pk=spare.pk)
            task = tasks.sweep_deadlines.apply_async(queue=queue)
            deadline = time.monotonic() + 30
            while _blocked_backends() == 0:
                assert time.monotonic() < deadline, doomed.log()
                time.sleep(0.05)
            _kill_worker_and_its_children(doomed)
        _wait_until_lockable(assignment)
        assert not Assignment.objects.filter(unit=spare).exists()  # nothing of the look is left
        assert Assignment.objects.get(pk=assignment.pk).escalate_due_at is not None  # still due

    time.sleep(1.5)
    with celery_worker(live_server_logs, name="heir-worker", queues=queue, CELERY_VISIBILITY_TIMEOUT="1") as heir:
        deadline = time.monotonic() + 30
        while not Assignment.objects.filter(unit=spare).exists():
            assert time.monotonic() < deadline, heir.log()
            time.sleep(0.1)
        assert task.id in heir.log()

    successor = Assignment.objects.get(unit=spare)
    assert (successor.incident_id, successor.status) == (assignment.incident_id, AssignmentStatus.OFFERED)
    assert Assignment.objects.filter(incident_id=assignment.incident_id).count() == 2
    assert Assignment.objects.get(pk=assignment.pk).escalate_due_at is None


def _wait_until_lockable(assignment: Assignment, timeout: float = 15) -> None:
    """PostgreSQL ends the dead worker's session when it next talks to it; wait for its locks to go."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with transaction.atomic():
                Assignment.objects.select_for_update(nowait=True).get(pk=assignment.pk)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_an_escalation_reaches_supervisors_through_notifications_too(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    from apps.notifications.models import Notification

    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    assignment = offered(program, dispatcher, crew_member.unit)

    services.sweep_deadlines(now=later(121))

    alert = SupervisorAlert.objects.get(assignment=assignment)
    # The supervisors' text links to the incident in the workspace; the dispatchers' names no page.
    to_supervisors = Notification.objects.get(dedupe_key=f"dispatch-alert-{alert.pk}")
    to_dispatchers = Notification.objects.get(dedupe_key=f"dispatch-alert-{alert.pk}-dispatchers")
    for notification in (to_supervisors, to_dispatchers):
        assert (notification.kind, notification.urgency) == ("dispatch.alert", "urgent")
        assert notification.link == f"/dispatch/incidents/{assignment.incident_id}"
    assert set(to_supervisors.recipients.values_list("user_id", flat=True)) == {supervisor.user.pk}
    assert set(to_dispatchers.recipients.values_list("user_id", flat=True)) == {dispatcher.user.pk}
    assert to_supervisors.web_link == f"/admin/dispatch/incident/{assignment.incident_id}/change/"
    assert to_dispatchers.web_link == ""


def _refuse_escalations() -> None:
    """A real failure in the escalation's own transaction: the database refuses its timeline event."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION test_refuse_escalated_event() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'escalated events refused by the test'; END $$;
            CREATE TRIGGER test_refuse_escalated_event BEFORE INSERT ON dispatch_timelineevent
            FOR EACH ROW WHEN (NEW.kind = 'escalated') EXECUTE FUNCTION test_refuse_escalated_event();
            """
        )


def test_an_escalation_that_keeps_failing_backs_off_is_surfaced_once_and_is_never_dropped(
    program: Program,
    dispatcher: CrewMember,
    crew_member: CrewMember,
    settings: SettingsWrapper,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.DISPATCH_SWEEP_RETRY_MAX_SECONDS = 60
    next_unit = UnitFactory.create(program=program)
    assignment = offered(program, dispatcher, crew_member.unit)
    _refuse_escalations()
    start = later(121)

    # Ten minutes of beats, one every five seconds.
    tried = [
        seconds
        for seconds in range(0, 600, 5)
        if services.sweep_deadlines(now=start + timedelta(seconds=seconds)).failed
    ]

    # Tried again after 5, 10, 20, 40 s, then every minute: not at every beat.
    assert tried == [0, 5, 15, 35, 75, 135, 195, 255, 315, 375, 435, 495, 555]
    assignment.refresh_from_db()
    assert assignment.status == AssignmentStatus.OFFERED and assignment.escalate_due_at is not None  # never dropped
    failing = SupervisorAlert.objects.filter(kind=AlertKind.ESCALATION_FAILING)
    assert list(failing.values_list("assignment", flat=True)) == [assignment.pk]  # told once, to act by hand
    assert ChangeEntry.objects.filter(record_id=failing.get().pk, scope=program_role_scope(program.pk, "supervisor"))
    assert any(record.levelname == "ERROR" and "keeps failing" in record.getMessage() for record in caplog.records)

    # The cause is mended: the next try escalates as it always would have.
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_refuse_escalated_event ON dispatch_timelineevent")
    assert services.sweep_deadlines(now=start + timedelta(seconds=615)).escalated == 1
    assignment.refresh_from_db()
    assert assignment.status == AssignmentStatus.TIMED_OUT
    assert assignment.superseded_by is not None and assignment.superseded_by.unit_id == next_unit.pk
    assert SupervisorAlert.objects.filter(kind=AlertKind.ACK_OVERDUE).count() == 1
    assert failing.count() == 1


def test_a_sweep_stopped_by_its_soft_time_limit_stops_at_the_deadline_it_was_on(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soft time limit is the task's warning before its worker is killed: the sweep stops
    there, the deadline it was acting on rolled back and still due (not a failure: no backoff,
    no alert), and the later deadlines left as they were for the next beat."""
    UnitFactory.create(program=program)  # free for the escalation's re-offer
    first = offered(program, dispatcher, crew_member.unit)
    second = offered(program, dispatcher, UnitFactory.create(program=program))
    escalate = services._escalate
    acted_on: list[Assignment] = []

    def stopped_midway(assignment: Assignment, now: datetime) -> None:
        acted_on.append(assignment)
        escalate(assignment, now)  # its work done, uncommitted, when the limit strikes
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(services, "_escalate", stopped_midway)

    with pytest.raises(SoftTimeLimitExceeded):
        services.sweep_deadlines(now=later(121))

    assert [assignment.pk for assignment in acted_on] == [first.pk]
    for assignment in (first, second):
        row = Assignment.objects.get(pk=assignment.pk)
        assert (row.status, row.escalate_due_at) == (AssignmentStatus.OFFERED, assignment.escalate_due_at)
        assert (row.sweep_failures, row.sweep_failing_deadline) == (0, "")
    assert not SupervisorAlert.objects.exists()

    monkeypatch.setattr(services, "_escalate", escalate)
    assert services.sweep_deadlines(now=later(121)).as_dict() == {
        "resent": 0,
        "escalated": 2,
        "checkins_missed": 0,
        "unit_searches": 0,
        "failed": 0,
    }


def test_a_sweep_stopped_by_its_soft_time_limit_while_alerting_of_a_failing_escalation_stops_there(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deadline that failed for the third time in a row alerts the supervisors; the soft
    time limit striking then stops the sweep, the failure not counted (it is tried and
    counted again at the next beat) and the later deadlines left as they were."""
    failing = offered(program, dispatcher, crew_member.unit)
    other = offered(program, dispatcher, UnitFactory.create(program=program))
    Assignment.objects.filter(pk=failing.pk).update(sweep_failing_deadline="escalate_due_at", sweep_failures=2)
    escalate = services._escalate
    alert = services.alert_supervisors

    def failing_first(assignment: Assignment, now: datetime) -> None:
        if assignment.pk == failing.pk:
            raise RuntimeError("a fault of this deadline's own")
        escalate(assignment, now)

    def stopped_when_failing(**arguments: Any) -> Any:
        if arguments["kind"] == AlertKind.ESCALATION_FAILING:
            raise SoftTimeLimitExceeded()
        return alert(**arguments)

    monkeypatch.setattr(services, "_escalate", failing_first)
    monkeypatch.setattr(services, "alert_supervisors", stopped_when_failing)

    with pytest.raises(SoftTimeLimitExceeded):
        services.sweep_deadlines(now=later(121))

    row = Assignment.objects.get(pk=failing.pk)
    assert (row.sweep_failures, row.escalate_due_at, row.sweep_failure_alerted_at) == (2, failing.escalate_due_at, None)
    row = Assignment.objects.get(pk=other.pk)
    assert (row.status, row.escalate_due_at) == (AssignmentStatus.OFFERED, other.escalate_due_at)
    assert not SupervisorAlert.objects.exists()


@pytest.mark.django_db(transaction=True)  # each deadline's transaction commits, and its nudges go out
def test_a_sweep_stopped_by_its_soft_time_limit_while_nudging_devices_stops_after_that_deadline(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soft time limit may strike while the devices are told of a deadline's change, after
    its commit (a slow Redis, say): the sweep stops there, the escalation it committed stands,
    and the later deadlines are the next beat's."""
    UnitFactory.create(program=program)  # free for the escalation's re-offer
    first = offered(program, dispatcher, crew_member.unit)
    second = offered(program, dispatcher, UnitFactory.create(program=program))
    nudged: list[list[str]] = []

    async def stopped(scopes: list[str]) -> None:
        nudged.append(scopes)
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(nudges, "send_nudges", stopped)

    with pytest.raises(SoftTimeLimitExceeded):
        services.sweep_deadlines(now=later(121))

    assert len(nudged) == 1
    assert Assignment.objects.get(pk=first.pk).status == AssignmentStatus.TIMED_OUT
    row = Assignment.objects.get(pk=second.pk)
    assert (row.status, row.escalate_due_at) == (AssignmentStatus.OFFERED, second.escalate_due_at)
    assert list(SupervisorAlert.objects.values_list("assignment", flat=True)) == [first.pk]
