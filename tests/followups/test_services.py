"""Plans from the schedule, outcomes flowing back, step changes, and the reminder claim."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from apps.accounts.models import Program, Role
from apps.audit.models import AuditEvent
from apps.care.models import Encounter, Referral, ReferralTaskEvent
from apps.care.services import encounter_reassign, referral_outcome_record, referral_task_status_change
from apps.common.api.errors import DomainError
from apps.followups import selectors, services
from apps.followups.models import (
    ContactAttempt,
    FollowUpPlan,
    FollowUpStep,
    PlanTrigger,
    Reminder,
    ReminderKind,
    ScheduleStep,
    StepEvent,
    StepStatus,
)
from apps.notifications.models import Channel, Notification, NotificationAttempt, NotificationPreference
from apps.notifications.services import attempt_send, preference_set, sms_inbound_record
from apps.sync.models import Conflict, SyncedRecord
from apps.sync.scopes import program_role_scope, unit_scope
from apps.teams.models import UnitMember
from tests.accounts.factories import MembershipFactory
from tests.care.factories import encounter, pushed
from tests.conftest import CrewMember, in_the_admin, make_crew_member
from tests.followups.factories import case_manager, referral, steps_of
from tests.sync.helpers import SimDevice, run_while_another_writer_holds
from tests.teams.factories import UnitFactory

pytestmark = pytest.mark.django_db(transaction=True)

ENDED = dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)


def test_a_referral_gets_the_default_schedule_owned_by_the_programs_case_manager(crew_member: CrewMember) -> None:
    manager = case_manager(crew_member)

    referral_id = referral(crew_member)

    steps = steps_of(referral_id)
    assert [(s.key, s.due_at - ENDED) for s in steps] == [
        ("first_contact", dt.timedelta(hours=24)),
        ("connection_check", dt.timedelta(hours=72)),
        ("outcome_7d", dt.timedelta(days=7)),
        ("outcome_30d", dt.timedelta(days=30)),
    ]
    assert {s.owner_id for s in steps} == {manager.user.pk}
    assert FollowUpPlan.objects.get().trigger == PlanTrigger.REFERRAL
    # Two reminders a step: to the owner when due, to the supervisors past the margin.
    assert Reminder.objects.filter(kind=ReminderKind.OWNER_DUE).count() == 4
    overdue = Reminder.objects.get(step=steps[0], kind=ReminderKind.SUPERVISOR_OVERDUE)
    assert overdue.due_at == steps[0].due_at + dt.timedelta(minutes=240)


def test_a_second_referral_or_a_repush_does_not_plan_twice(crew_member: CrewMember) -> None:
    referral_id = referral(crew_member)
    encounter_id = Referral.objects.get(pk=referral_id).encounter_id
    pushed(crew_member, "care.referral", {"encounter_id": str(encounter_id), "service_type": "housing"})

    assert FollowUpPlan.objects.count() == 1
    assert len(steps_of(referral_id)) == 4


def test_a_programs_own_schedule_replaces_the_default(crew_member: CrewMember) -> None:
    program = crew_member.unit.program
    ScheduleStep.objects.create(
        program=program,
        trigger=PlanTrigger.COMMUNITY,
        key="same_day",
        label="Same-day call",
        offset_minutes=180,
        overdue_margin_minutes=60,
        completed_by_outcomes=[],
    )

    encounter(crew_member, ended_at="2026-11-20T15:00:00+00:00", disposition="resolved_on_scene")
    # A transported person gets no community plan.
    encounter(crew_member, ended_at="2026-11-20T15:00:00+00:00", disposition="transported_voluntary")

    [plan] = FollowUpPlan.objects.all()
    assert plan.trigger == PlanTrigger.COMMUNITY
    assert [(s.key, s.due_at - ENDED, s.owner_id) for s in plan.steps.all()] == [
        ("same_day", dt.timedelta(hours=3), None)
    ]


def test_an_outcome_pushed_from_a_tablet_completes_the_matching_steps(crew_member: CrewMember) -> None:
    referral_id = referral(crew_member)
    event_id = uuid.uuid4()

    result = pushed(
        crew_member,
        "care.referral_outcome",
        {"referral_id": str(referral_id), "outcome": "connected", "observed_at": "2026-11-21T10:00:00+00:00"},
        record_id=event_id,
    )

    assert result["status"] == "applied"
    by_key = {s.key: s for s in steps_of(referral_id)}
    assert by_key["first_contact"].status == StepStatus.COMPLETED
    assert by_key["first_contact"].closing_outcome_id == event_id
    assert by_key["connection_check"].status == StepStatus.COMPLETED
    assert (by_key["outcome_7d"].status, by_key["outcome_30d"].status) == (StepStatus.PENDING, StepStatus.PENDING)
    # Their reminders will not fire.
    assert not Reminder.objects.filter(step=by_key["first_contact"], cancelled_at=None).exists()


def test_unable_to_reach_is_an_outcome_that_closes_nothing(crew_member: CrewMember) -> None:
    referral_id = referral(crew_member)
    manager = case_manager(crew_member, of_program=False)

    referral_outcome_record(
        referral=Referral.objects.get(pk=referral_id),
        outcome="unable_to_reach",
        observed_at=timezone.now(),
        details="",
        actor=manager.user,
        accessor=in_the_admin(manager.user),
    )

    referral_row = Referral.objects.get(pk=referral_id)
    assert (referral_row.status, referral_row.task_status) == ("unable_to_reach", "requested")
    assert {s.status for s in steps_of(referral_id)} == {StepStatus.PENDING}


def test_a_reason_longer_than_the_limit_is_refused_by_the_service_and_nothing_changes(crew_member: CrewMember) -> None:
    manager = case_manager(crew_member)
    first, *_ = steps_of(referral(crew_member))
    too_long = "x" * (services.REASON_MAX_LENGTH + 1)

    with pytest.raises(DomainError) as refused:
        services.step_mark_missed(step=first, actor=manager.user, reason=too_long, accessor=in_the_admin(manager.user))

    assert (refused.value.field, refused.value.code) == ("reason", "max_length")
    first.refresh_from_db()
    assert first.status == StepStatus.PENDING
    assert not StepEvent.objects.filter(step=first, action="missed").exists()


def test_a_step_is_completed_rescheduled_or_missed_and_each_is_in_its_history(crew_member: CrewMember) -> None:
    manager = case_manager(crew_member)
    first, second, third, _ = steps_of(referral(crew_member))
    later = timezone.now() + dt.timedelta(days=2)

    services.step_reschedule(
        step=first,
        actor=manager.user,
        due_at=later,
        reason="Person asked for Friday",
        accessor=in_the_admin(manager.user),
    )
    services.step_mark_missed(
        step=second, actor=manager.user, reason="Phone disconnected", accessor=in_the_admin(manager.user)
    )
    services.step_complete(step=third, actor=manager.user, accessor=in_the_admin(manager.user))

    first.refresh_from_db()
    assert first.due_at == later and first.status == StepStatus.PENDING
    # The old due reminder is cancelled, a new one waits for the new time.
    reminders = Reminder.objects.filter(step=first, kind=ReminderKind.OWNER_DUE)
    assert sorted((r.due_at == later, r.cancelled_at is None) for r in reminders) == [(False, False), (True, True)]
    history = StepEvent.objects.filter(step__in=[first, second, third]).order_by("id")
    assert list(history.values_list("action", flat=True)) == [
        "planned",
        "planned",
        "planned",
        "rescheduled",
        "missed",
        "completed",
    ]


def test_the_claim_hands_each_due_reminder_to_one_sweep_only(crew_member: CrewMember) -> None:
    steps_of(referral(crew_member))
    now = ENDED + dt.timedelta(days=8)  # first contact, connection check and the 7-day step are due

    first = services.reminders_claim_due(now=now)
    second = services.reminders_claim_due(now=now)

    assert len(first) == 6  # three owner reminders and three supervisor alerts
    assert second == []


def test_a_stop_reply_opts_the_number_out_and_the_appointment_reminder_is_not_sent(crew_member: CrewMember) -> None:
    person_id = uuid.uuid4()
    pushed(
        crew_member,
        "care.person",
        {"unit_id": str(crew_member.unit.pk), "phone_number": "+12125550101"},
        record_id=person_id,
    )
    referral_id = referral(
        crew_member,
        encounter_fields={"person_id": str(person_id)},
        consent_to_contact=True,
        appointment_at=(timezone.now() + dt.timedelta(hours=2)).isoformat(),
    )
    reminder = Reminder.objects.get(referral_id=referral_id, kind=ReminderKind.PERSON_APPOINTMENT)

    assert sms_inbound_record(from_number="+12125550101", body=" stop ") == "opted_out"
    assert services.reminder_send(reminder_id=reminder.pk) == "opted out"

    assert NotificationPreference.objects.get(phone_number="+12125550101").sms_allowed is False
    assert not Notification.objects.filter(kind="followup.appointment").exists()
    reminder.refresh_from_db()
    assert (reminder.sent_at, reminder.cancel_reason) == (None, "opted out")


def test_deleting_an_encounter_cancels_its_open_follow_up_and_every_reminder_it_planned(
    crew_member: CrewMember,
) -> None:
    """An encounter deleted from a device (made in error) leaves no one chasing it: its
    pending steps are cancelled in their history, no one is reminded of them, and the person
    gets no appointment text for its referral."""
    person_id = uuid.uuid4()
    pushed(
        crew_member,
        "care.person",
        {"unit_id": str(crew_member.unit.pk), "phone_number": "+12125550102"},
        record_id=person_id,
    )
    referral_id = referral(
        crew_member,
        encounter_fields={"person_id": str(person_id)},
        consent_to_contact=True,
        appointment_at=(timezone.now() + dt.timedelta(hours=30)).isoformat(),
    )
    first, *later = steps_of(referral_id)
    manager = case_manager(crew_member).user
    services.step_complete(step=first, actor=manager, accessor=in_the_admin(manager))
    encounter_id = Referral.objects.get(pk=referral_id).encounter_id
    version = SyncedRecord.objects.get(record_id=encounter_id).version

    deleted = pushed(crew_member, "care.encounter", {}, op="delete", record_id=encounter_id, base_version=version)

    assert deleted["status"] == "applied"
    assert [step.status for step in steps_of(referral_id)] == [StepStatus.COMPLETED] + [StepStatus.CANCELLED] * len(
        later
    )
    assert all(
        step.events.order_by("-id").values_list("action", "reason", "actor")[0]
        == ("cancelled", "encounter deleted", crew_member.user.pk)
        for step in later
    )
    unsent = Reminder.objects.filter(sent_at=None, cancelled_at=None)
    assert not unsent.filter(step__in=later).exists()
    assert not unsent.filter(referral_id=referral_id).exists()
    appointment = Reminder.objects.get(referral_id=referral_id, kind=ReminderKind.PERSON_APPOINTMENT)
    assert services.reminder_send(reminder_id=appointment.pk) == "already_done"
    assert not Notification.objects.filter(kind="followup.appointment").exists()


def test_no_appointment_reminder_without_consent_to_contact(crew_member: CrewMember) -> None:
    referral_id = referral(crew_member, appointment_at=(timezone.now() + dt.timedelta(hours=30)).isoformat())

    assert not Reminder.objects.filter(referral_id=referral_id).exists()


def test_an_overdue_step_alerts_the_supervisors(crew_member: CrewMember) -> None:
    supervisor = MembershipFactory.create(program=crew_member.unit.program, role=Role.SUPERVISOR).user
    [step, *_] = steps_of(referral(crew_member))
    alert = Reminder.objects.get(step=step, kind=ReminderKind.SUPERVISOR_OVERDUE)

    assert services.reminder_send(reminder_id=alert.pk) == "sent"
    assert services.reminder_send(reminder_id=alert.pk) == "already_done"

    notification = Notification.objects.get(kind="followup.overdue")
    assert list(notification.recipients.values_list("user_id", flat=True)) == [supervisor.pk]


def test_a_contact_attempt_made_offline_syncs_and_is_never_rewritten(
    crew_member: CrewMember, outsider: CrewMember
) -> None:
    [step, *_] = steps_of(referral(crew_member))
    attempt_id = uuid.uuid4()
    fields = {
        "step_id": str(step.pk),
        "method": "phone",
        "result": "left_message",
        "notes": "Left a callback number.",
        "attempted_at": "2026-11-21T16:00:00+00:00",
    }

    created = pushed(crew_member, "followups.contact_attempt", fields, record_id=attempt_id)
    edited = pushed(
        crew_member,
        "followups.contact_attempt",
        {"result": "reached"},
        op="update",
        record_id=attempt_id,
        base_version=1,
    )
    foreign = pushed(outsider, "followups.contact_attempt", fields)

    assert created["status"] == "applied"
    assert (edited["status"], edited["error"]["code"]) == ("quarantined", "append_only")
    assert foreign["status"] != "applied"
    attempt = ContactAttempt.objects.get()
    assert (attempt.pk, attempt.result, attempt.step_id, attempt.created_by_id) == (
        attempt_id,
        "left_message",
        step.pk,
        crew_member.user.pk,
    )


def test_a_colleagues_change_of_a_contact_attempt_without_a_base_is_refused_not_kept_as_a_conflict(
    crew_member: CrewMember,
) -> None:
    """A contact attempt is append-only whatever the change's base: a colleague's edit of its
    notes with no base (or a delete) is refused as append_only, not held as a conflict a case
    manager could never resolve in the device's favour."""
    [step, *_] = steps_of(referral(crew_member))
    attempt_id = uuid.uuid4()
    fields = {
        "step_id": str(step.pk),
        "method": "phone",
        "result": "left_message",
        "notes": "Left a callback number.",
        "attempted_at": "2026-11-21T16:00:00+00:00",
    }
    pushed(crew_member, "followups.contact_attempt", fields, record_id=attempt_id)
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)

    edit = pushed(teammate, "followups.contact_attempt", {"notes": "Reached."}, op="update", record_id=attempt_id)
    delete = pushed(teammate, "followups.contact_attempt", {}, op="delete", record_id=attempt_id)

    assert [(r["status"], r["error"]["code"]) for r in (edit, delete)] == [("quarantined", "append_only")] * 2
    assert not Conflict.objects.exists()
    attempt = ContactAttempt.objects.get()
    assert (attempt.notes, attempt.is_deleted) == ("Left a callback number.", False)


def test_an_attempt_dated_in_the_future_is_refused_over_the_api_and_kept_for_review_from_a_device(
    crew_member: CrewMember,
) -> None:
    [step, *_] = steps_of(referral(crew_member))
    next_year = (timezone.now() + dt.timedelta(days=365)).isoformat()

    over_the_api = (
        case_manager(crew_member)
        .client()
        .post(
            f"/api/v1/followups/steps/{step.pk}/attempts/",
            {"method": "phone", "result": "reached", "attempted_at": next_year},
            format="json",
        )
    )
    synced = pushed(
        crew_member,
        "followups.contact_attempt",
        {"step_id": str(step.pk), "method": "phone", "result": "reached", "attempted_at": next_year},
    )

    assert (over_the_api.status_code, over_the_api.json()["errors"][0]["field"]) == (400, "attempted_at")
    assert (synced["status"], synced["error"]["code"], synced["error"]["field"]) == (
        "quarantined",
        "attempt_in_the_future",
        "fields.attempted_at",
    )
    assert not ContactAttempt.objects.exists()


def test_an_attempt_posted_again_under_its_id_is_the_one_recorded_and_other_content_is_refused(
    crew_member: CrewMember,
) -> None:
    [step, *_] = steps_of(referral(crew_member))
    attempt_id = _attempt_made_offline(crew_member, step, "")  # synced from the tablet first
    url = f"/api/v1/followups/steps/{step.pk}/attempts/"
    same = {"id": str(attempt_id), "method": "phone", "result": "reached", "attempted_at": "2026-11-21T10:00:00Z"}
    manager = case_manager(crew_member).client()

    again = manager.post(url, same, format="json")
    other = manager.post(url, {**same, "result": "no_answer"}, format="json")

    assert (again.status_code, again.json()["id"]) == (201, str(attempt_id))
    assert (other.status_code, other.json()["code"], other.json()["errors"][0]["field"]) == (409, "id_in_use", "id")
    assert [(a.pk, a.result) for a in ContactAttempt.objects.all()] == [(attempt_id, "reached")]


def _attempt_made_offline(member: CrewMember, step: FollowUpStep, notes: str) -> uuid.UUID:
    attempt_id = uuid.uuid4()
    fields = {
        "step_id": str(step.pk),
        "method": "phone",
        "result": "reached",
        "notes": notes,
        "attempted_at": "2026-11-21T10:00:00+00:00",
    }
    assert pushed(member, "followups.contact_attempt", fields, record_id=attempt_id)["status"] == "applied"
    return attempt_id


def test_a_reassigned_encounters_contact_attempts_leave_the_old_crews_devices_for_the_new_crews(
    program: Program, crew_member: CrewMember
) -> None:
    colleague = make_crew_member(program, unit=crew_member.unit)
    referral_id = referral(colleague)
    notes = ["Talked about the overdose last week.", "Staying with her sister now."]
    attempts = {
        _attempt_made_offline(colleague, step, text): text
        for step, text in zip(steps_of(referral_id)[:2], notes, strict=True)
    }
    old_crew = SimDevice(crew_member)
    before, cursor = old_crew.pull()
    new_unit = UnitFactory.create(program=program)
    new_crew = SimDevice(make_crew_member(program, unit=new_unit))
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    encounter_id = Referral.objects.get(pk=referral_id).encounter_id

    encounter_reassign(
        encounter=Encounter.objects.get(pk=encounter_id),
        unit=new_unit,
        actor=supervisor.user,
        accessor=in_the_admin(supervisor.user),
    )
    removed, _ = old_crew.pull(cursor)
    gained, _ = new_crew.pull()

    def attempts_in(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [entry for entry in entries if entry["type"] == "followups.contact_attempt"]

    assert {entry["id"] for entry in attempts_in(before)} == {str(attempt_id) for attempt_id in attempts}
    assert sorted((e["id"], e["op"], e.get("reason")) for e in attempts_in(removed)) == sorted(
        (str(attempt_id), "remove", "out_of_scope") for attempt_id in attempts
    )
    assert sorted((e["id"], e["op"], e["data"]["notes"], e["data"]["unit_id"]) for e in attempts_in(gained)) == sorted(
        (str(attempt_id), "upsert", notes, str(new_unit.pk)) for attempt_id, notes in attempts.items()
    )


def test_a_reassigned_encounters_follow_up_moves_to_the_new_unit_and_its_crew_works_it(
    program: Program, crew_member: CrewMember
) -> None:
    referral_id = referral(crew_member)
    steps = steps_of(referral_id)
    attempt_id = _attempt_made_offline(crew_member, steps[0], "Left a callback number.")
    referral_task_status_change(
        referral=Referral.objects.get(pk=referral_id),
        to_status="received",
        reason="",
        actor=crew_member.user,
        accessor=in_the_admin(crew_member.user),
    )
    new_crew = make_crew_member(program)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    encounter_id = Referral.objects.get(pk=referral_id).encounter_id

    encounter_reassign(
        encounter=Encounter.objects.get(pk=encounter_id),
        unit=new_crew.unit,
        actor=supervisor.user,
        accessor=in_the_admin(supervisor.user),
    )

    assert FollowUpPlan.objects.get(encounter_id=encounter_id).unit_id == new_crew.unit.pk
    assert {step.unit_id for step in steps_of(referral_id)} == {new_crew.unit.pk}
    assert ContactAttempt.objects.get(pk=attempt_id).unit_id == new_crew.unit.pk
    assert list(ReferralTaskEvent.objects.values_list("unit_id", flat=True)) == [new_crew.unit.pk]
    assert SyncedRecord.objects.get(record_id=attempt_id).scopes == [
        program_role_scope(program.pk, Role.CASE_MANAGER),
        program_role_scope(program.pk, Role.SUPERVISOR),
        unit_scope(new_crew.unit.pk),
    ]
    assert list(selectors.steps_visible_to(user=crew_member.user)) == []
    assert [step.pk for step in selectors.steps_visible_to(user=new_crew.user)] == [step.pk for step in steps]


def test_a_contact_attempt_made_while_its_encounter_moves_is_placed_in_the_new_unit(
    program: Program, crew_member: CrewMember
) -> None:
    """An attempt takes its step's unit: read before the move committed, it would land with the
    old crew, notes and all, and never reach the new one. From a device or a case manager."""
    referral_id = referral(crew_member)
    steps = steps_of(referral_id)
    encounter_id = Referral.objects.get(pk=referral_id).encounter_id
    new_unit = UnitFactory.create(program=program)
    UnitMember.objects.create(unit=new_unit, user=crew_member.user)  # on both crews: the attempt applies
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    manager = case_manager(crew_member)

    def reassign() -> None:
        encounter_reassign(
            encounter=Encounter.objects.get(pk=encounter_id),
            unit=new_unit,
            actor=supervisor.user,
            accessor=in_the_admin(supervisor.user),
        )

    def reassign_again() -> None:  # a move takes the encounter to another unit than the one it is in
        encounter_reassign(
            encounter=Encounter.objects.get(pk=encounter_id),
            unit=newer_unit,
            actor=supervisor.user,
            accessor=in_the_admin(supervisor.user),
        )

    def from_the_device() -> uuid.UUID:
        return _attempt_made_offline(crew_member, steps[0], "Reached her at her sister's.")

    def by_the_case_manager() -> uuid.UUID:
        attempt = services.attempt_record(
            step=steps[1],  # as the request read it, before the move
            actor=manager.user,
            method="phone",
            result="no_answer",
            notes="",
            attempted_at=timezone.now(),
            accessor=in_the_admin(manager.user),
        )
        return attempt.pk

    synced, device_waited = run_while_another_writer_holds(encounter_id, reassign, from_the_device)
    placed_by_the_device = (
        ContactAttempt.objects.get(pk=synced).unit_id,
        SyncedRecord.objects.get(record_id=synced).scopes,
    )
    newer_unit = UnitFactory.create(program=program)
    recorded, manager_waited = run_while_another_writer_holds(encounter_id, reassign_again, by_the_case_manager)

    assert (device_waited, manager_waited) == (True, True)
    assert placed_by_the_device[0] == new_unit.pk
    assert unit_scope(new_unit.pk) in placed_by_the_device[1]
    assert ContactAttempt.objects.get(pk=recorded).unit_id == newer_unit.pk
    assert unit_scope(newer_unit.pk) in SyncedRecord.objects.get(record_id=recorded).scopes


def test_a_crew_members_attempt_posted_while_its_encounter_moves_to_another_crew_is_refused(
    program: Program, crew_member: CrewMember
) -> None:
    """The old crew may no longer work a step once its encounter has moved: an attempt their
    request found before the move committed would be recorded with the new crew, by someone
    who can no longer see it, as a device's attempt made in the same moment is refused."""
    referral_id = referral(crew_member)
    [step, *_] = steps_of(referral_id)
    encounter_id = Referral.objects.get(pk=referral_id).encounter_id
    new_unit = UnitFactory.create(program=program)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    attempt = {"method": "phone", "result": "reached", "attempted_at": timezone.now().isoformat()}

    def reassign() -> None:
        encounter_reassign(
            encounter=Encounter.objects.get(pk=encounter_id),
            unit=new_unit,
            actor=supervisor.user,
            accessor=in_the_admin(supervisor.user),
        )

    def by_the_old_crew() -> Any:
        return crew_member.client().post(f"/api/v1/followups/steps/{step.pk}/attempts/", attempt, format="json")

    response, waited = run_while_another_writer_holds(encounter_id, reassign, by_the_old_crew)

    assert waited
    assert not ContactAttempt.objects.exists()
    assert response.status_code == 404


def test_a_chunk_of_reminders_is_sent_once_however_often_its_task_runs(crew_member: CrewMember) -> None:
    manager = case_manager(crew_member)
    supervisor = MembershipFactory.create(program=crew_member.unit.program, role=Role.SUPERVISOR).user
    for _ in range(3):
        steps_of(referral(crew_member))
    now = ENDED + dt.timedelta(days=2)  # each plan's first contact is due, and overdue for the supervisors
    ids = services.reminders_claim_due(now=now)

    first = services.reminders_send(reminder_ids=ids)
    again = services.reminders_send(reminder_ids=[*ids, 0])

    assert first == {"sent": 6}
    assert again == {"already_done": 6, "gone": 1}
    due = Notification.objects.filter(kind="followup.due")
    overdue = Notification.objects.filter(kind="followup.overdue")
    assert (due.count(), overdue.count()) == (3, 3)
    assert set(due.values_list("recipients__user_id", flat=True)) == {manager.user.pk, None}  # and the email contact
    assert set(overdue.values_list("recipients__user_id", flat=True)) == {supervisor.pk}
    for reminder in Reminder.objects.filter(pk__in=ids):
        assert reminder.sent_at is not None and reminder.notification_id is not None
        notification = Notification.objects.get(pk=reminder.notification_id)
        assert notification.dedupe_key == f"followups.reminder.{reminder.pk}"


def test_a_due_reminder_whose_owner_left_the_program_alerts_the_supervisors(crew_member: CrewMember) -> None:
    manager = case_manager(crew_member)
    supervisor = MembershipFactory.create(program=crew_member.unit.program, role=Role.SUPERVISOR).user
    [step, *_] = steps_of(referral(crew_member))
    manager.user.memberships.all().delete()
    reminder = Reminder.objects.get(step=step, kind=ReminderKind.OWNER_DUE)

    assert services.reminder_send(reminder_id=reminder.pk) == "sent"

    notification = Notification.objects.get(kind="followup.unowned")
    assert list(notification.recipients.values_list("user_id", flat=True)) == [supervisor.pk]
    assert not Notification.objects.filter(recipients__user=manager.user).exists()


def test_an_attempt_posted_under_the_id_of_another_synced_record_is_refused_and_that_record_is_untouched(
    crew_member: CrewMember,
) -> None:
    """Sync knows a record by its id alone: an attempt taking the id of the crew's encounter
    would replace the encounter on every device that holds it."""
    referral_id = referral(crew_member)
    [step, *_] = steps_of(referral_id)
    encounter_id = Referral.objects.get(pk=referral_id).encounter_id
    before = SyncedRecord.objects.get(record_id=encounter_id)
    attempt = {"id": str(encounter_id), "method": "phone", "result": "reached", "attempted_at": "2026-11-21T10:00:00Z"}

    response = (
        case_manager(crew_member).client().post(f"/api/v1/followups/steps/{step.pk}/attempts/", attempt, format="json")
    )

    after = SyncedRecord.objects.get(record_id=encounter_id)
    assert (after.record_type, after.version) == ("care.encounter", before.version)
    assert response.status_code == 409
    assert (response.json()["code"], response.json()["errors"][0]["field"]) == ("id_in_use", "id")
    assert not ContactAttempt.objects.exists()


def test_a_step_rescheduled_back_to_an_earlier_due_time_is_reminded_then(crew_member: CrewMember) -> None:
    """The reminders cancelled by the first move must not stand in for the ones planned for the same time again."""
    manager = case_manager(crew_member)
    first = steps_of(referral(crew_member))[0]
    friday = (timezone.now() + dt.timedelta(days=2)).replace(microsecond=0)
    monday = friday + dt.timedelta(days=3)

    services.step_reschedule(
        step=first,
        actor=manager.user,
        due_at=friday,
        reason="Person asked for Friday",
        accessor=in_the_admin(manager.user),
    )
    services.step_reschedule(
        step=first,
        actor=manager.user,
        due_at=monday,
        reason="Person asked for Monday",
        accessor=in_the_admin(manager.user),
    )
    services.step_reschedule(
        step=first, actor=manager.user, due_at=friday, reason="Friday after all", accessor=in_the_admin(manager.user)
    )

    pending = Reminder.objects.filter(step=first, sent_at=None, cancelled_at=None)
    assert sorted((r.kind, r.due_at - friday) for r in pending) == [
        (ReminderKind.OWNER_DUE, dt.timedelta(0)),
        (ReminderKind.SUPERVISOR_OVERDUE, dt.timedelta(minutes=first.overdue_margin_minutes)),
    ]
    [due] = [r.pk for r in pending if r.kind == ReminderKind.OWNER_DUE]
    assert due in services.reminders_claim_due(now=friday + dt.timedelta(minutes=1))


def test_an_appointment_moved_and_moved_back_is_reminded(crew_member: CrewMember) -> None:
    person_id = uuid.uuid4()
    pushed(
        crew_member,
        "care.person",
        {"unit_id": str(crew_member.unit.pk), "phone_number": "+12125550101"},
        record_id=person_id,
    )
    tuesday = (timezone.now() + dt.timedelta(days=5)).replace(microsecond=0)
    referral_id = referral(
        crew_member,
        encounter_fields={"person_id": str(person_id)},
        consent_to_contact=True,
        appointment_at=tuesday.isoformat(),
    )
    for version, moment in enumerate([tuesday + dt.timedelta(days=1), tuesday], start=1):
        result = pushed(
            crew_member,
            "care.referral",
            {"appointment_at": moment.isoformat()},
            op="update",
            record_id=referral_id,
            base_version=version,
        )
        assert result["status"] == "applied", result

    pending = Reminder.objects.filter(referral_id=referral_id, sent_at=None, cancelled_at=None)
    assert [r.due_at for r in pending] == [tuesday - dt.timedelta(hours=24)]


def test_a_due_reminder_is_not_emailed_to_an_owner_who_turned_email_off(crew_member: CrewMember) -> None:
    """The email goes to the owner's address as a contact; the owner's own "no email" must still hold."""
    manager = case_manager(crew_member)
    preference_set(user=manager.user, email_allowed=False)
    [step, *_] = steps_of(referral(crew_member))
    reminder = Reminder.objects.get(step=step, kind=ReminderKind.OWNER_DUE)

    assert services.reminder_send(reminder_id=reminder.pk) == "sent"

    notification = Notification.objects.get(kind="followup.due")
    assert notification.recipients.filter(user=manager.user).exists()  # in the app, as ever
    for attempt in NotificationAttempt.objects.filter(notification=notification, channel=Channel.EMAIL):
        attempt_send(attempt_id=str(attempt.pk))
    assert not NotificationAttempt.objects.filter(
        notification=notification, channel=Channel.EMAIL, sent_at__isnull=False
    ).exists()


def test_a_reminder_whose_send_fails_holds_back_none_of_the_others_in_its_chunk(crew_member: CrewMember) -> None:
    """One reminder that cannot be sent (here its program's clock names no time zone) must not
    roll back the chunk it was claimed with: the others go out now, it stays claimed for a retry."""
    supervisor = MembershipFactory.create(program=crew_member.unit.program, role=Role.SUPERVISOR).user
    person_id = uuid.uuid4()
    pushed(
        crew_member,
        "care.person",
        {"unit_id": str(crew_member.unit.pk), "phone_number": "+12125550123"},
        record_id=person_id,
    )
    referral_id = referral(
        crew_member,
        encounter_fields={"person_id": str(person_id)},
        consent_to_contact=True,
        appointment_at=(timezone.now() + dt.timedelta(hours=2)).isoformat(),
    )
    appointment = Reminder.objects.get(referral_id=referral_id, kind=ReminderKind.PERSON_APPOINTMENT)
    [step, *_] = steps_of(referral_id)
    alert = Reminder.objects.get(step=step, kind=ReminderKind.SUPERVISOR_OVERDUE)
    Program.objects.filter(pk=crew_member.unit.program.pk).update(time_zone="America/Nowhere")

    outcomes = services.reminders_send(reminder_ids=[appointment.pk, alert.pk])

    assert outcomes == {"sent": 1, "failed": 1}
    alert.refresh_from_db()
    assert alert.sent_at is not None
    assert list(Notification.objects.get(kind="followup.overdue").recipients.values_list("user_id", flat=True)) == [
        supervisor.pk
    ]
    appointment.refresh_from_db()
    assert (appointment.sent_at, appointment.cancelled_at) == (None, None)  # left for the next sweep to retry
    assert not Notification.objects.filter(kind="followup.appointment").exists()


def test_a_chunk_of_reminders_stopped_by_its_soft_time_limit_is_not_sent_again_one_at_a_time(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soft time limit is the task's warning before its worker is killed: the chunk stops
    there, sending none of it (not again one reminder at a time, which would run on until the
    kill), and its reminders stay due and claimed, for the sweep to take again."""
    MembershipFactory.create(program=crew_member.unit.program, role=Role.SUPERVISOR)
    case_manager(crew_member)
    for _ in range(2):
        steps_of(referral(crew_member))
    ids = services.reminders_claim_due(now=ENDED + dt.timedelta(days=2))
    send_to_staff = services._send_to_staff
    calls: list[int] = []

    def stopped_once(staff: Any) -> dict[int, str]:
        calls.append(len(staff))
        if len(calls) == 1:
            raise SoftTimeLimitExceeded()
        return send_to_staff(staff)

    monkeypatch.setattr(services, "_send_to_staff", stopped_once)

    with pytest.raises(SoftTimeLimitExceeded):
        services.reminders_send(reminder_ids=ids)

    assert calls == [4]
    assert not Notification.objects.exists()
    for reminder in Reminder.objects.filter(pk__in=ids):
        assert (reminder.sent_at, reminder.cancelled_at) == (None, None)
        assert reminder.claimed_at is not None


def test_reminders_sent_one_at_a_time_stop_at_the_soft_time_limit(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk that failed is sent one reminder at a time; the soft time limit striking there
    stops it: those sent before stay sent, the one it was on is not taken for failed, and those
    after it are left alone, all due for the sweep to take again."""
    MembershipFactory.create(program=crew_member.unit.program, role=Role.SUPERVISOR)
    case_manager(crew_member)
    for _ in range(2):
        steps_of(referral(crew_member))
    ids = sorted(services.reminders_claim_due(now=ENDED + dt.timedelta(days=2)))
    send_to_staff = services._send_to_staff
    calls: list[list[int]] = []

    def failing_then_stopped(staff: Any) -> dict[int, str]:
        calls.append([reminder.pk for reminder, _ in staff])
        if len(calls) == 1:
            raise RuntimeError("the chunk fails")
        if len(calls) == 3:
            raise SoftTimeLimitExceeded()
        return send_to_staff(staff)

    monkeypatch.setattr(services, "_send_to_staff", failing_then_stopped)

    with pytest.raises(SoftTimeLimitExceeded):
        services.reminders_send(reminder_ids=ids)

    assert calls == [ids, ids[:1], ids[1:2]]
    sent = Reminder.objects.filter(pk__in=ids, sent_at__isnull=False)
    assert list(sent.values_list("pk", flat=True)) == ids[:1]
    assert not Reminder.objects.filter(pk__in=ids, cancelled_at__isnull=False).exists()
    assert Notification.objects.count() == 1


def _written_since(first_event: int) -> set[tuple[str, str, uuid.UUID, uuid.UUID | None]]:
    return {
        (event.record_type, event.action, event.record_id, event.device_id)
        for event in AuditEvent.objects.filter(pk__gt=first_event)
    }


def _last_event() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_what_a_pushed_change_sets_off_in_the_follow_up_is_in_the_audit_trail_as_its_writers(
    crew_member: CrewMember,
) -> None:
    """A referral pushed from a tablet plans the follow-up; its outcome completes steps and
    changes the referral's status; the encounter deleted cancels the rest. Only the pushed
    record was audited: who caused the plan, a step's closing or the status left no trace."""
    device = crew_member.device.pk
    before_plan = _last_event()
    referral_id = referral(crew_member)
    planned = steps_of(referral_id)
    plan = FollowUpPlan.objects.get()
    written_by_referral = _written_since(before_plan)

    before_outcome = _last_event()
    pushed(
        crew_member,
        "care.referral_outcome",
        {"referral_id": str(referral_id), "outcome": "connected", "observed_at": "2026-11-21T10:00:00+00:00"},
    )
    completed = [step.pk for step in steps_of(referral_id) if step.status == StepStatus.COMPLETED]
    written_by_outcome = _written_since(before_outcome)

    before_delete = _last_event()
    encounter_id = Referral.objects.get(pk=referral_id).encounter_id
    pushed(crew_member, "care.encounter", {}, op="delete", record_id=encounter_id, base_version=1)
    cancelled = [step.pk for step in steps_of(referral_id) if step.status == StepStatus.CANCELLED]
    written_by_delete = _written_since(before_delete)

    assert {("followups.plan", "create", plan.pk, device)} | {
        ("followups.step", "create", step.pk, device) for step in planned
    } <= written_by_referral
    assert completed and {("followups.step", "update", step, device) for step in completed} <= written_by_outcome
    assert ("care.referral", "update", referral_id, device) in written_by_outcome
    assert cancelled and {("followups.step", "update", step, device) for step in cancelled} <= written_by_delete
