"""Writes of the notifications mechanism.

Domain apps call ``notify`` with who and what; this module decides how (which channels, when
the fallback goes out), records every attempt, and sends after commit from Celery tasks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from rest_framework import status as http_status

from apps.accounts.models import Device, Membership, Program, User
from apps.common.api.errors import DomainError
from apps.notifications import ratelimit
from apps.notifications.channels import Message, Outcome, PushTarget, SendResult, registry
from apps.notifications.channels.in_app import send_in_app
from apps.notifications.models import (
    AttemptStatus,
    Channel,
    Notification,
    NotificationAttempt,
    NotificationPreference,
    NotificationRecipient,
    PushProvider,
    PushRegistration,
    Urgency,
)
from apps.teams.models import Unit

logger = logging.getLogger(__name__)

KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
LINK_PATTERN = re.compile(r"^/[A-Za-z0-9/_.:-]*$")
MAX_TEXT_LENGTH = 140

IMMEDIATE_CHANNELS = {
    Urgency.URGENT: (Channel.IN_APP, Channel.PUSH),
    Urgency.NORMAL: (Channel.IN_APP, Channel.PUSH),
    Urgency.LOW: (Channel.IN_APP,),
}
FALLBACK_CHANNEL = {Urgency.URGENT: Channel.SMS, Urgency.NORMAL: Channel.EMAIL}
# A queued send whose task has not run by then is queued again by the sweep (the first task
# was lost with a broker restart, say); the claim makes a duplicate task harmless.
REDISPATCH_AFTER = timedelta(seconds=60)


@dataclass(frozen=True)
class Contact:
    """Someone without an account (the person in crisis), reached by phone number or email."""

    phone_number: str = ""
    email: str = ""


class NotificationNotFound(DomainError):
    status_code = http_status.HTTP_404_NOT_FOUND
    code = "not_found"


def _invalid(field: str, detail: str) -> DomainError:
    return DomainError(detail, code="invalid", field=field, status_code=http_status.HTTP_400_BAD_REQUEST)


# --- notify -------------------------------------------------------------------------------


def _validate(*, kind: str, text: str, link: str, urgency: str) -> None:
    if not KIND_PATTERN.match(kind):
        raise _invalid("kind", "A kind is a short lowercase name such as assignment.offered.")
    if not text.strip() or len(text) > MAX_TEXT_LENGTH or "\n" in text or "\r" in text:
        # Short and one line: room to say "there is an assignment", not to carry a note.
        raise _invalid("text", f"The text is one line of at most {MAX_TEXT_LENGTH} characters.")
    if link and (len(link) > 300 or not LINK_PATTERN.match(link)):
        # A path of ids, no query string: nothing about the person can ride along in a link.
        raise _invalid("link", "The link is an in-app path such as /assignments/<id>, without a query string.")
    if urgency not in Urgency.values:
        raise _invalid("urgency", f"Urgency is one of {', '.join(Urgency.values)}.")


def notify(
    *,
    program: Program,
    kind: str,
    text: str,
    link: str = "",
    urgency: str = Urgency.NORMAL,
    recipients: Sequence[UUID | str] = (),
    unit: UUID | str | None = None,
    contacts: Sequence[Contact] = (),
    dedupe_key: str = "",
) -> Notification:
    """Reach users (and/or the members on shift of a unit, and/or contacts) about one thing.

    ``text`` says that there is something (an assignment, a reminder) and never what it is
    about: no names, no health information. The same ``dedupe_key`` twice returns the first
    notification and sends nothing again. Sending starts after the caller's transaction commits.
    """
    _validate(kind=kind, text=text, link=link, urgency=urgency)
    if dedupe_key:
        existing = Notification.objects.filter(program=program, dedupe_key=dedupe_key).first()
        if existing is not None:
            return existing
    users = _resolve_users(program=program, recipients=recipients, unit=unit)
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                program=program,
                kind=kind,
                text=text.strip(),
                link=link,
                urgency=urgency,
                unit_id=unit,
                dedupe_key=dedupe_key,
            )
            now = timezone.now()
            due_now: list[UUID] = []
            for user in users:
                due_now += _plan_user(notification=notification, user=user, now=now)
            for contact in contacts:
                due_now += _plan_contact(notification=notification, contact=contact, now=now)
    except IntegrityError:
        if dedupe_key:  # a concurrent call with the same key won the race
            return Notification.objects.get(program=program, dedupe_key=dedupe_key)
        raise
    _dispatch_on_commit(due_now)
    return notification


def _resolve_users(*, program: Program, recipients: Sequence[UUID | str], unit: UUID | str | None) -> list[User]:
    user_ids = {str(user_id) for user_id in recipients}
    if unit is not None:
        unit_row = Unit.objects.filter(pk=unit, program=program).first()
        if unit_row is None:
            raise _invalid("unit", "No such unit in this program.")
        # Only the crew on shift: an off-shift member is not woken for an assignment.
        user_ids |= {
            str(uid) for uid in unit_row.memberships.filter(is_on_shift=True).values_list("user_id", flat=True)
        }
    users = list(User.objects.filter(pk__in=user_ids, is_active=True).order_by("pk"))
    members = set(
        Membership.objects.filter(program=program, user__in=users).values_list("user_id", flat=True).distinct()
    )
    if any(user.pk not in members for user in users) or len(users) != len(user_ids):
        # Nothing crosses from one program to another, not even a notification.
        raise _invalid("recipients", "Every recipient must be an active member of the notification's program.")
    return users


def _preference_for(
    *, user: User | None = None, phone_number: str = "", email: str = ""
) -> NotificationPreference | None:
    query = Q(user=user) if user is not None else Q()
    if phone_number:
        query |= Q(phone_number=phone_number)
    if email:
        query |= Q(email=email)
    if not query:
        return None
    return NotificationPreference.objects.filter(query).first()


def _due_at(*, preference: NotificationPreference | None, urgency: str, channel: str, now: datetime) -> datetime:
    """Quiet hours hold back what is not urgent; the in-app channel is silent and never held."""
    if preference is None or urgency == Urgency.URGENT or channel == Channel.IN_APP:
        return now
    return preference.quiet_until(now) or now


def _plan_user(*, notification: Notification, user: User, now: datetime) -> list[UUID]:
    urgency = Urgency(notification.urgency)
    preference = _preference_for(user=user)
    devices = list(Device.objects.filter(user=user, revoked_at=None).order_by("pk"))
    fallback = FALLBACK_CHANNEL.get(urgency)
    delay = (
        settings.NOTIFICATIONS_URGENT_FALLBACK_SECONDS
        if urgency == Urgency.URGENT
        else settings.NOTIFICATIONS_NORMAL_FALLBACK_SECONDS
    )
    recipient = NotificationRecipient.objects.create(
        notification=notification,
        user=user,
        fallback_due_at=now + timedelta(seconds=delay) if fallback else None,
    )
    attempts: list[NotificationAttempt] = []
    channels = IMMEDIATE_CHANNELS[urgency]
    if Channel.IN_APP in channels:
        attempts += [
            NotificationAttempt(notification=notification, recipient=recipient, channel=Channel.IN_APP, device=device)
            for device in devices
        ]
    if Channel.PUSH in channels:
        registrations = PushRegistration.objects.filter(device__in=devices, disabled_at=None).order_by("pk")
        attempts += [
            NotificationAttempt(
                notification=notification,
                recipient=recipient,
                channel=Channel.PUSH,
                device_id=registration.device_id,
                push_registration=registration,
            )
            for registration in registrations
        ]
    for attempt in attempts:
        attempt.due_at = _due_at(preference=preference, urgency=urgency, channel=attempt.channel, now=now)
        attempt.dispatched_at = now if attempt.due_at <= now else None
    NotificationAttempt.objects.bulk_create(attempts)
    due_now = [attempt.pk for attempt in attempts if attempt.dispatched_at is not None]
    if fallback and not attempts:
        # No device to try first: go straight to the fallback rather than wait for nothing.
        due_now += _start_fallback(recipient=recipient, now=now)
    return due_now


def _plan_contact(*, notification: Notification, contact: Contact, now: datetime) -> list[UUID]:
    if not contact.phone_number and not contact.email:
        raise _invalid("contacts", "A contact needs a phone number or an email address.")
    recipient = NotificationRecipient.objects.create(
        notification=notification, phone_number=contact.phone_number, email=contact.email
    )
    prefer_sms = notification.urgency != Urgency.LOW
    if contact.phone_number and (prefer_sms or not contact.email):
        channel, address = Channel.SMS, contact.phone_number
    else:
        channel, address = Channel.EMAIL, contact.email
    preference = _preference_for(phone_number=contact.phone_number, email=contact.email)
    due_at = _due_at(preference=preference, urgency=notification.urgency, channel=channel, now=now)
    attempt = NotificationAttempt.objects.create(
        notification=notification,
        recipient=recipient,
        channel=channel,
        address=address,
        due_at=due_at,
        dispatched_at=now if due_at <= now else None,
    )
    return [attempt.pk] if attempt.dispatched_at else []


def _start_fallback(*, recipient: NotificationRecipient, now: datetime) -> list[UUID]:
    """Create the fallback attempt of a recipient (SMS for urgent, email for normal)."""
    notification = recipient.notification
    channel = FALLBACK_CHANNEL.get(Urgency(notification.urgency))
    NotificationRecipient.objects.filter(pk=recipient.pk, fallback_started_at=None).update(fallback_started_at=now)
    if channel is None or recipient.user_id is None:
        return []
    user = recipient.user
    assert user is not None
    address = user.phone_number if channel == Channel.SMS else user.email
    if not address:
        NotificationAttempt.objects.create(
            notification=notification,
            recipient=recipient,
            channel=channel,
            status=AttemptStatus.FAILED,
            failed_at=now,
            error_reason=f"no {Channel(channel).label} address on file",
        )
        return []
    preference = _preference_for(user=user)
    due_at = _due_at(preference=preference, urgency=notification.urgency, channel=channel, now=now)
    attempt, created = NotificationAttempt.objects.get_or_create(
        recipient=recipient,
        channel=channel,
        defaults={
            "notification": notification,
            "address": address,
            "due_at": due_at,
            "dispatched_at": now if due_at <= now else None,
        },
    )
    return [attempt.pk] if created and attempt.dispatched_at else []


def _dispatch_on_commit(attempt_ids: Iterable[UUID]) -> None:
    ids = [str(attempt_id) for attempt_id in attempt_ids]
    if not ids:
        return
    queue = settings.NOTIFICATIONS_TASK_QUEUE

    def enqueue() -> None:
        from apps.notifications.tasks import send_attempt

        for attempt_id in ids:
            send_attempt.apply_async((attempt_id,), queue=queue)

    transaction.on_commit(enqueue)


# --- sending --------------------------------------------------------------------------------


def attempt_send(*, attempt_id: str) -> str:
    """Send one attempt, at most once: the row is claimed before the provider is called.

    A retried or redelivered task finds the row no longer queued and sends nothing. If the
    worker dies between the claim and the provider's answer, the row stays "sending" and the
    sweep later marks its outcome unknown — never a second SMS.
    """
    now = timezone.now()
    claimed = NotificationAttempt.objects.filter(pk=attempt_id, status=AttemptStatus.QUEUED, due_at__lte=now).update(
        status=AttemptStatus.SENDING, claimed_at=now, tries=F("tries") + 1
    )
    if not claimed:
        return "not_claimed"
    attempt = NotificationAttempt.objects.select_related(
        "notification", "recipient", "recipient__user", "device", "push_registration"
    ).get(pk=attempt_id)
    refusal = _refusal(attempt)
    if refusal is not None:
        status, reason = refusal
        _finish(attempt, status=status, reason=reason)
        return status
    message = Message(
        notification_id=str(attempt.notification_id),
        attempt_id=str(attempt.pk),
        kind=attempt.notification.kind,
        urgency=attempt.notification.urgency,
        text=attempt.notification.text,
        link=attempt.notification.link,
        link_base_url=settings.NOTIFICATIONS_LINK_BASE_URL,
    )
    try:
        result = _send(attempt, message)
    except ImproperlyConfigured as error:
        logger.error("notification attempt %s: channel not configured: %s", attempt.pk, error)
        result = SendResult.failed(f"{attempt.channel} not configured")
    _record(attempt, result)
    return result.outcome.value


def _refusal(attempt: NotificationAttempt) -> tuple[AttemptStatus, str] | None:
    if attempt.device is not None and attempt.device.is_revoked:
        return AttemptStatus.FAILED, "device revoked"
    registration = attempt.push_registration
    if attempt.channel == Channel.PUSH and (registration is None or not registration.is_enabled):
        return AttemptStatus.FAILED, "push registration disabled"
    recipient = attempt.recipient
    if attempt.channel != Channel.IN_APP:
        preference = _preference_for(user=recipient.user, phone_number=recipient.phone_number, email=recipient.email)
        if preference is not None and not preference.allows(attempt.channel):
            return AttemptStatus.SUPPRESSED, "recipient opted out of this channel"
        # Counted once per attempt: a retry of the same message is not a second message.
        if attempt.tries == 1 and not ratelimit.take(channel=attempt.channel, recipient_key=recipient.rate_limit_key):
            return AttemptStatus.SUPPRESSED, "rate limited"
    return None


def _send(attempt: NotificationAttempt, message: Message) -> SendResult:
    if attempt.channel == Channel.IN_APP:
        return send_in_app(attempt.device_id, message)
    if attempt.channel == Channel.PUSH:
        registration = attempt.push_registration
        assert registration is not None
        target = PushTarget(registration.provider, registration.token, registration.p256dh, registration.auth_secret)
        return registry.push_backend(registration.provider).send(target, message)
    if attempt.channel == Channel.SMS:
        return registry.sms_backend().send(attempt.address, message)
    return registry.email_backend().send(attempt.address, message)


def _finish(attempt: NotificationAttempt, *, status: AttemptStatus, reason: str) -> None:
    now = timezone.now()
    fields: dict[str, object] = {"status": status, "error_reason": reason[:200]}
    if status == AttemptStatus.FAILED:
        fields["failed_at"] = now
    NotificationAttempt.objects.filter(pk=attempt.pk, status=AttemptStatus.SENDING).update(**fields)


def _record(attempt: NotificationAttempt, result: SendResult) -> None:
    now = timezone.now()
    if result.outcome is Outcome.SENT:
        NotificationAttempt.objects.filter(pk=attempt.pk).update(
            sent_at=now, provider_message_id=result.provider_message_id, error_reason=""
        )
        # A device's receipt may have overtaken the provider's answer; never step back from it.
        NotificationAttempt.objects.filter(pk=attempt.pk, status=AttemptStatus.SENDING).update(
            status=AttemptStatus.SENT
        )
        return
    if result.outcome is Outcome.INVALID_ADDRESS and attempt.push_registration is not None:
        push_registration_disable(
            registration_id=attempt.push_registration.pk,
            token=attempt.push_registration.token,
            reason=result.error,
        )
    if result.outcome is Outcome.RETRY and attempt.tries < settings.NOTIFICATIONS_MAX_TRIES:
        backoff = min(
            settings.NOTIFICATIONS_RETRY_BASE_SECONDS * 2 ** (attempt.tries - 1),
            settings.NOTIFICATIONS_RETRY_MAX_SECONDS,
        )
        wait = max(backoff, min(result.retry_after or 0, settings.NOTIFICATIONS_RETRY_MAX_SECONDS))
        # Back to the queue with a due time; the sweep sends it again once due (no long ETAs).
        NotificationAttempt.objects.filter(pk=attempt.pk, status=AttemptStatus.SENDING).update(
            status=AttemptStatus.QUEUED,
            due_at=now + timedelta(seconds=wait),
            dispatched_at=None,
            error_reason=result.error,
        )
        return
    reason = (
        result.error if result.outcome is not Outcome.RETRY else f"gave up after {attempt.tries} tries: {result.error}"
    )
    _finish(attempt, status=AttemptStatus.FAILED, reason=reason)


# --- the periodic sweep ------------------------------------------------------------------------


def sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Act on every row whose due time has passed; safe to run concurrently (SKIP LOCKED)."""
    now = now or timezone.now()
    return {
        "fallbacks_started": fallbacks_start(now=now),
        "attempts_dispatched": attempts_dispatch_due(now=now),
        "attempts_abandoned": attempts_abandon_stale(now=now),
    }


def fallbacks_start(*, now: datetime) -> int:
    """Start the fallback of every recipient whose deadline passed with no device confirming."""
    with transaction.atomic():
        due = list(
            NotificationRecipient.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("notification", "user")
            .filter(fallback_due_at__lte=now, fallback_started_at=None, confirmed_at=None)
            .order_by("fallback_due_at")[: settings.NOTIFICATIONS_SWEEP_BATCH]
        )
        attempt_ids: list[UUID] = []
        for recipient in due:
            attempt_ids += _start_fallback(recipient=recipient, now=now)
        _dispatch_on_commit(attempt_ids)
    return len(due)


def attempts_dispatch_due(*, now: datetime) -> int:
    """Queue sends whose time has come (retries, quiet hours over) or whose task went missing."""
    with transaction.atomic():
        due = list(
            NotificationAttempt.objects.select_for_update(skip_locked=True)
            .filter(status=AttemptStatus.QUEUED, due_at__lte=now)
            .filter(Q(dispatched_at=None) | Q(dispatched_at__lt=now - REDISPATCH_AFTER))
            .order_by("due_at")
            .values_list("pk", flat=True)[: settings.NOTIFICATIONS_SWEEP_BATCH]
        )
        NotificationAttempt.objects.filter(pk__in=due).update(dispatched_at=now)
        _dispatch_on_commit(due)
    return len(due)


def attempts_abandon_stale(*, now: datetime) -> int:
    """A send claimed long ago with no answer recorded: its worker died mid-call.

    Whether the provider got it cannot be known, so it is not sent again (no duplicate SMS);
    it is marked failed so the dispatcher sees it, and the fallback chain goes on regardless.
    """
    cutoff = now - timedelta(seconds=settings.NOTIFICATIONS_SENDING_STALE_SECONDS)
    return NotificationAttempt.objects.filter(status=AttemptStatus.SENDING, claimed_at__lt=cutoff).update(
        status=AttemptStatus.FAILED, failed_at=now, error_reason="outcome unknown: the worker stopped mid-send"
    )


# --- receipts ---------------------------------------------------------------------------------

RECEIPT_TIMESTAMPS = {
    AttemptStatus.DELIVERED: "delivered_at",
    AttemptStatus.OPENED: "opened_at",
    AttemptStatus.ACKNOWLEDGED: "acknowledged_at",
}


def receipt_record(*, notification_id: UUID | str, device: Device, status: str) -> NotificationRecipient:
    """A device says the notification arrived / was opened / was acknowledged.

    Only a device of a recipient may say so; anyone else gets "not found" and changes nothing.
    Statuses only move forward, so a late "delivered" after "opened" changes nothing either.
    """
    receipt = AttemptStatus(status)
    if receipt not in RECEIPT_TIMESTAMPS:
        raise _invalid("status", "A receipt is delivered, opened or acknowledged.")
    recipient = NotificationRecipient.objects.filter(notification_id=notification_id, user_id=device.user_id).first()
    if recipient is None or device.is_revoked:
        raise NotificationNotFound("Not found.")
    now = timezone.now()
    reached = AttemptStatus.reached()
    stamps = {field: now for step, field in RECEIPT_TIMESTAMPS.items() if reached.index(step) <= reached.index(receipt)}
    with transaction.atomic():
        attempts = NotificationAttempt.objects.filter(recipient=recipient, device=device)
        # The receipt comes from the app itself, so the device's in-app attempt records it even
        # if its own send has not run yet (the app found it by a pull or through a push).
        in_app = attempts.filter(channel=Channel.IN_APP)
        in_app.filter(status__in=AttemptStatus.before(receipt)).update(status=receipt)
        others = attempts.exclude(channel=Channel.IN_APP)
        others.filter(status__in=AttemptStatus.before(receipt)).exclude(status=AttemptStatus.QUEUED).update(
            status=receipt
        )
        # What the device already has need not be sent to it again (a queued push, say).
        others.filter(status=AttemptStatus.QUEUED).update(
            status=AttemptStatus.SUPPRESSED, error_reason="already confirmed by the device"
        )
        for field, moment in stamps.items():
            attempts.filter(**{f"{field}__isnull": True}, status__in=reached).update(**{field: moment})
        if not in_app.exists():
            NotificationAttempt.objects.create(
                notification_id=recipient.notification_id,
                recipient=recipient,
                channel=Channel.IN_APP,
                device=device,
                status=receipt,
                **stamps,
            )
        NotificationRecipient.objects.filter(pk=recipient.pk, confirmed_at=None).update(confirmed_at=now)
        if receipt == AttemptStatus.ACKNOWLEDGED:
            NotificationRecipient.objects.filter(pk=recipient.pk, acknowledged_at=None).update(acknowledged_at=now)
    recipient.refresh_from_db()
    return recipient


SMS_DELIVERED = {"delivered"}
SMS_NOT_DELIVERED = {"undelivered", "failed"}


def sms_status_record(*, provider_message_id: str, status: str, error_code: str = "") -> bool:
    """The SMS provider's delivery report for a message we sent; True if it changed an attempt.

    Reports arrive out of order and more than once; statuses only move forward.
    """
    if not provider_message_id:
        return False
    attempts = NotificationAttempt.objects.filter(channel=Channel.SMS, provider_message_id=provider_message_id)
    now = timezone.now()
    if status in SMS_DELIVERED:
        return bool(
            attempts.filter(status__in=[AttemptStatus.SENDING, AttemptStatus.SENT]).update(
                status=AttemptStatus.DELIVERED, delivered_at=now
            )
        )
    if status in SMS_NOT_DELIVERED:
        reason = f"twilio {status} {error_code}".strip()
        return bool(
            attempts.filter(status__in=[AttemptStatus.SENDING, AttemptStatus.SENT]).update(
                status=AttemptStatus.FAILED, failed_at=now, error_reason=reason[:200]
            )
        )
    return False


# Carrier opt-out words (CTIA): any of them alone stops texts to the number; START resumes.
SMS_STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT"})
SMS_START_WORDS = frozenset({"START", "UNSTOP", "YES"})


def sms_inbound_record(*, from_number: str, body: str) -> str:
    """A reply to our SMS arrived through the SMS backend's inbound hook: honour STOP and START.

    Returns what it did ("opted_out", "opted_in" or "ignored"); the text itself is not kept.
    """
    word = body.strip().upper()
    if not from_number or word not in SMS_STOP_WORDS | SMS_START_WORDS:
        return "ignored"
    allowed = word in SMS_START_WORDS
    with transaction.atomic():
        updated = NotificationPreference.objects.filter(phone_number=from_number).update(sms_allowed=allowed)
        if not updated:
            try:
                with transaction.atomic():
                    NotificationPreference.objects.create(phone_number=from_number, sms_allowed=allowed)
            except IntegrityError:  # a concurrent reply created it
                NotificationPreference.objects.filter(phone_number=from_number).update(sms_allowed=allowed)
    return "opted_in" if allowed else "opted_out"


# --- push registrations and preferences --------------------------------------------------------


def push_registration_save(
    *, device: Device, provider: str, token: str, p256dh: str = "", auth_secret: str = ""
) -> tuple[PushRegistration, bool]:
    """Register or refresh a device's push address; returns (registration, created)."""
    provider = PushProvider(provider)
    now = timezone.now()
    with transaction.atomic():
        # The same token under another device means the phone was signed in again by someone
        # else: the previous user's notifications must stop reaching it.
        PushRegistration.objects.filter(provider=provider, token=token, disabled_at=None).exclude(device=device).update(
            disabled_at=now, disabled_reason="registered again by another device"
        )
        registration, created = PushRegistration.objects.update_or_create(
            device=device,
            provider=provider,
            defaults={
                "token": token,
                "p256dh": p256dh,
                "auth_secret": auth_secret,
                "disabled_at": None,
                "disabled_reason": "",
            },
        )
    return registration, created


def push_registration_remove(*, device: Device, provider: str) -> bool:
    return bool(
        PushRegistration.objects.filter(device=device, provider=provider, disabled_at=None).update(
            disabled_at=timezone.now(), disabled_reason="removed by the device"
        )
    )


def push_registration_disable(*, registration_id: UUID, token: str, reason: str) -> bool:
    """Disable a registration the provider called invalid — unless the device already sent a new token."""
    return bool(
        PushRegistration.objects.filter(pk=registration_id, token=token, disabled_at=None).update(
            disabled_at=timezone.now(), disabled_reason=reason[:200]
        )
    )


def preference_set(
    *,
    user: User | None = None,
    phone_number: str = "",
    email: str = "",
    sms_allowed: bool = True,
    email_allowed: bool = True,
    push_allowed: bool = True,
    quiet_hours: tuple[str, str] | None = None,
    time_zone: str = "UTC",
) -> NotificationPreference:
    """Record how someone may be reached (the follow-ups app calls this for the person in crisis)."""
    if user is None and not phone_number and not email:
        raise _invalid("user", "A preference belongs to a user, a phone number or an email address.")
    lookup: dict[str, Any] = (
        {"user": user} if user is not None else {"phone_number": phone_number} if phone_number else {"email": email}
    )
    start, end = (None, None)
    if quiet_hours is not None:
        start, end = (datetime.strptime(value, "%H:%M").time() for value in quiet_hours)
    preference, _ = NotificationPreference.objects.update_or_create(
        **lookup,
        defaults={
            "phone_number": phone_number,
            "email": email,
            "sms_allowed": sms_allowed,
            "email_allowed": email_allowed,
            "push_allowed": push_allowed,
            "quiet_hours_start": start,
            "quiet_hours_end": end,
            "time_zone": time_zone,
        },
    )
    return preference
