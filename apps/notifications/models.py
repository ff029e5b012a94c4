"""Notifications: who is to be reached about what, every attempt to reach them, and the receipts.

A notification carries a kind, a short text without health information and a link into the
app. Its recipients are users (or, for the person in crisis, a bare phone number or email
address). Each way of reaching a recipient — one device's socket, one push registration, one
phone number — is one NotificationAttempt row, so a dispatcher can see "delivered to 3 of 4
devices, acknowledged by one".
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from apps.accounts.models import Device, Program
from apps.common.calendar import validate_time_zone
from apps.common.models import TimeStampedModel
from apps.teams.models import Unit


class Urgency(models.TextChoices):
    URGENT = "urgent", "Urgent (assignment offer, escalation)"
    NORMAL = "normal", "Normal (reminder)"
    LOW = "low", "Low (in-app only)"


class Channel(models.TextChoices):
    IN_APP = "in_app", "In-app (websocket)"
    PUSH = "push", "Mobile / web push"
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"


class PushProvider(models.TextChoices):
    FCM = "fcm", "Firebase Cloud Messaging"
    APNS = "apns", "Apple Push Notification service"
    WEBPUSH = "webpush", "Web Push"


class AttemptStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    OPENED = "opened", "Opened"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    FAILED = "failed", "Failed"
    SUPPRESSED = "suppressed", "Not sent (rate limit, opt-out, already confirmed)"

    @classmethod
    def progress(cls) -> list[AttemptStatus]:
        """The statuses an attempt moves through, in order; failed and suppressed end it."""
        return [cls.QUEUED, cls.SENDING, cls.SENT, cls.DELIVERED, cls.OPENED, cls.ACKNOWLEDGED]

    @classmethod
    def before(cls, status: AttemptStatus) -> list[AttemptStatus]:
        progress = cls.progress()
        return progress[: progress.index(status)]

    @classmethod
    def reached(cls) -> list[AttemptStatus]:
        """Statuses that mean the recipient's device has the notification."""
        return [cls.DELIVERED, cls.OPENED, cls.ACKNOWLEDGED]


class Notification(TimeStampedModel):
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=64, help_text="What it is about, e.g. assignment.offered.")
    urgency = models.CharField(max_length=16, choices=Urgency.choices, default=Urgency.NORMAL)
    text = models.CharField(max_length=140, help_text="Short, and never health information.")
    link = models.CharField(max_length=300, blank=True, help_text="An in-app path such as /assignments/<id>.")
    # A person reading an SMS or email opens a page, not an app path: this one, on the staff site.
    web_link = models.CharField(
        max_length=300,
        blank=True,
        help_text="A page of the staff site (a path such as /admin/…/) that SMS and email link to.",
    )
    unit = models.ForeignKey(Unit, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # A domain app that retries its own step passes the same key and gets the same notification.
    dedupe_key = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["program", "dedupe_key"], condition=~Q(dedupe_key=""), name="notification_unique_dedupe_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} ({self.get_urgency_display()})"


class NotificationRecipient(TimeStampedModel):
    """One person to reach: a user, or a contact known only by phone number / email address."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="recipients")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    phone_number = models.CharField(max_length=32, blank=True)
    email = models.EmailField(blank=True)
    # The fallback chain's deadline: if no device confirmed by then, the fallback channel goes out.
    fallback_due_at = models.DateTimeField(null=True, blank=True)
    fallback_started_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["notification", "user"], condition=Q(user__isnull=False), name="recipient_unique_user"
            ),
            models.CheckConstraint(
                condition=Q(user__isnull=False) | ~Q(phone_number="") | ~Q(email=""), name="recipient_has_address"
            ),
        ]
        indexes = [
            # The sweep's query: deadlines not yet acted on.
            models.Index(
                fields=["fallback_due_at"],
                condition=Q(fallback_due_at__isnull=False, fallback_started_at__isnull=True, confirmed_at__isnull=True),
                name="recipient_fallback_due",
            ),
        ]

    def __str__(self) -> str:
        return f"recipient {self.pk} of {self.notification_id}"

    @property
    def rate_limit_key(self) -> str:
        if self.user_id:
            return f"user:{self.user_id}"
        # A keyed hash, not the address: the person's number would sit in Redis in the clear,
        # outside the scoping and audit that guard it in the database.
        address = salted_hmac("tandem.notifications.rate-limit", self.phone_number or self.email).hexdigest()
        return f"address:{address}"


class NotificationAttempt(TimeStampedModel):
    """One try at one way of reaching a recipient, with what became of it."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempts")
    recipient = models.ForeignKey(NotificationRecipient, on_delete=models.CASCADE, related_name="attempts")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    push_registration = models.ForeignKey(
        "PushRegistration", null=True, blank=True, on_delete=models.CASCADE, related_name="attempts"
    )
    address = models.CharField(max_length=254, blank=True, help_text="Phone number or email address.")
    status = models.CharField(max_length=16, choices=AttemptStatus.choices, default=AttemptStatus.QUEUED)
    # Not sent before due_at (retry backoff, quiet hours). dispatched_at: when a send task was
    # last queued for it, so the sweep re-queues only sends whose task went missing.
    due_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # When this send was handed to its provider (just before the call): a claimed send whose
    # worker died without it is known not sent, and is queued again rather than given up.
    provider_called_at = models.DateTimeField(null=True, blank=True)
    tries = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    provider_message_id = models.CharField(max_length=200, blank=True)
    error_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            # Idempotent per notification and channel: one row per way of reaching a recipient.
            models.UniqueConstraint(
                fields=["recipient", "channel", "device"],
                condition=Q(channel="in_app"),
                name="attempt_unique_in_app_device",
            ),
            models.UniqueConstraint(
                fields=["recipient", "push_registration"],
                condition=Q(channel="push"),
                name="attempt_unique_push_registration",
            ),
            models.UniqueConstraint(
                fields=["recipient", "channel"],
                condition=Q(channel__in=["sms", "email"]),
                name="attempt_unique_address_channel",
            ),
        ]
        indexes = [
            models.Index(fields=["due_at"], condition=Q(status="queued"), name="attempt_queued_due"),
            models.Index(fields=["claimed_at"], condition=Q(status="sending"), name="attempt_sending_claimed"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} attempt {self.pk}: {self.status}"


class PushRegistration(TimeStampedModel):
    """A device's push address at one provider; disabled when the provider calls it invalid."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="push_registrations")
    provider = models.CharField(max_length=16, choices=PushProvider.choices)
    # FCM registration token, APNs device token (hex), or the Web Push subscription endpoint.
    token = models.TextField()
    # Web Push only: the subscription's keys for payload encryption (RFC 8291).
    p256dh = models.CharField(max_length=100, blank=True)
    auth_secret = models.CharField(max_length=50, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "provider"], name="push_registration_unique_provider"),
        ]
        indexes = [models.Index(fields=["provider", "token"], name="push_registration_token")]

    def __str__(self) -> str:
        return f"{self.get_provider_display()} for {self.device_id}"

    @property
    def is_enabled(self) -> bool:
        return self.disabled_at is None


class NotificationPreference(TimeStampedModel):
    """How one person may be reached: per-channel opt-out and quiet hours.

    Staff are keyed by user; the person in crisis, who has no account, by phone number or
    email address (the follow-ups app records their wishes here).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    phone_number = models.CharField(max_length=32, blank=True)
    email = models.EmailField(blank=True)
    sms_allowed = models.BooleanField(default=True)
    email_allowed = models.BooleanField(default=True)
    push_allowed = models.BooleanField(default=True)
    # Messages that are not urgent wait until quiet hours end (local time of time_zone).
    quiet_hours_start = models.TimeField(null=True, blank=True)
    quiet_hours_end = models.TimeField(null=True, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["phone_number"], condition=~Q(phone_number=""), name="preference_phone"),
            models.UniqueConstraint(fields=["email"], condition=~Q(email=""), name="preference_email"),
            models.CheckConstraint(
                condition=Q(user__isnull=False) | ~Q(phone_number="") | ~Q(email=""), name="preference_has_owner"
            ),
        ]

    def __str__(self) -> str:
        return f"preference {self.pk}"

    def allows(self, channel: str) -> bool:
        return {
            Channel.SMS: self.sms_allowed,
            Channel.EMAIL: self.email_allowed,
            Channel.PUSH: self.push_allowed,
        }.get(Channel(channel), True)

    def quiet_until(self, moment: dt.datetime) -> dt.datetime | None:
        """When the quiet hours around ``moment`` end, or None if ``moment`` is not in them."""
        if self.quiet_hours_start is None or self.quiet_hours_end is None:
            return None
        zone = ZoneInfo(self.time_zone)
        local = moment.astimezone(zone)
        start, end, now = self.quiet_hours_start, self.quiet_hours_end, local.time()
        if start == end:
            return None
        in_quiet = (start <= now < end) if start < end else (now >= start or now < end)
        if not in_quiet:
            return None
        end_day = local.date() if now < end else local.date() + dt.timedelta(days=1)
        return dt.datetime.combine(end_day, end, tzinfo=zone).astimezone(dt.UTC)


class InboundSms(models.Model):
    """A reply to our SMS already acted on (STOP / START), by the provider's message id.

    The provider's signature carries no time, so a captured request could be sent again; with
    its id kept, a replay changes nothing. Only the id is kept, never the text or the number.
    """

    id = models.BigAutoField(primary_key=True)
    message_sid = models.CharField(max_length=64, unique=True)
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"inbound sms {self.message_sid}"
