"""Writes of follow-ups: plans from the schedule, step changes, attempts, and reminders.

Care calls ``on_*`` (registered in AppConfig.ready) inside its writing transaction. Every step
change locks the step row first; the reminder sender locks the step before the reminder too,
so the two never deadlock and a step closed just before its reminder fires sends nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from functools import partial
from uuid import UUID

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.urls import reverse
from django.utils import timezone
from rest_framework import status as http_status

from apps.accounts.models import Membership, Program, Role, User
from apps.audit.models import AccessAction
from apps.audit.services import Accessor, record_access, record_access_to
from apps.care.models import Disposition, Encounter, Referral, ReferralOutcomeEvent, ReferralStatus, ReferralTaskStatus
from apps.common.api.errors import DomainError
from apps.followups import selectors
from apps.followups.models import (
    CaseManagerAssignment,
    ContactAttempt,
    FollowUpPlan,
    FollowUpStep,
    PlanTrigger,
    Reminder,
    ReminderKind,
    StepAction,
    StepEvent,
    StepStatus,
)
from apps.followups.schedule import due_after, schedule_for
from apps.notifications import services as notifications
from apps.notifications.models import Channel, NotificationPreference, Urgency
from apps.teams.models import Unit

logger = logging.getLogger(__name__)

STEP_RECORD = "followups.step"  # a step's health record type in the audit trail (apps.followups.apps)
PLAN_RECORD = "followups.plan"  # a plan's

# Dispositions after which the person stays in the community (not transported anywhere).
COMMUNITY_DISPOSITIONS = frozenset({Disposition.RESOLVED_ON_SCENE, Disposition.REFERRED, Disposition.DECLINED_SERVICES})
# Outcomes after which an appointment reminder to the person makes no sense any more.
APPOINTMENT_SETTLED = frozenset({ReferralStatus.ATTENDED, ReferralStatus.DECLINED, ReferralStatus.NO_SHOW})


class StepClosed(DomainError):
    status_code = http_status.HTTP_409_CONFLICT
    code = "step_closed"


def _invalid(field: str, detail: str, code: str = "invalid") -> DomainError:
    return DomainError(detail, code=code, field=field, status_code=http_status.HTTP_400_BAD_REQUEST)


# --- plans -------------------------------------------------------------------------------------


def owner_for(*, program_id: UUID, zone_id: UUID | None) -> UUID | None:
    """The case manager of the zone, else of the program; None leaves the step to the supervisors."""
    assignments: dict[UUID | None, UUID] = dict(
        CaseManagerAssignment.objects.filter(program_id=program_id).values_list("zone_id", "case_manager_id")
    )
    if zone_id is not None and zone_id in assignments:
        return assignments[zone_id]
    return assignments.get(None)


def plan_for_encounter(
    *, encounter: Encounter, trigger: PlanTrigger, anchor_at: dt.datetime, accessor: Accessor | None = None
) -> FollowUpPlan | None:
    """Plan the encounter's follow-up once; a second call (another referral, a re-push) changes
    nothing. What it writes is ``accessor``'s in the audit trail (P8), where one is given: the
    writer of the change that set it off."""
    existing = FollowUpPlan.objects.filter(encounter_id=encounter.pk)
    if existing.exists():
        if trigger == PlanTrigger.REFERRAL:
            # The person stayed in the community and was referred: the plan is the referral's now
            # (its steps stay as planned).
            changed = existing.exclude(trigger=trigger)
            changed_ids = list(changed.values_list("pk", flat=True))
            changed.update(trigger=trigger)
            _audit_writes(accessor, AccessAction.UPDATE, PLAN_RECORD, changed_ids, encounter.program_id)
        return None
    unit = Unit.objects.only("home_zone_id").get(pk=encounter.unit_id)
    time_zone = Program.objects.values_list("time_zone", flat=True).get(pk=encounter.program_id)
    owner_id = owner_for(program_id=encounter.program_id, zone_id=unit.home_zone_id)
    planned: list[UUID] = []
    try:
        with transaction.atomic():
            plan = FollowUpPlan.objects.create(
                program_id=encounter.program_id,
                unit_id=encounter.unit_id,
                encounter_id=encounter.pk,
                person_id=encounter.person_id,
                trigger=trigger,
                anchor_at=anchor_at,
            )
            for entry in schedule_for(program_id=encounter.program_id, trigger=trigger):
                step = FollowUpStep.objects.create(
                    program_id=plan.program_id,
                    unit_id=plan.unit_id,
                    plan=plan,
                    key=entry.key,
                    label=entry.label,
                    due_at=due_after(anchor_at, offset_minutes=entry.offset_minutes, time_zone=time_zone),
                    owner_id=owner_id,
                    overdue_margin_minutes=entry.overdue_margin_minutes,
                    completed_by_outcomes=list(entry.completed_by_outcomes),
                )
                StepEvent.objects.create(step=step, action=StepAction.PLANNED, due_at=step.due_at)
                _plan_reminders(step)
                planned.append(step.pk)
    except IntegrityError:  # a concurrent push planned it first
        return None
    _audit_writes(accessor, AccessAction.CREATE, PLAN_RECORD, [plan.pk], plan.program_id)
    _audit_writes(accessor, AccessAction.CREATE, STEP_RECORD, planned, plan.program_id)
    return plan


def _audit_writes(
    accessor: Accessor | None, action: AccessAction, record_type: str, record_ids: list[UUID], program_id: UUID
) -> None:
    if accessor is not None:
        record_access(
            accessor=accessor, action=action, record_type=record_type, record_ids=record_ids, program_id=program_id
        )


def _plan_reminders(step: FollowUpStep) -> None:
    Reminder.objects.bulk_create(
        [
            Reminder(program_id=step.program_id, step=step, kind=ReminderKind.OWNER_DUE, due_at=step.due_at),
            Reminder(
                program_id=step.program_id,
                step=step,
                kind=ReminderKind.SUPERVISOR_OVERDUE,
                due_at=step.due_at + dt.timedelta(minutes=step.overdue_margin_minutes),
            ),
        ],
        ignore_conflicts=True,
    )


def _cancel_reminders(step: FollowUpStep, *, reason: str) -> int:
    return Reminder.objects.filter(step=step, sent_at=None, cancelled_at=None).update(
        cancelled_at=timezone.now(), cancel_reason=reason
    )


def on_encounter_saved(encounter: Encounter, *, actor: User | None, accessor: Accessor | None = None) -> None:
    if encounter.is_deleted:
        _cancel_follow_up(encounter, actor=actor, accessor=accessor)
        return
    if encounter.ended_at is None or encounter.disposition not in COMMUNITY_DISPOSITIONS:
        return
    plan_for_encounter(
        encounter=encounter, trigger=PlanTrigger.COMMUNITY, anchor_at=encounter.ended_at, accessor=accessor
    )


def _cancel_follow_up(encounter: Encounter, *, actor: User | None, accessor: Accessor | None) -> None:
    """An encounter deleted (made in error) is chased by no one: its open steps are cancelled
    in their history, and nothing planned for it reminds anyone, the person included."""
    now = timezone.now()
    # In id order, as every step change and the reminder sender lock them.
    steps = list(
        FollowUpStep.objects.select_for_update()
        .filter(plan__encounter_id=encounter.pk, status=StepStatus.PENDING)
        .order_by("pk")
    )
    for step in steps:
        FollowUpStep.objects.filter(pk=step.pk).update(
            status=StepStatus.CANCELLED, closed_at=now, closed_by=actor, updated_at=now
        )
        StepEvent.objects.create(
            step=step, action=StepAction.CANCELLED, actor=actor, due_at=step.due_at, reason="encounter deleted"
        )
        _cancel_reminders(step, reason="encounter deleted")
    _audit_writes(accessor, AccessAction.UPDATE, STEP_RECORD, [step.pk for step in steps], encounter.program_id)
    Reminder.objects.filter(
        referral__encounter_id=encounter.pk, kind=ReminderKind.PERSON_APPOINTMENT, sent_at=None, cancelled_at=None
    ).update(cancelled_at=now, cancel_reason="encounter deleted")


def on_referral_saved(referral: Referral, *, actor: User | None, accessor: Accessor | None = None) -> None:
    if referral.is_deleted:
        return
    encounter = referral.encounter
    plan_for_encounter(
        encounter=encounter,
        trigger=PlanTrigger.REFERRAL,
        anchor_at=encounter.ended_at or timezone.now(),
        accessor=accessor,
    )
    _plan_appointment_reminder(referral)


def on_encounter_reassigned(encounter: Encounter, *, actor: User | None, accessor: Accessor) -> None:
    """The plan and its steps follow their encounter to its new unit (the unit's crew works them).

    The steps are locked as every step change locks them; the plan and each step moved are
    writes of the accessor's in the audit trail, as care's records moved with them are. Their contact
    attempts, synced, are moved, published and audited by care with the encounter
    (``attempts_under_encounter``).
    """
    now = timezone.now()
    plans = FollowUpPlan.objects.filter(encounter_id=encounter.pk)
    plan_ids = list(plans.values_list("pk", flat=True))
    plans.update(unit_id=encounter.unit_id, updated_at=now)
    steps = FollowUpStep.objects.filter(plan__encounter_id=encounter.pk)
    # In id order, as the step changes and the reminder sender lock them, so none of them deadlocks with this.
    locked = list(steps.select_for_update(of=("self",)).order_by("pk").values_list("pk", flat=True))
    FollowUpStep.objects.filter(pk__in=locked).update(unit_id=encounter.unit_id, updated_at=now)
    for record_type, record_ids in ((PLAN_RECORD, plan_ids), (STEP_RECORD, locked)):
        record_access(
            accessor=accessor,
            action=AccessAction.UPDATE,
            record_type=record_type,
            record_ids=record_ids,
            program_id=encounter.program_id,
        )


def _plan_appointment_reminder(referral: Referral) -> None:
    """One reminder to the person per appointment time, only with their consent to be contacted."""
    unsent = Reminder.objects.filter(
        referral_id=referral.pk, kind=ReminderKind.PERSON_APPOINTMENT, sent_at=None, cancelled_at=None
    )
    if not referral.consent_to_contact or referral.appointment_at is None:
        unsent.update(cancelled_at=timezone.now(), cancel_reason="no appointment or no consent to contact")
        return
    due_at = referral.appointment_at - dt.timedelta(hours=settings.FOLLOWUPS_APPOINTMENT_LEAD_HOURS)
    unsent.exclude(due_at=due_at).update(cancelled_at=timezone.now(), cancel_reason="appointment moved")
    Reminder.objects.bulk_create(
        [
            Reminder(
                program_id=referral.program_id,
                referral_id=referral.pk,
                kind=ReminderKind.PERSON_APPOINTMENT,
                due_at=due_at,
            )
        ],
        ignore_conflicts=True,
    )


def on_outcome_recorded(event: ReferralOutcomeEvent, *, actor: User | None, accessor: Accessor | None = None) -> None:
    """An outcome (recorded offline or by a case manager) completes the steps it answers."""
    referral = event.referral
    steps = list(
        FollowUpStep.objects.select_for_update()
        .filter(
            plan__encounter_id=referral.encounter_id,
            status=StepStatus.PENDING,
            completed_by_outcomes__contains=[event.outcome],
        )
        .order_by("pk")
    )
    now = timezone.now()
    for step in steps:
        FollowUpStep.objects.filter(pk=step.pk).update(
            status=StepStatus.COMPLETED, closed_at=now, closed_by=actor, closing_outcome=event, updated_at=now
        )
        StepEvent.objects.create(
            step=step, action=StepAction.COMPLETED, actor=actor, due_at=step.due_at, reason=f"outcome {event.outcome}"
        )
        _cancel_reminders(step, reason="step completed")
    _audit_writes(accessor, AccessAction.UPDATE, STEP_RECORD, [step.pk for step in steps], referral.program_id)
    if event.outcome in APPOINTMENT_SETTLED:
        Reminder.objects.filter(
            referral_id=referral.pk, kind=ReminderKind.PERSON_APPOINTMENT, sent_at=None, cancelled_at=None
        ).update(cancelled_at=now, cancel_reason=f"outcome {event.outcome}")


# --- step changes ------------------------------------------------------------------------------


def _lock_open(step: FollowUpStep) -> FollowUpStep:
    locked = FollowUpStep.objects.select_for_update().get(pk=step.pk)
    if not locked.is_open:
        raise StepClosed(f"The step is already {locked.get_status_display().lower()}.", field="status")
    return locked


# Why a step was missed, moved or completed early: a sentence, not a case note (sealed at
# rest, so the database no longer bounds it).
REASON_MAX_LENGTH = 300


def _check_reason(text: str, *, field: str, missing: str | None) -> None:
    if missing is not None and not text.strip():
        raise _invalid(field, missing, code="required")
    if len(text) > REASON_MAX_LENGTH:
        raise _invalid(field, f"Keep it to {REASON_MAX_LENGTH} characters.", code="max_length")


@transaction.atomic
def step_complete(*, step: FollowUpStep, actor: User, note: str = "", accessor: Accessor) -> FollowUpStep:
    _check_reason(note, field="note", missing=None)
    step = _lock_open(step)
    now = timezone.now()
    step.status, step.closed_at, step.closed_by = StepStatus.COMPLETED, now, actor
    step.save(update_fields=["status", "closed_at", "closed_by", "updated_at"])
    StepEvent.objects.create(step=step, action=StepAction.COMPLETED, actor=actor, due_at=step.due_at, reason=note)
    _cancel_reminders(step, reason="step completed")
    record_access_to(accessor=accessor, action=AccessAction.UPDATE, record_type=STEP_RECORD, record=step)
    return step


@transaction.atomic
def step_mark_missed(*, step: FollowUpStep, actor: User, reason: str, accessor: Accessor) -> FollowUpStep:
    _check_reason(reason, field="reason", missing="Say why the step was missed.")
    step = _lock_open(step)
    now = timezone.now()
    step.status, step.closed_at, step.closed_by, step.missed_reason = StepStatus.MISSED, now, actor, reason
    step.save(update_fields=["status", "closed_at", "closed_by", "missed_reason", "updated_at"])
    StepEvent.objects.create(step=step, action=StepAction.MISSED, actor=actor, due_at=step.due_at, reason=reason)
    _cancel_reminders(step, reason="step missed")
    record_access_to(accessor=accessor, action=AccessAction.UPDATE, record_type=STEP_RECORD, record=step)
    return step


@transaction.atomic
def step_reschedule(
    *, step: FollowUpStep, actor: User, due_at: dt.datetime, reason: str, accessor: Accessor
) -> FollowUpStep:
    if due_at <= timezone.now():
        raise _invalid("due_at", "The new due time is in the past.", code="due_at_in_past")
    _check_reason(reason, field="reason", missing="Say why the step is rescheduled.")
    step = _lock_open(step)
    # The supervisor's alert comes the step's margin after it, and must still be a date.
    if due_at > dt.datetime.max.replace(tzinfo=dt.UTC) - dt.timedelta(minutes=step.overdue_margin_minutes):
        raise _invalid("due_at", "The new due time is too far ahead.", code="due_at_out_of_range")
    step.due_at = due_at
    step.save(update_fields=["due_at", "updated_at"])
    StepEvent.objects.create(step=step, action=StepAction.RESCHEDULED, actor=actor, due_at=due_at, reason=reason)
    _cancel_reminders(step, reason="step rescheduled")
    _plan_reminders(step)
    record_access_to(accessor=accessor, action=AccessAction.UPDATE, record_type=STEP_RECORD, record=step)
    return step


# Also the answer for an id that is no one's: told apart, an id would be known as an account
# of another program.
OWNER_NOT_CASE_MANAGER = "The owner must be a case manager of the step's program."


@transaction.atomic
def step_assign(*, step: FollowUpStep, actor: User, owner: User, accessor: Accessor) -> FollowUpStep:
    if not Membership.objects.filter(user=owner, program_id=step.program_id, role=Role.CASE_MANAGER).exists():
        raise _invalid("owner_id", OWNER_NOT_CASE_MANAGER)
    step = _lock_open(step)
    step.owner = owner
    step.save(update_fields=["owner", "updated_at"])
    StepEvent.objects.create(step=step, action=StepAction.ASSIGNED, actor=actor, due_at=step.due_at)
    record_access_to(accessor=accessor, action=AccessAction.UPDATE, record_type=STEP_RECORD, record=step)
    return step


# A device's clock may run a little ahead of the server's; further ahead, the time is wrong.
ATTEMPT_CLOCK_SKEW = dt.timedelta(minutes=5)
ATTEMPT_IN_THE_FUTURE = "An attempt cannot be in the future."
CONTACT_ATTEMPT = "followups.contact_attempt"  # its synced record type


def attempt_is_in_the_future(attempted_at: dt.datetime) -> bool:
    """The rule of every path an attempt is recorded by (the API, a device's sync)."""
    return attempted_at > timezone.now() + ATTEMPT_CLOCK_SKEW


@transaction.atomic
def attempt_record(
    *,
    step: FollowUpStep,
    actor: User,
    method: str,
    result: str,
    notes: str,
    attempted_at: dt.datetime,
    accessor: Accessor,
    attempt_id: UUID | None = None,
) -> ContactAttempt:
    """A case manager records a try at the contact; a step stays open until completed or missed.

    With the id of an attempt already recorded (a retry, or one a device synced first), the
    same attempt is that one, returned as it stands; other content under its id is refused.
    The attempt is the accessor's create in the audit trail, in its transaction (P8): when
    the row cannot be written, neither is the attempt. A retry writes nothing and answers
    with the attempt as it stands: a read, as a retried intake is.
    """
    if attempt_is_in_the_future(attempted_at):
        raise _invalid("attempted_at", ATTEMPT_IN_THE_FUTURE)
    from apps.sync import selectors as sync_selectors
    from apps.sync.services import lock_records, publish_record

    attempt = ContactAttempt(
        program_id=step.program_id,
        step=step,
        created_by=actor,
        method=method,
        result=result,
        notes=notes,
        attempted_at=attempted_at,
    )
    if attempt_id is not None:
        attempt.id = attempt_id
    # With the step's, as a device's attempt and a move of the encounter take it: the attempt
    # is placed in the step's unit as it stands once no move is under way, by someone who may
    # still work it there (a move of the encounter takes the step from its old crew).
    lock_records([step.pk, attempt.pk])
    unit_id = selectors.steps_visible_to(user=actor).filter(pk=step.pk).values_list("unit_id", flat=True).first()
    if unit_id is None:
        raise DomainError("No such step.", code="not_found", status_code=http_status.HTTP_404_NOT_FOUND)
    attempt.unit_id = unit_id
    # An id another synced record holds (a note, an encounter) is not this attempt's to take.
    if sync_selectors.synced_type_of(attempt.pk) not in (None, CONTACT_ATTEMPT):
        raise DomainError(
            "This id is another record's; give the attempt an id of its own.", code="id_in_use", field="id"
        )
    recorded = ContactAttempt.objects.filter(pk=attempt.pk).first()
    if recorded is not None:
        if (recorded.step_id, recorded.method, recorded.result, recorded.notes, recorded.attempted_at) != (
            step.pk,
            method,
            result,
            notes,
            attempted_at,
        ):
            raise DomainError(
                "An attempt with this id is recorded already, with other content; it stands.",
                code="id_in_use",
                field="id",
            )
        record_access_to(accessor=accessor, action=AccessAction.READ, record_type=CONTACT_ATTEMPT, record=recorded)
        return recorded
    attempt.save(force_insert=True)
    publish_record(type_name=CONTACT_ATTEMPT, record=attempt, user=actor)
    record_access_to(accessor=accessor, action=AccessAction.CREATE, record_type=CONTACT_ATTEMPT, record=attempt)
    return attempt


# --- reminders -----------------------------------------------------------------------------

CLAIM_SQL = """
UPDATE followups_reminder SET claimed_at = %(now)s
WHERE id = ANY(ARRAY(
    SELECT id FROM followups_reminder
    WHERE sent_at IS NULL AND cancelled_at IS NULL AND due_at <= %(now)s
      AND (claimed_at IS NULL OR claimed_at < %(stale)s)
    ORDER BY due_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
RETURNING id
"""


# The ids are gathered into an array first (an InitPlan), so the UPDATE finds its rows by
# primary key instead of joining against the whole table.


def reminders_claim_due(*, now: dt.datetime, limit: int | None = None) -> list[int]:
    """Claim due reminders: each is claimed by exactly one sweep, however many beats run.

    Rows another sweep has locked are skipped, and a claimed row no longer matches, so no two
    sweeps claim the same reminder. A claim whose task was lost is retaken after the re-dispatch
    window; sending is idempotent, so that is safe.
    """
    stale = now - dt.timedelta(seconds=settings.FOLLOWUPS_REDISPATCH_AFTER_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_SQL, {"now": now, "stale": stale, "limit": limit or settings.FOLLOWUPS_SWEEP_BATCH})
        return [row[0] for row in cursor.fetchall()]


def reminders_dispatch_due(*, now: dt.datetime | None = None) -> int:
    """The periodic sweep: claim what is due and queue its sends, a chunk of ids per task.

    It claims in batches of ``FOLLOWUPS_CLAIM_BATCH``, each in its own short transaction whose
    chunks are queued as soon as it commits: the first reminders go out while the sweep is
    still claiming the rest, and no transaction holds thousands of row locks for long.
    """
    now = now or timezone.now()
    queue = settings.FOLLOWUPS_TASK_QUEUE
    chunk = settings.FOLLOWUPS_SEND_CHUNK
    batch = max(settings.FOLLOWUPS_CLAIM_BATCH, chunk)
    total = 0
    while total < settings.FOLLOWUPS_SWEEP_BATCH:
        with transaction.atomic():
            ids = reminders_claim_due(now=now, limit=min(batch, settings.FOLLOWUPS_SWEEP_BATCH - total))
            if ids:
                transaction.on_commit(partial(_enqueue_sends, ids, chunk=chunk, queue=queue))
        total += len(ids)
        if len(ids) < batch:
            break
    return total


def _enqueue_sends(ids: list[int], *, chunk: int, queue: str) -> None:
    from apps.followups.tasks import send_reminders

    # Chunks spare a broker round trip and a task per reminder; each id stays idempotent.
    for start in range(0, len(ids), chunk):
        send_reminders.apply_async((ids[start : start + chunk],), queue=queue)


def person_quiet_until(*, program: Program, phone_number: str, moment: dt.datetime) -> dt.datetime | None:
    """When quiet hours around ``moment`` end for the person, or None: their own preference's
    hours and time zone if they gave some, else the program's default hours in the program's zone."""
    preference = (
        NotificationPreference.objects.filter(phone_number=notifications.phone_number_e164(phone_number)).first()
        if phone_number
        else None
    )
    if preference is None or preference.quiet_hours_start is None:
        preference = NotificationPreference(
            quiet_hours_start=dt.time.fromisoformat(settings.FOLLOWUPS_PERSON_QUIET_START),
            quiet_hours_end=dt.time.fromisoformat(settings.FOLLOWUPS_PERSON_QUIET_END),
            time_zone=program.time_zone,
        )
    return preference.quiet_until(moment)


def reminder_send(*, reminder_id: int) -> str:
    """Send one claimed reminder, once; returns what became of it (see ``reminders_send``)."""
    return _reminders_send([reminder_id])[reminder_id]


def reminders_send(*, reminder_ids: list[int]) -> dict[str, int]:
    """Send a chunk of claimed reminders, each once; returns how many ended which way.

    One transaction for the chunk: its steps and reminders are locked (steps first, then
    reminders, each in id order: the order of every step change, so no deadlock, and a step
    completed a moment ago is seen as completed here), the notifications are created in bulk,
    and the "sent" marks commit with them. All or nothing: a worker killed mid-chunk committed
    none of it, and a redelivered or duplicate chunk finds its reminders sent and does nothing.

    A chunk that fails is sent again one reminder at a time, so one reminder that cannot be
    sent holds back none of the others; it stays claimed ("failed"), and the sweep takes it
    again after ``FOLLOWUPS_REDISPATCH_AFTER_SECONDS``. A chunk stopped by its task's soft time
    limit stops at once, sent no further: those it had not sent are taken again the same way.
    """
    try:
        return dict(Counter(_reminders_send(reminder_ids).values()))
    except SoftTimeLimitExceeded:
        # The task's soft time limit, its warning before the worker is killed: stop now. The
        # chunk rolled back; its reminders stay claimed, for the sweep to take again.
        raise
    except Exception:
        if len(reminder_ids) <= 1:
            raise
        logger.exception("a chunk of %d reminders failed; sending them one at a time", len(reminder_ids))
    outcomes: Counter[str] = Counter()
    for reminder_id in reminder_ids:
        try:
            outcomes.update(_reminders_send([reminder_id]).values())
        except SoftTimeLimitExceeded:
            raise  # not a failed reminder: it and those after it are left to the sweep, as above
        except Exception:
            # Ids only in the log: nothing about the person or the step.
            logger.exception("reminder %s could not be sent; the sweep retries it", reminder_id)
            outcomes["failed"] += 1
    return dict(outcomes)


def _reminders_send(reminder_ids: list[int]) -> dict[int, str]:
    outcomes: dict[int, str] = dict.fromkeys(reminder_ids, "gone")
    with transaction.atomic():
        step_ids = sorted(
            {step_id for step_id in Reminder.objects.filter(pk__in=reminder_ids).values_list("step_id", flat=True)}
            - {None}
        )
        steps = {
            step.pk: step for step in FollowUpStep.objects.select_for_update().filter(pk__in=step_ids).order_by("pk")
        }
        # Only the reminders are locked; their programs are read apart, unlocked (every chunk
        # shares them, and locking them with the reminders made the workers take turns).
        reminders = list(Reminder.objects.select_for_update().filter(pk__in=reminder_ids).order_by("pk"))
        now = timezone.now()
        staff: list[tuple[Reminder, FollowUpStep]] = []
        for reminder in reminders:
            if reminder.sent_at is not None or reminder.cancelled_at is not None:
                outcomes[reminder.pk] = "already_done"
            elif reminder.kind == ReminderKind.PERSON_APPOINTMENT:
                outcomes[reminder.pk] = _send_to_person(reminder, now=now)
            else:
                staff.append((reminder, steps[reminder.step_id]))  # type: ignore[index]
        outcomes.update(_send_to_staff(staff))
        done = [reminder for reminder in reminders if outcomes[reminder.pk] not in ("already_done", "deferred")]
        sent = [reminder for reminder in done if outcomes[reminder.pk] == "sent"]
        if sent:
            with connection.cursor() as cursor:
                cursor.execute(
                    MARK_SENT_SQL,
                    {
                        "now": now,
                        "ids": [reminder.pk for reminder in sent],
                        "notification_ids": [str(reminder.notification_id) for reminder in sent],
                    },
                )
        for reminder in done:
            if outcomes[reminder.pk] != "sent":
                Reminder.objects.filter(pk=reminder.pk).update(cancelled_at=now, cancel_reason=outcomes[reminder.pk])
    return outcomes


MARK_SENT_SQL = """
UPDATE followups_reminder AS reminder SET sent_at = %(now)s, notification_id = sent.notification_id
FROM unnest(%(ids)s::bigint[], %(notification_ids)s::uuid[]) AS sent(id, notification_id)
WHERE reminder.id = sent.id AND reminder.sent_at IS NULL
"""


def _send_to_staff(staff: list[tuple[Reminder, FollowUpStep]]) -> dict[int, str]:
    """Due reminders to the owners, overdue alerts to the supervisors: one bulk ``notify_many``."""
    outcomes: dict[int, str] = {}
    owner_ids = {step.owner_id for reminder, step in staff if reminder.kind == ReminderKind.OWNER_DUE and step.owner_id}
    owners = {user.pk: user for user in User.objects.filter(pk__in=owner_ids, is_active=True)}
    # The email goes to the owner's address as a contact, which their own preference does not
    # cover: an owner who turned email off is not emailed.
    no_email = set(
        NotificationPreference.objects.filter(user_id__in=list(owners), email_allowed=False).values_list(
            "user_id", flat=True
        )
    )
    # An owner who left the program cannot be notified in it: the supervisors hear instead.
    members = set(
        Membership.objects.filter(user_id__in=list(owners), program_id__in=[r.program_id for r, _ in staff])
        .values_list("program_id", "user_id")
        .distinct()
    )
    programs = {
        program.pk: program for program in Program.objects.filter(pk__in={reminder.program_id for reminder, _ in staff})
    }
    supervisors_of: dict[UUID, list[UUID]] = {}
    requests: list[notifications.NotificationRequest] = []
    to_notify: list[Reminder] = []
    for reminder, step in staff:
        if not step.is_open:
            outcomes[reminder.pk] = "step closed"
            continue
        if reminder.kind == ReminderKind.OWNER_DUE and reminder.due_at != step.due_at:
            outcomes[reminder.pk] = "step rescheduled"
            continue
        program = programs[reminder.program_id]
        # The app opens the step by its path; an email or a text opens it where case managers and
        # supervisors work it, the step's timeline in the workspace.
        link = f"/followups/steps/{step.pk}"
        web_link = reverse("admin:followups_followupstep_timeline", args=[step.pk])
        dedupe_key = f"followups.reminder.{reminder.pk}"
        owner = owners.get(step.owner_id) if step.owner_id is not None else None
        if reminder.kind == ReminderKind.OWNER_DUE and owner is not None and (step.program_id, owner.pk) in members:
            # In the app and by email, both at once (low urgency: no push, no later fallback).
            request = notifications.NotificationRequest(
                program=program,
                recipients=[owner.pk],
                contacts=[notifications.Contact(email=owner.email)] if owner.email and owner.pk not in no_email else [],
                kind="followup.due",
                urgency=Urgency.LOW,
                text="A follow-up contact is due.",
                link=link,
                web_link=web_link,
                dedupe_key=dedupe_key,
            )
        else:
            if step.program_id not in supervisors_of:
                supervisors_of[step.program_id] = _supervisors(step.program_id)
            supervisors = supervisors_of[step.program_id]
            if not supervisors:
                outcomes[reminder.pk] = "no supervisor to alert"
                continue
            overdue = reminder.kind == ReminderKind.SUPERVISOR_OVERDUE
            request = notifications.NotificationRequest(
                program=program,
                recipients=supervisors,
                kind="followup.overdue" if overdue else "followup.unowned",
                urgency=Urgency.NORMAL,
                text="A follow-up contact is overdue." if overdue else "A follow-up contact is due and has no owner.",
                link=link,
                web_link=web_link,
                dedupe_key=dedupe_key,
            )
        requests.append(request)
        to_notify.append(reminder)
    for reminder, notification in zip(to_notify, notifications.notify_many(requests=requests), strict=True):
        reminder.notification_id = notification.pk
        outcomes[reminder.pk] = "sent"
    return outcomes


def _supervisors(program_id: UUID) -> list[UUID]:
    return list(
        Membership.objects.filter(program_id=program_id, role=Role.SUPERVISOR, user__is_active=True)
        .order_by("user_id")
        .values_list("user_id", flat=True)
    )


def _send_to_person(reminder: Reminder, *, now: dt.datetime) -> str:
    assert reminder.referral_id is not None
    referral = (
        Referral.objects.select_related("encounter__person")
        .filter(pk=reminder.referral_id, is_deleted=False, encounter__is_deleted=False)
        .first()
    )
    if referral is None:
        return "referral deleted"
    if not referral.consent_to_contact:
        return "no consent to contact"
    if referral.task_status in ReferralTaskStatus.closed() or referral.status in APPOINTMENT_SETTLED:
        return "referral closed"
    if referral.appointment_at is not None and referral.appointment_at <= now:
        # Synced after the appointment, or held by quiet hours past it: "soon" is no longer true.
        return "appointment passed"
    person = referral.encounter.person
    if person is not None and person.is_deleted:
        # Deleted from a device as made in error (the wrong person, a mistyped number): its
        # number is no one we may text.
        return "person deleted"
    phone_number = person.phone_number if person is not None else ""
    if not phone_number:
        return "no phone number"
    # As the crew typed it, it may be national; opt-outs are recorded by the E.164 number.
    phone_number = notifications.phone_number_e164(phone_number)
    preference = NotificationPreference.objects.filter(phone_number=phone_number).first()
    if preference is not None and not preference.allows(Channel.SMS):
        return "opted out"
    quiet_until = person_quiet_until(program=reminder.program, phone_number=phone_number, moment=now)
    if quiet_until is not None:
        # Back to the queue with the end of quiet hours as its due time; the sweep takes it then.
        Reminder.objects.filter(pk=reminder.pk).update(due_at=quiet_until, claimed_at=None)
        return "deferred"
    notification = notifications.notify(
        program=reminder.program,
        contacts=[notifications.Contact(phone_number=phone_number)],
        kind="followup.appointment",
        urgency=Urgency.NORMAL,
        text="Reminder from your care team: you have an appointment soon. Reply STOP to opt out.",
        dedupe_key=f"followups.reminder.{reminder.pk}",
    )
    reminder.notification_id = notification.pk
    return "sent"
