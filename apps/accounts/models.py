from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone

from apps.common.calendar import validate_time_zone
from apps.common.models import TimeStampedModel


class Role(models.TextChoices):
    DISPATCHER = "dispatcher", "Dispatcher / call taker"
    EMT = "emt", "EMT"
    PARAMEDIC = "paramedic", "Paramedic"
    CLINICIAN = "clinician", "Clinician"
    PEER_RESPONDER = "peer_responder", "Peer / community responder"
    POLICE_OFFICER = "police_officer", "Police officer (co-response)"
    CASE_MANAGER = "case_manager", "Case manager"
    SUPERVISOR = "supervisor", "Supervisor"
    ADMINISTRATOR = "administrator", "Administrator"

    @classmethod
    def field_roles(cls) -> frozenset[Role]:
        """Roles that ride in a unit and see only their own unit's work."""
        return frozenset({cls.EMT, cls.PARAMEDIC, cls.CLINICIAN, cls.PEER_RESPONDER, cls.POLICE_OFFICER})

    @classmethod
    def program_wide_roles(cls) -> frozenset[Role]:
        """Roles that work across a whole program (dispatch board, queues, oversight)."""
        return frozenset({cls.DISPATCHER, cls.CASE_MANAGER, cls.SUPERVISOR, cls.ADMINISTRATOR})


class Program(TimeStampedModel):
    """An agency running crisis teams; every record belongs to exactly one program."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    # The clock of the program's days and of the person's quiet hours (reminders wait them out).
    time_zone = models.CharField(max_length=64, default="America/New_York", validators=[validate_time_zone])

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    phone_number = models.CharField(max_length=32, blank=True)

    def roles_in(self, program: Program) -> set[str]:
        return set(self.memberships.filter(program=program).values_list("role", flat=True))


class Membership(TimeStampedModel):
    """A user works for a program in a role; one user may hold several."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=32, choices=Role.choices)
    # Set while a save moves it to another program or user: the (user, program) it leaves
    # (apps.accounts.services.membership_saving).
    _tie_ended: tuple[uuid.UUID, uuid.UUID] | None = None

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "program", "role"], name="membership_unique_role"),
        ]

    def __str__(self) -> str:
        return f"{self.user} — {self.get_role_display()} at {self.program}"


class ProgramDeparture(models.Model):
    """A user who held a role in a program and holds none there now. Kept because what they
    wrote for the program while in it (an offline edit pushed after they left) is still the
    program's to review, and what someone never in the program writes about its records is
    not (apps.sync.push files refused mutations by it)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="program_departures")
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    # Null for a departure found afterwards, from signs of someone having been a member (the
    # migration that began keeping departures): when they left is not known.
    left_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "program"], name="program_departure_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} left {self.program}"


class DevicePlatform(models.TextChoices):
    ANDROID = "android", "Android"
    IOS = "ios", "iOS"
    WEB = "web", "Web browser"


class Device(TimeStampedModel):
    """A registered phone or tablet of one user, revocable on its own (a lost tablet)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="devices")
    name = models.CharField(max_length=100)
    platform = models.CharField(max_length=16, choices=DevicePlatform.choices)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revoke_reason = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.get_platform_display()})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


def hash_token(raw_token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(raw_token.encode()).hexdigest()


class DeviceToken(models.Model):
    """An API credential of one device, stored only as a hash."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="tokens")
    key_hash = models.CharField(max_length=64, unique=True)
    # The first characters, shown to people so they can tell tokens apart.
    key_prefix = models.CharField(max_length=12)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Set on a token issued by a rotation until it is first used: the token it replaces
    # works until then, in case the rotation's answer never reached the device.
    replaces = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # When a rotation first replaced this token: it works for a grace period from then, at most.
    replaced_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.key_prefix}… ({self.device})"

    def is_expired(self, at: datetime | None = None) -> bool:
        return self.expires_at <= (at or timezone.now())

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
