"""Follow-ups: the planned contacts after an encounter or referral, their attempts and reminders.

A plan's steps come from a schedule that is data (per program, editable in the admin; the
default is in code). A step is never silently dropped: it is completed, rescheduled or marked
missed with a reason, and each of those is an event in its history. Reminders are rows with a
due time that a periodic sweep claims, so each fires exactly once (DESIGN.md P7).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from apps.accounts.models import Program
from apps.care.models import CareRecord, Encounter, Person, Referral, ReferralOutcomeEvent
from apps.common.encryption import EncryptedTextField
from apps.common.models import TimeStampedModel
from apps.teams.models import Unit, Zone


class PlanTrigger(models.TextChoices):
    REFERRAL = "referral", "Encounter with a referral"
    COMMUNITY = "community", "Person stays in the community"


class ScheduleStep(TimeStampedModel):
    """One planned contact of a program's follow-up schedule. A program without rows uses the default."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    trigger = models.CharField(max_length=16, choices=PlanTrigger.choices)
    key = models.SlugField(max_length=32, help_text="Stable name, e.g. first_contact.")
    label = models.CharField(max_length=100)
    offset_minutes = models.PositiveIntegerField(
        help_text=(
            "Due this long after the encounter ended. Whole days (1440 minutes each) keep the local "
            "time of day in the program's time zone, across daylight-saving changes too; the rest "
            "is elapsed time."
        )
    )
    overdue_margin_minutes = models.PositiveIntegerField(help_text="The supervisor is alerted this long after due.")
    completed_by_outcomes = ArrayField(
        models.CharField(max_length=32), default=list, blank=True, help_text="Referral outcomes that complete it."
    )

    class Meta:
        ordering = ["program", "trigger", "offset_minutes"]
        constraints = [models.UniqueConstraint(fields=["program", "trigger", "key"], name="schedule_step_key")]

    def __str__(self) -> str:
        return f"{self.label} (+{self.offset_minutes} min)"


class CaseManagerAssignment(TimeStampedModel):
    """Who owns new follow-up steps of a zone (or, with no zone, of the whole program)."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    zone = models.ForeignKey(Zone, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    case_manager = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["program", "zone"], name="case_manager_of_zone"),
            models.UniqueConstraint(fields=["program"], condition=Q(zone=None), name="case_manager_of_program"),
        ]

    def __str__(self) -> str:
        return f"case manager of {self.zone_id or 'program'}"


class FollowUpPlan(TimeStampedModel):
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="+")
    encounter = models.OneToOneField(Encounter, on_delete=models.PROTECT, related_name="follow_up_plan")
    person = models.ForeignKey(Person, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    trigger = models.CharField(max_length=16, choices=PlanTrigger.choices)
    anchor_at = models.DateTimeField(help_text="Steps are due relative to this (the encounter's end).")

    def __str__(self) -> str:
        return f"follow-up plan {self.pk}"


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    COMPLETED = "completed", "Completed"
    MISSED = "missed", "Missed"
    CANCELLED = "cancelled", "Cancelled"  # its encounter was deleted


class FollowUpStep(TimeStampedModel):
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="+")
    plan = models.ForeignKey(FollowUpPlan, on_delete=models.PROTECT, related_name="steps")
    key = models.SlugField(max_length=32)
    label = models.CharField(max_length=100)
    due_at = models.DateTimeField()
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    # Copied from the schedule when planned: a later schedule change does not move planned steps.
    overdue_margin_minutes = models.PositiveIntegerField()
    completed_by_outcomes = ArrayField(models.CharField(max_length=32), default=list, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    closing_outcome = models.ForeignKey(
        ReferralOutcomeEvent, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Why a contact did not happen often says something clinical ("admitted overnight"):
    # sealed at rest; the API keeps it to 300 characters.
    missed_reason = EncryptedTextField(blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["program", "status", "due_at"], name="followup_step_queue"),
            models.Index(fields=["owner", "status", "due_at"], name="followup_step_owner"),
            # The admin's list in due order (its tie-break is the newest id first) and the dashboard.
            models.Index(fields=["program", "due_at", "-id"], name="followup_step_due"),
        ]
        constraints = [models.UniqueConstraint(fields=["plan", "key"], name="followup_step_key")]

    def __str__(self) -> str:
        return f"{self.label} of plan {self.plan_id}"

    @property
    def is_open(self) -> bool:
        return self.status == StepStatus.PENDING


class StepAction(models.TextChoices):
    PLANNED = "planned", "Planned"
    RESCHEDULED = "rescheduled", "Rescheduled"
    ASSIGNED = "assigned", "Assigned"
    COMPLETED = "completed", "Completed"
    MISSED = "missed", "Marked missed"
    CANCELLED = "cancelled", "Cancelled"


class StepEvent(models.Model):
    """The history of a step: append-only, so nothing about it is ever silently changed."""

    id = models.BigAutoField(primary_key=True)
    step = models.ForeignKey(FollowUpStep, on_delete=models.PROTECT, related_name="events")
    action = models.CharField(max_length=16, choices=StepAction.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    occurred_at = models.DateTimeField(auto_now_add=True)
    due_at = models.DateTimeField(null=True, blank=True, help_text="The due time after the event.")
    # Sealed at rest for the same reason as a missed step's (300 characters at the API).
    reason = EncryptedTextField(blank=True)

    def __str__(self) -> str:
        return f"{self.action} step {self.step_id}"


class ContactMethod(models.TextChoices):
    PHONE = "phone", "Phone call"
    SMS = "sms", "Text message"
    IN_PERSON = "in_person", "In person"
    EMAIL = "email", "Email"
    COLLATERAL = "collateral", "Through a provider or family"


class ContactResult(models.TextChoices):
    REACHED = "reached", "Reached"
    NO_ANSWER = "no_answer", "No answer"
    LEFT_MESSAGE = "left_message", "Left a message"
    WRONG_NUMBER = "wrong_number", "Wrong number"
    DECLINED = "declined", "Declined to talk"


class ContactAttempt(CareRecord):
    """One try at a planned contact; made on a device (synced) or by a case manager."""

    step = models.ForeignKey(FollowUpStep, on_delete=models.PROTECT, related_name="attempts")
    method = models.CharField(max_length=16, choices=ContactMethod.choices)
    result = models.CharField(max_length=16, choices=ContactResult.choices)
    notes = EncryptedTextField(blank=True, help_text="Clinical text (sealed at rest).")
    attempted_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"attempt {self.pk}"


class ReminderKind(models.TextChoices):
    OWNER_DUE = "owner_due", "Step due (to its owner)"
    SUPERVISOR_OVERDUE = "supervisor_overdue", "Step overdue (to the supervisors)"
    PERSON_APPOINTMENT = "person_appointment", "Appointment (to the person)"


class Reminder(models.Model):
    """A reminder to send at ``due_at``: claimed by the sweep (``claimed_at``), sent once (``sent_at``)."""

    id = models.BigAutoField(primary_key=True)
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=24, choices=ReminderKind.choices)
    step = models.ForeignKey(FollowUpStep, null=True, blank=True, on_delete=models.PROTECT, related_name="reminders")
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    due_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=200, blank=True)
    notification_id = models.UUIDField(null=True, blank=True)

    class Meta:
        indexes = [
            # The sweep's index: only reminders still to send, ordered by due time.
            models.Index(fields=["due_at"], name="reminder_to_send", condition=Q(sent_at=None, cancelled_at=None)),
            models.Index(fields=["step"], name="reminder_step"),
        ]
        constraints = [
            # Once per time among the reminders still standing: a cancelled one (the step or the
            # appointment moved away) must not keep one planned for the same time again from being made.
            models.UniqueConstraint(
                fields=["step", "kind", "due_at"],
                condition=Q(step__isnull=False, cancelled_at=None),
                name="reminder_once_per_step",
            ),
            models.UniqueConstraint(
                fields=["referral", "kind", "due_at"],
                condition=Q(referral__isnull=False, cancelled_at=None),
                name="reminder_once_per_appointment",
            ),
            models.CheckConstraint(condition=Q(step__isnull=False) | Q(referral__isnull=False), name="reminder_of"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} reminder {self.pk}"
