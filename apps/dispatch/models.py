"""Incidents, the triage policy that picks a response model, assignments of units, and their timeline."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from apps.accounts.models import Device, Program
from apps.common.encryption import EncryptedTextField
from apps.common.models import TimeStampedModel
from apps.teams.models import ResponseModel, Unit, UnitStatus, Zone


class IncidentSource(models.TextChoices):
    CALL_911 = "911", "911 call"
    CALL_988 = "988", "988 call"
    WALK_IN = "walk_in", "Walk-in"
    OUTREACH = "outreach", "Outreach"


class Priority(models.TextChoices):
    URGENT = "urgent", "Urgent"
    HIGH = "high", "High"
    ROUTINE = "routine", "Routine"


class Acuity(models.TextChoices):
    LOW = "low", "Low"
    MODERATE = "moderate", "Moderate"
    SEVERE = "severe", "Severe"


class Response(models.TextChoices):
    """What triage recommends: one of the program's team models, or an agency outside this system."""

    CO_RESPONSE = ResponseModel.CO_RESPONSE.value, ResponseModel.CO_RESPONSE.label
    EMT_CLINICIAN = ResponseModel.EMT_CLINICIAN.value, ResponseModel.EMT_CLINICIAN.label
    COMMUNITY_RESPONSE = ResponseModel.COMMUNITY_RESPONSE.value, ResponseModel.COMMUNITY_RESPONSE.label
    MOBILE_TREATMENT = ResponseModel.MOBILE_TREATMENT.value, ResponseModel.MOBILE_TREATMENT.label
    POLICE = "police", "Police (outside this system)"
    EMS = "ems", "EMS (outside this system)"

    @classmethod
    def team_responses(cls) -> list[str]:
        """Responses this system's own units give; a call triaged to one of these is eligible."""
        return [choice.value for choice in ResponseModel]


# The safety-screen answers a triage rule may test, with the type of each answer.
SCREEN_ANSWERS: dict[str, type] = {
    "mental_health_nexus": bool,
    "weapon": bool,
    "violence_in_progress": bool,
    "imminent_self_harm": bool,
    "medical_emergency": bool,
    "substance_use": bool,
    "known_high_risk": bool,
    "acuity": str,
}


class UnservedReason(models.TextChoices):
    NO_UNIT_AVAILABLE = "no_unit_available", "No unit available"
    OUTSIDE_HOURS = "outside_hours", "Outside program hours"
    DECLINED_BY_PERSON = "declined_by_person", "Person declined the response"
    PERSON_NOT_FOUND = "person_not_found", "Person not found"
    CANCELLED_BY_CALLER = "cancelled_by_caller", "Cancelled by the caller"
    HANDLED_BY_OTHER_AGENCY = "handled_by_other_agency", "Handled by another agency"
    DUPLICATE = "duplicate", "Duplicate of another incident"
    OTHER = "other", "Other (see note)"


class IncidentStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class TriagePolicy(TimeStampedModel):
    """A program's ordered triage rules; the policy with no program is the default for all."""

    program = models.ForeignKey(
        Program, null=True, blank=True, on_delete=models.CASCADE, related_name="triage_policies"
    )
    name = models.CharField(max_length=200)
    fallback_response = models.CharField(
        max_length=32, choices=Response.choices, help_text="Recommended when no rule matches."
    )
    fallback_reason = models.CharField(max_length=300)

    class Meta:
        verbose_name_plural = "triage policies"
        constraints = [
            # One policy per program, and exactly one default (program NULL).
            models.UniqueConstraint(fields=["program"], nulls_distinct=False, name="triage_policy_one_per_program"),
        ]

    def __str__(self) -> str:
        return self.name


class TriageRule(models.Model):
    """When every `when_all` answer equals its value and (if given) any `when_any` answer does,
    recommend `response` because of `reason`. Rules are tried in `position` order; the first match wins."""

    policy = models.ForeignKey(TriagePolicy, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField()
    when_all = models.JSONField(default=dict, blank=True)
    when_any = models.JSONField(default=dict, blank=True)
    response = models.CharField(max_length=32, choices=Response.choices)
    reason = models.CharField(max_length=300)

    class Meta:
        ordering = ["policy", "position"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "position"], name="triage_rule_unique_position"),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.reason} → {self.response}"

    def clean(self) -> None:
        for field in ("when_all", "when_any"):
            conditions = getattr(self, field)
            if not isinstance(conditions, dict):
                raise ValidationError({field: "A mapping of safety-screen answer to value."})
            for answer, value in conditions.items():
                expected = SCREEN_ANSWERS.get(answer)
                if expected is None:
                    raise ValidationError({field: f"Unknown answer {answer!r}."})
                if not isinstance(value, expected):
                    raise ValidationError({field: f"{answer} takes a {expected.__name__}."})

    def matches(self, answers: dict[str, Any]) -> list[str]:
        """The answers that make this rule match (empty when it does not)."""
        if any(answers.get(answer) != value for answer, value in self.when_all.items()):
            return []
        decisive = [f"{answer}={value}" for answer, value in self.when_all.items()]
        if self.when_any:
            hits = [f"{answer}={value}" for answer, value in self.when_any.items() if answers.get(answer) == value]
            if not hits:
                return []
            decisive += hits
        return decisive or ["always"]


class ResponseTiming(models.Model):
    """How long a unit has to acknowledge, and how often a crew on scene checks in, per priority.

    Without a row the settings' defaults apply (DISPATCH_ACK_RESEND_SECONDS and friends).
    """

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="response_timings")
    priority = models.CharField(max_length=16, choices=Priority.choices)
    ack_resend_seconds = models.PositiveIntegerField()
    ack_escalate_seconds = models.PositiveIntegerField()
    checkin_interval_seconds = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["program", "priority"], name="response_timing_unique_priority"),
            models.CheckConstraint(
                condition=Q(ack_resend_seconds__gt=0)
                & Q(ack_escalate_seconds__gt=F("ack_resend_seconds"))
                & Q(checkin_interval_seconds__gt=0),
                name="response_timing_deadlines_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.program} {self.priority}"


class Incident(TimeStampedModel):
    """One call for help, its triage decision and whether (and why not) it was served."""

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="incidents")
    external_call_id = models.CharField(max_length=64, help_text="The caller's (CAD's) id; a retry reuses it.")
    source = models.CharField(max_length=16, choices=IncidentSource.choices)
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.HIGH)
    received_at = models.DateTimeField()
    address = models.CharField(max_length=300, blank=True)
    zone = models.ForeignKey(Zone, null=True, blank=True, on_delete=models.SET_NULL, related_name="incidents")
    latitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    longitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    location_accuracy_m = models.PositiveIntegerField(null=True, blank=True)
    callback_number = models.CharField(max_length=32, blank=True)
    nature = EncryptedTextField(
        blank=True, help_text="Nature of the call, as the caller described it (sealed at rest)."
    )

    # Structured safety screen.
    mental_health_nexus = models.BooleanField()
    weapon = models.BooleanField()
    violence_in_progress = models.BooleanField()
    imminent_self_harm = models.BooleanField()
    medical_emergency = models.BooleanField()
    substance_use = models.BooleanField(default=False)
    known_high_risk = models.BooleanField(default=False)
    acuity = models.CharField(max_length=16, choices=Acuity.choices, default=Acuity.MODERATE)
    hazards = models.JSONField(default=list, blank=True, help_text="E.g. dogs, needles, unstable structure.")

    # Triage: what the policy recommended and why, and what the dispatcher chose.
    triage_policy = models.ForeignKey(TriagePolicy, null=True, on_delete=models.SET_NULL, related_name="+")
    recommended_response = models.CharField(max_length=32, choices=Response.choices)
    triage_reasons = models.JSONField(default=list)
    chosen_response = models.CharField(max_length=32, choices=Response.choices)
    # Free text the dispatcher gave: it may say anything of the person, so it is sealed.
    override_reason = EncryptedTextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    status = models.CharField(max_length=16, choices=IncidentStatus.choices, default=IncidentStatus.OPEN)
    served_at = models.DateTimeField(null=True, blank=True, help_text="When a unit of ours first got on scene.")
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    unserved_reason = models.CharField(max_length=32, choices=UnservedReason.choices, blank=True)
    # What happened to the person instead is health information: sealed at rest (500 characters at the API).
    unserved_note = EncryptedTextField(blank=True)

    class Meta:
        constraints = [
            # Idempotent intake: a retried CAD post cannot create a second incident.
            models.UniqueConstraint(fields=["program", "external_call_id"], name="incident_unique_external_call"),
            models.CheckConstraint(
                condition=Q(chosen_response=F("recommended_response")) | ~Q(override_reason=""),
                name="incident_override_has_reason",
            ),
            models.CheckConstraint(
                condition=Q(status=IncidentStatus.OPEN, closed_at=None)
                | (Q(status=IncidentStatus.CLOSED) & Q(closed_at__isnull=False)),
                name="incident_closed_has_time",
            ),
            # Every eligible call that was not served says why (the NYC audit found 35% without).
            models.CheckConstraint(
                condition=~Q(status=IncidentStatus.CLOSED)
                | Q(served_at__isnull=False)
                | ~Q(unserved_reason="")
                | (
                    ~Q(recommended_response__in=Response.team_responses())
                    & ~Q(chosen_response__in=Response.team_responses())
                ),
                name="incident_eligible_unserved_has_reason",
            ),
            models.CheckConstraint(
                condition=Q(served_at=None) | Q(unserved_reason=""),
                name="incident_served_has_no_unserved_reason",
            ),
            models.CheckConstraint(
                condition=~Q(unserved_reason=UnservedReason.OTHER) | ~Q(unserved_note=""),
                name="incident_other_reason_has_note",
            ),
        ]
        indexes = [
            models.Index(fields=["program", "status", "received_at"], name="incident_board"),
            # A program's calls by time: the admin's list (newest first) and the dashboard's date range.
            models.Index(fields=["program", "received_at", "id"], name="incident_received"),
        ]

    def __str__(self) -> str:
        return f"{self.external_call_id} ({self.get_status_display()})"

    def screen_answers(self) -> dict[str, Any]:
        return {answer: getattr(self, answer) for answer in SCREEN_ANSWERS}

    @property
    def is_eligible(self) -> bool:
        """A call for one of our teams, by triage or by the dispatcher's choice."""
        teams = Response.team_responses()
        return self.recommended_response in teams or self.chosen_response in teams

    @property
    def is_closed(self) -> bool:
        return self.status == IncidentStatus.CLOSED


class AssignmentStatus(models.TextChoices):
    OFFERED = "offered", "Offered"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    EN_ROUTE = "en_route", "En route"
    ON_SCENE = "on_scene", "On scene"
    TRANSPORTING = "transporting", "Transporting"
    CLEARED = "cleared", "Cleared"
    DECLINED = "declined", "Declined"
    TIMED_OUT = "timed_out", "Timed out (offered to another unit)"
    CANCELLED = "cancelled", "Cancelled by dispatch"

    @classmethod
    def active(cls) -> list[str]:
        return [cls.OFFERED, cls.ACKNOWLEDGED, cls.EN_ROUTE, cls.ON_SCENE, cls.TRANSPORTING]

    @classmethod
    def progress(cls) -> list[str]:
        """The crew's path, in order; a crew moves forward along it (skipping is allowed)."""
        return [cls.OFFERED, cls.ACKNOWLEDGED, cls.EN_ROUTE, cls.ON_SCENE, cls.TRANSPORTING, cls.CLEARED]


# What a unit is doing while it holds an assignment in each state.
UNIT_STATUS_FOR = {
    AssignmentStatus.OFFERED: UnitStatus.ASSIGNED,
    AssignmentStatus.ACKNOWLEDGED: UnitStatus.ASSIGNED,
    AssignmentStatus.EN_ROUTE: UnitStatus.EN_ROUTE,
    AssignmentStatus.ON_SCENE: UnitStatus.ON_SCENE,
    AssignmentStatus.TRANSPORTING: UnitStatus.TRANSPORTING,
}


class Assignment(TimeStampedModel):
    """An incident offered to a unit, and what became of the offer."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="assignments")
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="assignments")
    status = models.CharField(max_length=16, choices=AssignmentStatus.choices, default=AssignmentStatus.OFFERED)
    # Set only when the dispatcher deliberately gives a busy unit a second assignment.
    is_additional = models.BooleanField(default=False)
    offered_at = models.DateTimeField(default=timezone.now)
    offered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # Deadlines the escalation sweep claims (NULL once passed or no longer relevant).
    resend_due_at = models.DateTimeField(null=True, blank=True)
    escalate_due_at = models.DateTimeField(null=True, blank=True)
    resend_count = models.PositiveIntegerField(default=0)
    # Set when escalation found no other unit free (the offer stays open), or when this offer
    # was declined and no other unit was free: while the call waits, escalate_due_at is when
    # the sweep next looks for a free unit (on a declined offer too), and no_unit_alerted_at
    # when it last told the supervisors (again every DISPATCH_NO_UNIT_REALERT_SECONDS).
    awaiting_unit_since = models.DateTimeField(null=True, blank=True)
    no_unit_alerted_at = models.DateTimeField(null=True, blank=True)
    # The deadline (its field's name) whose action raised at its last tries, how many tries in
    # a row (the sweep puts it off a little longer each time), and when the supervisors were
    # told to act by hand.
    sweep_failing_deadline = models.CharField(max_length=32, blank=True)
    sweep_failures = models.PositiveIntegerField(default=0)
    sweep_failure_alerted_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    checkin_due_at = models.DateTimeField(null=True, blank=True)
    last_checkin_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Why a crew declined or dispatch withdrew the offer: free text, often about the person.
    end_reason = EncryptedTextField(blank=True)
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="supersedes"
    )

    class Meta:
        constraints = [
            # One active assignment per unit, unless the dispatcher explicitly adds one.
            models.UniqueConstraint(
                fields=["unit"],
                condition=Q(status__in=AssignmentStatus.active(), is_additional=False),
                name="assignment_one_active_per_unit",
            ),
            models.UniqueConstraint(
                fields=["incident", "unit"],
                condition=Q(status__in=AssignmentStatus.active()),
                name="assignment_one_active_per_incident_unit",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        AssignmentStatus.OFFERED,
                        AssignmentStatus.DECLINED,
                        AssignmentStatus.TIMED_OUT,
                        AssignmentStatus.CANCELLED,
                    ]
                )
                | (Q(acknowledged_at__isnull=False) & Q(acknowledged_device__isnull=False)),
                name="assignment_acknowledged_says_who",
            ),
            models.CheckConstraint(
                condition=Q(status__in=AssignmentStatus.active(), ended_at=None)
                | (~Q(status__in=AssignmentStatus.active()) & Q(ended_at__isnull=False)),
                name="assignment_ended_has_time",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=[AssignmentStatus.DECLINED, AssignmentStatus.CANCELLED]) | ~Q(end_reason=""),
                name="assignment_declined_has_reason",
            ),
        ]
        indexes = [
            # The admin's list, newest offer first.
            models.Index(fields=["offered_at", "id"], name="assignment_offered"),
            models.Index(
                fields=["resend_due_at"], condition=Q(resend_due_at__isnull=False), name="assignment_resend_due"
            ),
            models.Index(
                fields=["escalate_due_at"], condition=Q(escalate_due_at__isnull=False), name="assignment_escalate_due"
            ),
            models.Index(
                fields=["checkin_due_at"], condition=Q(checkin_due_at__isnull=False), name="assignment_checkin_due"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.incident_id} → {self.unit_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in AssignmentStatus.active()

    def is_overdue_for_ack(self, at: datetime | None = None) -> bool:
        now = at or timezone.now()
        return self.status == AssignmentStatus.OFFERED and any(
            due is not None and due <= now for due in (self.resend_due_at, self.escalate_due_at)
        )


class EventKind(models.TextChoices):
    RECEIVED = "received", "Call received"
    OVERRIDDEN = "overridden", "Response model overridden"
    CLOSED = "closed", "Incident closed"
    OFFERED = "offered", "Offered to a unit"
    RESENT = "resent", "Offer re-sent (not acknowledged)"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    EN_ROUTE = "en_route", "En route"
    ON_SCENE = "on_scene", "On scene"
    TRANSPORTING = "transporting", "Transporting"
    CLEARED = "cleared", "Cleared"
    DECLINED = "declined", "Declined"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"
    ESCALATED = "escalated", "Supervisor alerted"
    CHECKED_IN = "checked_in", "Crew checked in safe"
    CHECKIN_MISSED = "checkin_missed", "Check-in missed"


class TimelineEvent(models.Model):
    """One thing that happened to an incident or an assignment.

    `at` is the server's clock and orders the timeline; `observed_at` is what the device
    reported (a crew offline in a basement records "on scene" when it happened).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="timeline")
    assignment = models.ForeignKey(Assignment, null=True, blank=True, on_delete=models.CASCADE, related_name="timeline")
    kind = models.CharField(max_length=32, choices=EventKind.choices)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    observed_at = models.DateTimeField(null=True, blank=True)
    # True when the event arrived after the assignment had already moved past it (offline replay).
    applied = models.BooleanField(default=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The client's own id for the update, so a retried upload applies once (P2).
    client_event_id = models.UUIDField(null=True, blank=True, unique=True)
    detail = models.JSONField(default=dict, blank=True)
    # The reason a person gave (for an override, a decline, a cancellation): free text that may
    # say anything of the person, so it is sealed, not kept in ``detail`` with the codes.
    reason = EncryptedTextField(blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} at {self.at:%H:%M:%S}"

    @property
    def status(self) -> str:
        """The crew status a crew's report names (its kind): what it says on the wire."""
        return self.kind


class AlertKind(models.TextChoices):
    ACK_OVERDUE = "ack_overdue", "Assignment not acknowledged"
    CHECKIN_MISSED = "checkin_missed", "Crew missed a safety check-in"
    NO_UNIT_AVAILABLE = "no_unit_available", "No unit available to re-offer to"
    ESCALATION_FAILING = "escalation_failing", "Automatic escalation keeps failing: act by hand"


class SupervisorAlert(models.Model):
    """Something a supervisor / dispatcher must look at now."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="alerts")
    assignment = models.ForeignKey(Assignment, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    unit = models.ForeignKey(Unit, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    raised_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.raised_at:%H:%M:%S})"
