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
from apps.teams.models import Unit


class CareRecord(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    # The unit whose crew works the record: who sees it (with the program's case managers
    # and supervisors). Children carry their encounter's unit so scopes need no join.
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
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


class Encounter(CareRecord):
    """What a team found and did on scene."""

    person = models.ForeignKey(Person, null=True, blank=True, on_delete=models.PROTECT, related_name="encounters")
    started_at = models.DateTimeField(help_text="As the device observed it.")
    ended_at = models.DateTimeField(null=True, blank=True)
    location = models.CharField(max_length=300, blank=True)
    assessment = models.TextField(blank=True, help_text="Clinical text.")
    disposition = models.CharField(max_length=32, choices=Disposition.choices, blank=True)

    def __str__(self) -> str:
        return f"encounter {self.pk}"


class ClinicalNote(CareRecord):
    """A clinical document of an encounter: editable by its author while a draft, immutable
    once signed. A later change to a signed note is an addendum: a new note that amends it."""

    encounter = models.ForeignKey(Encounter, on_delete=models.PROTECT, related_name="notes")
    amends = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="addenda")
    body = models.TextField()
    signed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"note {self.pk}"

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None


class ServiceType(models.TextChoices):
    CRISIS_STABILISATION = "crisis_stabilisation", "Crisis stabilisation"
    OUTPATIENT_MENTAL_HEALTH = "outpatient_mental_health", "Outpatient mental health"
    SUBSTANCE_USE = "substance_use", "Substance-use treatment"
    HOUSING = "housing", "Housing"
    PRIMARY_CARE = "primary_care", "Primary care"
    PEER_SUPPORT = "peer_support", "Peer support"


class ReferralStatus(models.TextChoices):
    OPEN = "open", "Open (no outcome yet)"
    SCHEDULED = "scheduled", "Scheduled"
    CONNECTED = "connected", "Connected"
    DECLINED = "declined", "Declined"
    NO_SHOW = "no_show", "No-show"
    UNABLE_TO_REACH = "unable_to_reach", "Unable to reach"


class Referral(CareRecord):
    """A connection to a service. Its status is derived from its outcome events."""

    encounter = models.ForeignKey(Encounter, on_delete=models.PROTECT, related_name="referrals")
    service_type = models.CharField(max_length=32, choices=ServiceType.choices)
    service_name = models.CharField(max_length=200, blank=True)
    reason = models.TextField(blank=True, help_text="Clinical text.")
    # Derived from the latest outcome event; stored so feeds and lists need no join.
    status = models.CharField(max_length=32, choices=ReferralStatus.choices, default=ReferralStatus.OPEN)

    def __str__(self) -> str:
        return f"referral {self.pk}"


class ReferralOutcomeEvent(CareRecord):
    """One step of a referral's outcome timeline. Append-only: never changed, never deleted."""

    referral = models.ForeignKey(Referral, on_delete=models.PROTECT, related_name="outcomes")
    outcome = models.CharField(
        max_length=32, choices=[(c.value, c.label) for c in ReferralStatus if c != ReferralStatus.OPEN]
    )
    observed_at = models.DateTimeField(help_text="When it happened, as the device observed it.")
    details = models.TextField(blank=True, help_text="Clinical text.")

    class Meta:
        indexes = [models.Index(fields=["referral", "observed_at"], name="outcome_timeline")]

    def __str__(self) -> str:
        return f"{self.outcome} of referral {self.referral_id}"
