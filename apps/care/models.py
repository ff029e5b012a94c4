"""Care: the person in crisis, the encounter on scene, its clinical notes and referrals.

Every record here is created on a field device, often offline, under a client-made UUID,
and is synced through apps.sync. Clinical records are never hard-deleted: a delete sets
``is_deleted`` and the row stays.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from apps.accounts.models import Program
from apps.common.encryption import EncryptedTextField
from apps.directory.models import Service, ServiceType
from apps.teams.models import Unit


class CareRecord(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    # The unit whose crew works the record: who sees it (with the program's case managers
    # and supervisors). Children carry their encounter's unit so scopes need no join.
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="+")
    # No index: nothing looks records up by their author (a user leaves by being deactivated),
    # and every push would pay for it.
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    is_deleted = models.BooleanField(default=False)

    class Meta:
        abstract = True


class Person(CareRecord):
    """The person in crisis, often only partly known. Protected health information."""

    given_name = models.CharField(max_length=100, blank=True)
    family_name = models.CharField(max_length=100, blank=True)
    date_of_birth = models.DateField(null=True, blank=True)
    phone_number = models.CharField(max_length=32, blank=True)

    def __str__(self) -> str:
        return f"person {self.pk}"


class Disposition(models.TextChoices):
    RESOLVED_ON_SCENE = "resolved_on_scene", "Resolved on scene"
    REFERRED = "referred", "Referred to a service"
    TRANSPORTED_VOLUNTARY = "transported_voluntary", "Transported (voluntary)"
    TRANSPORTED_INVOLUNTARY = "transported_involuntary", "Transported (involuntary)"
    DECLINED_SERVICES = "declined_services", "Declined services"
    UNABLE_TO_LOCATE = "unable_to_locate", "Unable to locate"

    @classmethod
    def transported(cls) -> frozenset[str]:
        """The dispositions after which the encounter records where the person was taken."""
        return frozenset({cls.TRANSPORTED_VOLUNTARY, cls.TRANSPORTED_INVOLUNTARY})


class TransportDestination(models.TextChoices):
    """Where a transported person was taken: programs report community transports apart
    from hospital ones (the point of a crisis response is fewer emergency-room visits)."""

    COMMUNITY_LOCATION = "community_location", "Community location (crisis centre, respite, sobering, shelter)"
    HOSPITAL = "hospital", "Hospital"


class Encounter(CareRecord):
    """What a team found and did on scene."""

    # Found by program through the (program, started_at, id) index below.
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+", db_index=False)
    person = models.ForeignKey(Person, null=True, blank=True, on_delete=models.PROTECT, related_name="encounters")
    started_at = models.DateTimeField(help_text="As the device observed it.")
    ended_at = models.DateTimeField(null=True, blank=True)
    location = EncryptedTextField(blank=True, help_text="Where the team met the person (sealed at rest).")
    assessment = EncryptedTextField(blank=True, help_text="Clinical text (sealed at rest).")
    disposition = models.CharField(max_length=32, choices=Disposition.choices, blank=True)
    # Read only with a transported disposition: fields merge one by one in offline sync, so a
    # constraint tying the two could refuse a merge of two valid edits.
    transport_destination = models.CharField(
        max_length=24, choices=TransportDestination.choices, blank=True, default="", db_default=""
    )

    class Meta:
        # A program's encounters by time: the admin's list (newest first) and the dashboard's range.
        indexes = [models.Index(fields=["program", "started_at", "id"], name="encounter_started")]

    def __str__(self) -> str:
        return f"encounter {self.pk}"


class ClinicalNote(CareRecord):
    """A clinical document of an encounter: editable by its author while a draft, immutable
    once signed. A later change to a signed note is an addendum: a new note that amends it."""

    encounter = models.ForeignKey(Encounter, on_delete=models.PROTECT, related_name="notes")
    amends = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="addenda", db_index=False
    )
    body = EncryptedTextField(help_text="Clinical text (sealed at rest).")
    signed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Addenda only: most notes amend nothing, and a push of notes need not index them.
        indexes = [models.Index(fields=["amends"], condition=models.Q(amends__isnull=False), name="note_addenda")]

    def __str__(self) -> str:
        return f"note {self.pk}"

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None


class ReferralStatus(models.TextChoices):
    OPEN = "open", "Open (no outcome yet)"
    SCHEDULED = "scheduled", "Scheduled"
    CONNECTED = "connected", "Connected"
    ATTENDED = "attended", "Attended"
    DECLINED = "declined", "Declined"
    NO_SHOW = "no_show", "No-show"
    UNABLE_TO_REACH = "unable_to_reach", "Unable to reach"


class ReferralTaskStatus(models.TextChoices):
    """Where the referral stands with the receiving service (the FHIR referral-management task)."""

    REQUESTED = "requested", "Requested"
    RECEIVED = "received", "Received"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"
    FAILED = "failed", "Failed"

    @classmethod
    def allowed_next(cls, current: str) -> frozenset[str]:
        return TASK_TRANSITIONS.get(current, frozenset())

    @classmethod
    def closed(cls) -> frozenset[str]:
        return frozenset({cls.REJECTED, cls.COMPLETED, cls.CANCELLED, cls.FAILED})


TASK_TRANSITIONS: dict[str, frozenset[str]] = {
    ReferralTaskStatus.REQUESTED: frozenset(
        {"received", "accepted", "rejected", "cancelled", "failed"},
    ),
    ReferralTaskStatus.RECEIVED: frozenset({"accepted", "rejected", "cancelled", "failed"}),
    ReferralTaskStatus.ACCEPTED: frozenset({"in_progress", "completed", "cancelled", "failed"}),
    ReferralTaskStatus.IN_PROGRESS: frozenset({"completed", "cancelled", "failed"}),
}


class ReferralPriority(models.TextChoices):
    ROUTINE = "routine", "Routine"
    URGENT = "urgent", "Urgent"
    ASAP = "asap", "As soon as possible"
    STAT = "stat", "Immediately"


class Referral(CareRecord):
    """A connection to a service. Its status is derived from its outcome events."""

    # Found by program through the (program, created_at, id) index below.
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+", db_index=False)
    encounter = models.ForeignKey(Encounter, on_delete=models.PROTECT, related_name="referrals")
    service_type = models.CharField(max_length=32, choices=ServiceType.choices)
    service_name = models.CharField(max_length=200, blank=True)
    # The directory entry, when the service is listed there.
    service = models.ForeignKey(Service, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reason = EncryptedTextField(blank=True, help_text="Clinical text (sealed at rest).")
    priority = models.CharField(max_length=16, choices=ReferralPriority.choices, default=ReferralPriority.ROUTINE)
    warm_handoff = models.BooleanField(default=False, help_text="The team introduced the person in person.")
    appointment_at = models.DateTimeField(null=True, blank=True)
    # What the person agreed to: sharing their information with the service; being contacted
    # by the program (follow-up calls, appointment reminders). Reminders go only with the latter.
    consent_to_share = models.BooleanField(default=False)
    consent_to_contact = models.BooleanField(default=False)
    # Derived from the latest outcome event; stored so feeds and lists need no join.
    status = models.CharField(max_length=32, choices=ReferralStatus.choices, default=ReferralStatus.OPEN)
    # The latest task status event's; changed only through referral_task_status_change.
    task_status = models.CharField(
        max_length=16, choices=ReferralTaskStatus.choices, default=ReferralTaskStatus.REQUESTED
    )

    class Meta:
        # A program's referrals by time: the admin's list (newest first) and the dashboard's range.
        indexes = [models.Index(fields=["program", "created_at", "id"], name="referral_created")]

    def __str__(self) -> str:
        return f"referral {self.pk}"


class ReferralOutcomeEvent(CareRecord):
    """One step of a referral's outcome timeline. Append-only: never changed, never deleted."""

    # Found by referral through the (referral, observed_at) index below.
    referral = models.ForeignKey(Referral, on_delete=models.PROTECT, related_name="outcomes", db_index=False)
    outcome = models.CharField(
        max_length=32, choices=[(c.value, c.label) for c in ReferralStatus if c != ReferralStatus.OPEN]
    )
    observed_at = models.DateTimeField(help_text="When it happened, as the device observed it.")
    details = EncryptedTextField(blank=True, help_text="Clinical text (sealed at rest).")

    class Meta:
        indexes = [models.Index(fields=["referral", "observed_at"], name="outcome_timeline")]

    def __str__(self) -> str:
        return f"{self.outcome} of referral {self.referral_id}"


class ReferralTaskEvent(CareRecord):
    """One step of a referral's task timeline (requested → … → completed). Append-only."""

    # Found by referral through the (referral, created_at) index below.
    referral = models.ForeignKey(Referral, on_delete=models.PROTECT, related_name="task_events", db_index=False)
    from_status = models.CharField(max_length=16, choices=ReferralTaskStatus.choices)
    to_status = models.CharField(max_length=16, choices=ReferralTaskStatus.choices)
    # A service's reason for rejecting or failing a referral often says why clinically.
    # Sealed at rest; its 300-character limit is the API's.
    reason = EncryptedTextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["referral", "created_at"], name="referral_task_timeline")]

    def __str__(self) -> str:
        return f"{self.from_status} → {self.to_status} of referral {self.referral_id}"
