"""Writes of the notifications mechanism.

Domain apps call ``notify`` with who and what; this module decides how (which channels, when
the fallback goes out), records every attempt, and sends after commit from Celery tasks.
"""

from __future__ import annotations

import logging
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial, reduce
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework import status as http_status

from apps.accounts.models import Device, Membership, Program, User
from apps.common import bulk
from apps.common.api.errors import DomainError
from apps.notifications import ratelimit
from apps.notifications.channels import Message, Outcome, PushTarget, SendResult, registry
from apps.notifications.channels.in_app import send_in_app_many
from apps.notifications.models import (
    AttemptStatus,
    Channel,
    InboundSms,
    Notification,
    NotificationAttempt,
    NotificationPreference,
    NotificationRecipient,
    PushProvider,
    PushRegistration,
    Urgency,
    validate_time_zone,
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


def phone_number_e164(number: str) -> str:
    """The number as Twilio writes it (E.164), so that a STOP from "+12125550142" is the
    opt-out of the person recorded as "(212) 555-0142" and every lookup by number agrees.

    Without a "+" (or "00") the number is national: its trunk prefix ("0", or "1" in North
    America) is dropped and ``NOTIFICATIONS_SMS_DEFAULT_COUNTRY_CODE`` put in front.
    """
    digits = re.sub(r"\D", "", number)
    if not digits:
        return number.strip()
    if number.strip().startswith("+"):
        return f"+{digits}"
    if digits.startswith("00"):
        return f"+{digits[2:]}"
    code = settings.NOTIFICATIONS_SMS_DEFAULT_COUNTRY_CODE
    if code == "1" and len(digits) == 11 and digits.startswith("1"):
        return f"+{digits}"
    return f"+{code}{digits.lstrip('0')}"


class NotificationNotFound(DomainError):
    status_code = http_status.HTTP_404_NOT_FOUND
    code = "not_found"


def _invalid(field: str, detail: str) -> DomainError:
    return DomainError(detail, code="invalid", field=field, status_code=http_status.HTTP_400_BAD_REQUEST)


# --- notify -------------------------------------------------------------------------------


def _validate(*, kind: str, text: str, link: str, web_link: str, urgency: str) -> None:
    if not KIND_PATTERN.match(kind):
        raise _invalid("kind", "A kind is a short lowercase name such as assignment.offered.")
    if not text.strip() or len(text) > MAX_TEXT_LENGTH or "\n" in text or "\r" in text:
        # Short and one line: room to say "there is an assignment", not to carry a note.
        raise _invalid("text", f"The text is one line of at most {MAX_TEXT_LENGTH} characters.")
    if link and (len(link) > 300 or not LINK_PATTERN.match(link)):
        # A path of ids, no query string: nothing about the person can ride along in a link.
        raise _invalid("link", "The link is an in-app path such as /assignments/<id>, without a query string.")
    if web_link and (len(web_link) > 300 or not LINK_PATTERN.match(web_link)):
        raise _invalid("web_link", "The web link is a staff site path such as /admin/…/, without a query string.")
    if urgency not in Urgency.values:
        raise _invalid("urgency", f"Urgency is one of {', '.join(Urgency.values)}.")


@dataclass(frozen=True)
class NotificationRequest:
    """One notification to create: the arguments of ``notify``, for ``notify_many``."""

    program: Program
    kind: str
    text: str
    link: str = ""
    web_link: str = ""
    urgency: str = Urgency.NORMAL
    recipients: Sequence[UUID | str] = ()
    unit: UUID | str | None = None
    contacts: Sequence[Contact] = ()
    dedupe_key: str = ""


def notify(
    *,
    program: Program,
    kind: str,
    text: str,
    link: str = "",
    web_link: str = "",
    urgency: str = Urgency.NORMAL,
    recipients: Sequence[UUID | str] = (),
    unit: UUID | str | None = None,
    contacts: Sequence[Contact] = (),
    dedupe_key: str = "",
) -> Notification:
    """Reach users (and/or the members on shift of a unit, and/or contacts) about one thing.

    ``text`` says that there is something (an assignment, a reminder) and never what it is
    about: no names, no health information. ``link`` is the path the app opens it with (push
    and in-app); ``web_link`` the staff site's page a person at a computer opens from an SMS or
    email after signing in (none: the text or email names no page). Both are paths of ids. The
    same ``dedupe_key`` twice returns the first notification and sends nothing again. Sending
    starts after the caller's transaction commits.
    """
    request = NotificationRequest(
        program=program,
        kind=kind,
        text=text,
        link=link,
        web_link=web_link,
        urgency=urgency,
        recipients=recipients,
        unit=unit,
        contacts=contacts,
        dedupe_key=dedupe_key,
    )
    return notify_many(requests=[request])[0]


def notify_many(*, requests: Sequence[NotificationRequest]) -> list[Notification]:
    """``notify`` for many notifications at once, in order: the same rules, a fixed number of queries.

    The lookups (users, memberships, preferences, devices, push registrations) are one query
    each for the whole batch, the rows are bulk inserts, and the sends go out as a few tasks
    that each take a chunk of attempt ids. Any invalid request refuses the whole batch.
    """
    for request in requests:
        _validate(
            kind=request.kind, text=request.text, link=request.link, web_link=request.web_link, urgency=request.urgency
        )
    results: list[Notification | None] = [None] * len(requests)
    existing = _existing_by_dedupe_key(requests)
    fresh: list[int] = []
    first_of_key: dict[tuple[UUID, str], int] = {}
    for index, request in enumerate(requests):
        key = (request.program.pk, request.dedupe_key)
        if request.dedupe_key and key in existing:
            results[index] = existing[key]
        elif request.dedupe_key and key in first_of_key:
            continue  # the same key twice in one batch: one notification, filled in below
        else:
            first_of_key[key] = index
            fresh.append(index)
    users_of = _resolve_users_many([requests[index] for index in fresh])
    try:
        with transaction.atomic():
            planner = _Planner(now=timezone.now(), users=[user for users in users_of for user in users])
            for index, users in zip(fresh, users_of, strict=True):
                results[index] = planner.plan(requests[index], users=users)
            planner.save()
    except IntegrityError:
        if not any(requests[index].dedupe_key for index in fresh):
            raise
        if len(requests) > 1:
            # A concurrent call took one of the keys first: settle each request on its own.
            return [notify_many(requests=[request])[0] for request in requests]
        # A concurrent call with the same key won the race.
        return [Notification.objects.get(program=requests[0].program, dedupe_key=requests[0].dedupe_key)]
    _dispatch_on_commit(planner.due_now)
    for index, request in enumerate(requests):
        if results[index] is None:
            results[index] = results[first_of_key[(request.program.pk, request.dedupe_key)]]
    return [notification for notification in results if notification is not None]


def _existing_by_dedupe_key(requests: Sequence[NotificationRequest]) -> dict[tuple[UUID, str], Notification]:
    keys = {(request.program.pk, request.dedupe_key) for request in requests if request.dedupe_key}
    if not keys:
        return {}
    rows = Notification.objects.filter(
        program_id__in={program_id for program_id, _ in keys}, dedupe_key__in={key for _, key in keys}
    )
    return {(row.program_id, row.dedupe_key): row for row in rows if (row.program_id, row.dedupe_key) in keys}


def _resolve_users_many(requests: Sequence[NotificationRequest]) -> list[list[User]]:
    """The users each request reaches, checked: every one an active member of its program."""
    wanted: list[set[str]] = []
    for request in requests:
        try:
            user_ids = {str(UUID(str(user_id))) for user_id in request.recipients}
        except ValueError:
            raise _invalid("recipients", "Recipients are user ids.") from None
        if request.unit is not None:
            unit_row = Unit.objects.filter(pk=request.unit, program=request.program).first()
            if unit_row is None:
                raise _invalid("unit", "No such unit in this program.")
            # Only the crew on shift: an off-shift member is not woken for an assignment.
            user_ids |= {
                str(uid) for uid in unit_row.memberships.filter(is_on_shift=True).values_list("user_id", flat=True)
            }
        wanted.append(user_ids)
    all_ids = set().union(*wanted) if wanted else set()
    if not all_ids:
        return [[] for _ in requests]
    users = {str(user.pk): user for user in User.objects.filter(pk__in=all_ids, is_active=True)}
    members = set(
        Membership.objects.filter(
            program_id__in={request.program.pk for request in requests}, user_id__in=list(users)
        ).values_list("program_id", "user_id")
    )
    resolved: list[list[User]] = []
    for request, user_ids in zip(requests, wanted, strict=True):
        if any(user_id not in users or (request.program.pk, users[user_id].pk) not in members for user_id in user_ids):
            # Nothing crosses from one program to another, not even a notification.
            raise _invalid("recipients", "Every recipient must be an active member of the notification's program.")
        resolved.append(sorted((users[user_id] for user_id in user_ids), key=lambda user: user.pk))
    return resolved


class _Preferences:
    """The preferences that may apply to a set of users and addresses, read in one query.

    A lookup answers what ``filter(user | phone | email).first()`` would: the oldest row by id.
    """

    def __init__(
        self, *, users: Iterable[object] = (), phone_numbers: Iterable[str] = (), emails: Iterable[str] = ()
    ) -> None:
        queries = []
        if user_ids := set(users):
            queries.append(Q(user_id__in=user_ids))
        if phones := {phone for phone in phone_numbers if phone}:
            queries.append(Q(phone_number__in=phones))
        if addresses := {email for email in emails if email}:
            queries.append(Q(email__in=addresses))
        self.rows: list[NotificationPreference] = []
        if queries:
            self.rows = list(NotificationPreference.objects.filter(reduce(operator.or_, queries)).order_by("pk"))

    def get(self, *, user_id: object = None, phone_number: str = "", email: str = "") -> NotificationPreference | None:
        for row in self.rows:
            if (
                (user_id is not None and row.user_id == user_id)
                or (phone_number and row.phone_number == phone_number)
                or (email and row.email == email)
            ):
                return row
        return None


class _Planner:
    """Builds the rows of a batch of notifications in memory, then inserts them in bulk."""

    def __init__(self, *, now: datetime, users: Sequence[User]) -> None:
        self.now = now
        self.notifications: list[Notification] = []
        self.recipients: list[NotificationRecipient] = []
        self.attempts: list[NotificationAttempt] = []
        self.due_now: list[tuple[UUID, str]] = []
        self._contact_preferences: _Preferences | None = None
        self._pending_contacts: list[tuple[Notification, NotificationRecipient, Contact]] = []
        user_ids = {user.pk for user in users}
        self.user_preferences = _Preferences(users=user_ids)
        self.devices: dict[UUID, list[Device]] = {}
        for device in Device.objects.filter(user_id__in=user_ids, revoked_at=None).order_by("pk"):
            self.devices.setdefault(device.user_id, []).append(device)
        self._registrations: dict[UUID, list[PushRegistration]] | None = None

    def registrations_of(self, devices: list[Device]) -> list[PushRegistration]:
        if self._registrations is None:
            every_device = [device for devices_of in self.devices.values() for device in devices_of]
            self._registrations = {}
            for registration in PushRegistration.objects.filter(device__in=every_device, disabled_at=None).order_by(
                "pk"
            ):
                self._registrations.setdefault(registration.device_id, []).append(registration)
        found = [registration for device in devices for registration in self._registrations.get(device.pk, [])]
        return sorted(found, key=lambda registration: registration.pk)

    def plan(self, request: NotificationRequest, *, users: list[User]) -> Notification:
        notification = Notification(
            program=request.program,
            kind=request.kind,
            text=request.text.strip(),
            link=request.link,
            web_link=request.web_link,
            urgency=request.urgency,
            unit_id=request.unit,
            dedupe_key=request.dedupe_key,
        )
        self.notifications.append(notification)
        for user in users:
            self._plan_user(notification, user)
        for contact in request.contacts:
            if not contact.phone_number and not contact.email:
                raise _invalid("contacts", "A contact needs a phone number or an email address.")
            if contact.phone_number:
                contact = Contact(phone_number=phone_number_e164(contact.phone_number), email=contact.email)
            recipient = NotificationRecipient(
                notification=notification, phone_number=contact.phone_number, email=contact.email
            )
            self.recipients.append(recipient)
            self._pending_contacts.append((notification, recipient, contact))
        return notification

    def _add(self, attempt: NotificationAttempt, preference: NotificationPreference | None, urgency: str) -> None:
        attempt.due_at = _due_at(preference=preference, urgency=urgency, channel=attempt.channel, now=self.now)
        attempt.dispatched_at = self.now if attempt.due_at <= self.now else None
        self.attempts.append(attempt)
        if attempt.dispatched_at is not None:
            self.due_now.append((attempt.pk, attempt.channel))

    def _plan_user(self, notification: Notification, user: User) -> None:
        urgency = Urgency(notification.urgency)
        preference = self.user_preferences.get(user_id=user.pk)
        devices = self.devices.get(user.pk, [])
        fallback = FALLBACK_CHANNEL.get(urgency)
        delay = (
            settings.NOTIFICATIONS_URGENT_FALLBACK_SECONDS
            if urgency == Urgency.URGENT
            else settings.NOTIFICATIONS_NORMAL_FALLBACK_SECONDS
        )
        recipient = NotificationRecipient(
            notification=notification,
            user=user,
            fallback_due_at=self.now + timedelta(seconds=delay) if fallback else None,
        )
        self.recipients.append(recipient)
        channels = IMMEDIATE_CHANNELS[urgency]
        planned = 0
        if Channel.IN_APP in channels:
            for device in devices:
                attempt = NotificationAttempt(
                    notification=notification, recipient=recipient, channel=Channel.IN_APP, device=device
                )
                self._add(attempt, preference, urgency)
                planned += 1
        if Channel.PUSH in channels and devices:
            for registration in self.registrations_of(devices):
                attempt = NotificationAttempt(
                    notification=notification,
                    recipient=recipient,
                    channel=Channel.PUSH,
                    device_id=registration.device_id,
                    push_registration=registration,
                )
                self._add(attempt, preference, urgency)
                planned += 1
        if fallback and not planned:
            # No device to try first: go straight to the fallback rather than wait for nothing.
            recipient.fallback_started_at = self.now
            address = user.phone_number if fallback == Channel.SMS else user.email
            if not address:
                self.attempts.append(
                    NotificationAttempt(
                        notification=notification,
                        recipient=recipient,
                        channel=fallback,
                        status=AttemptStatus.FAILED,
                        failed_at=self.now,
                        error_reason=f"no {Channel(fallback).label} address on file",
                    )
                )
                return
            attempt = NotificationAttempt(
                notification=notification, recipient=recipient, channel=fallback, address=address
            )
            self._add(attempt, preference, urgency)

    def _plan_contacts(self) -> None:
        pending = self._pending_contacts
        if not pending:
            return
        preferences = _Preferences(
            phone_numbers=[contact.phone_number for _, _, contact in pending],
            emails=[contact.email for _, _, contact in pending],
        )
        for notification, recipient, contact in pending:
            prefer_sms = notification.urgency != Urgency.LOW
            if contact.phone_number and (prefer_sms or not contact.email):
                channel, address = Channel.SMS, contact.phone_number
            else:
                channel, address = Channel.EMAIL, contact.email
            preference = preferences.get(phone_number=contact.phone_number, email=contact.email)
            attempt = NotificationAttempt(
                notification=notification, recipient=recipient, channel=channel, address=address
            )
            self._add(attempt, preference, notification.urgency)

    def save(self) -> None:
        self._plan_contacts()
        bulk.insert(self.notifications)
        bulk.insert(self.recipients)
        bulk.insert(self.attempts)


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


def _start_fallback(*, recipient: NotificationRecipient, now: datetime) -> list[tuple[UUID, str]]:
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
    return [(attempt.pk, attempt.channel)] if created and attempt.dispatched_at else []


def _dispatch_on_commit(attempts: Iterable[tuple[UUID, str]]) -> None:
    """Queue the sends after commit: a task per chunk of attempt ids of one channel.

    In-app attempts never share a task with provider calls, so a slow push or SMS provider
    cannot hold back what goes to open sockets.
    """
    by_channel: dict[str, list[str]] = {}
    for attempt_id, channel in attempts:
        by_channel.setdefault(channel, []).append(str(attempt_id))
    if not by_channel:
        return
    queue = settings.NOTIFICATIONS_TASK_QUEUE
    chunk = settings.NOTIFICATIONS_SEND_CHUNK

    def enqueue() -> None:
        from apps.notifications.tasks import send_attempts

        for ids in by_channel.values():
            for start in range(0, len(ids), chunk):
                send_attempts.apply_async((ids[start : start + chunk],), queue=queue)

    transaction.on_commit(enqueue)


# --- sending --------------------------------------------------------------------------------

CLAIM_SQL = """
UPDATE notifications_notificationattempt
SET status = %(sending)s, claimed_at = %(now)s, tries = tries + 1, provider_called_at = NULL
WHERE id = ANY(%(ids)s::uuid[]) AND status = %(queued)s AND due_at <= %(now)s
RETURNING id
"""

# Just before a provider call: the sends about to be handed over are marked so (only those
# still this worker's: sending, claimed by its own try, not handed over yet), and the claim of
# the chunk's other sends still in flight is renewed (this worker is alive).
HAND_OVER_SQL = """
UPDATE notifications_notificationattempt AS attempt
SET claimed_at = %(now)s,
    provider_called_at = CASE WHEN attempt.id = ANY(%(handing)s::uuid[]) THEN %(now)s
                              ELSE attempt.provider_called_at END
FROM unnest(%(ids)s::uuid[], %(tries)s::int[]) AS mine(id, tries)
WHERE attempt.id = mine.id AND attempt.tries = mine.tries AND attempt.status = %(sending)s
  AND (attempt.id <> ALL(%(handing)s::uuid[]) OR attempt.provider_called_at IS NULL)
RETURNING attempt.id
"""

OUTCOME_UNKNOWN_WORKER_DIED = "outcome unknown: the worker stopped mid-send"
OUTCOME_UNKNOWN_STOPPED = "outcome unknown: the send task was stopped mid-send"

RECORD_SENT_SQL = """
UPDATE notifications_notificationattempt AS attempt
SET sent_at = %(now)s, provider_message_id = sent.provider_message_id, error_reason = '',
    status = CASE WHEN attempt.status = %(sending)s THEN %(sent)s ELSE attempt.status END
FROM unnest(%(ids)s::uuid[], %(provider_message_ids)s::text[]) AS sent(id, provider_message_id)
WHERE attempt.id = sent.id
"""


def attempt_send(*, attempt_id: str) -> str:
    """Send one attempt, at most once (see ``attempts_send``); returns what became of it."""
    outcomes = _attempts_send([attempt_id])
    return outcomes.get(str(attempt_id), "not_claimed")


def attempts_send(*, attempt_ids: Sequence[str]) -> dict[str, int]:
    """Send a chunk of attempts, each at most once; returns how many ended which way.

    Every row is claimed (queued → sending, committed) before its provider is called, all in
    one statement, so a retried or redelivered task finds the rows no longer queued and sends
    nothing again. Each provider's answer is recorded as it comes. If the task is stopped
    mid-chunk (its soft time limit), the send in flight is marked of unknown outcome and those
    not yet handed over are queued again at once; if the worker dies, they stay "sending" and
    the stale sweep does the same later — never a second SMS.
    """
    outcomes = _attempts_send(attempt_ids)
    counts = Counter(outcomes.values())
    if len(outcomes) < len(attempt_ids):
        counts["not_claimed"] += len(attempt_ids) - len(outcomes)
    return dict(counts)


def _attempts_send(attempt_ids: Sequence[str]) -> dict[str, str]:
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            CLAIM_SQL,
            {
                "ids": [str(attempt_id) for attempt_id in attempt_ids],
                "now": now,
                "sending": AttemptStatus.SENDING,
                "queued": AttemptStatus.QUEUED,
            },
        )
        claimed = [row[0] for row in cursor.fetchall()]
    if not claimed:
        return {}
    attempts = list(
        NotificationAttempt.objects.select_related(
            "notification", "recipient", "recipient__user", "device", "push_registration"
        )
        .filter(pk__in=claimed)
        .order_by("created_at", "pk")
    )
    outcomes: dict[str, str] = {}
    to_send: list[NotificationAttempt] = []
    for attempt, refusal in zip(attempts, _refusals(attempts), strict=True):
        if refusal is not None:
            status, reason = refusal
            _finish(attempt, status=status, reason=reason)
            outcomes[str(attempt.pk)] = status
        else:
            to_send.append(attempt)
    hand_over = partial(_hand_over, attempts)
    in_flight: list[NotificationAttempt] = []
    try:
        with _Backends() as backends:
            in_app = hand_over([attempt for attempt in to_send if attempt.channel == Channel.IN_APP])
            in_flight[:] = in_app
            results = send_in_app_many([(attempt.device_id, _message(attempt)) for attempt in in_app])
            _record_answers(list(zip(in_app, results, strict=True)), outcomes)
            in_flight.clear()
            for attempt in to_send:
                # Each send is marked handed over just before its call, so a worker killed mid-chunk
                # leaves one send of unknown outcome; the others are known not sent and go out again.
                # (The mark renews the chunk's claim too: a chunk slowed by its provider, outlasting
                # NOTIFICATIONS_SENDING_STALE_SECONDS, is not taken for a dead worker's.)
                if attempt.channel == Channel.IN_APP or not hand_over([attempt]):
                    continue
                in_flight[:] = [attempt]
                try:
                    result = backends.send(attempt, _message(attempt))
                except ImproperlyConfigured as error:
                    logger.error("notification attempt %s: channel not configured: %s", attempt.pk, error)
                    result = SendResult.failed(f"{attempt.channel} not configured")
                # Recorded at once, not at the chunk's end: a chunk stopped later (its soft time
                # limit, its worker) leaves this one sent, with the id its delivery report carries.
                _record_answers([(attempt, result)], outcomes)
                in_flight.clear()
    except BaseException:
        # Stopped mid-chunk (SoftTimeLimitExceeded, an adapter's bug): settle the rest now rather
        # than leave it to the stale sweep, then let the task fail as it would have.
        _release(attempts, in_flight=in_flight)
        raise
    return outcomes


def _record_answers(answers: Sequence[tuple[NotificationAttempt, SendResult]], outcomes: dict[str, str]) -> None:
    sent = [(attempt, result) for attempt, result in answers if result.outcome is Outcome.SENT]
    _record_sent(sent)
    for attempt, result in answers:
        if result.outcome is not Outcome.SENT:
            _record(attempt, result)
        outcomes[str(attempt.pk)] = result.outcome.value


def _release(chunk: Sequence[NotificationAttempt], *, in_flight: Sequence[NotificationAttempt]) -> None:
    """A chunk stopped before its end: the sends handed to their provider and unanswered are of
    unknown outcome (never sent again); those never handed over go back to the queue, for the
    next sweep to send, rather than wait NOTIFICATIONS_SENDING_STALE_SECONDS to be found stale.
    Only rows still this try's are touched."""
    mine = reduce(operator.or_, (Q(pk=attempt.pk, tries=attempt.tries) for attempt in chunk))
    try:
        still = NotificationAttempt.objects.filter(mine, status=AttemptStatus.SENDING)
        unknown = still.filter(provider_called_at__isnull=False).update(
            status=AttemptStatus.FAILED, failed_at=timezone.now(), error_reason=OUTCOME_UNKNOWN_STOPPED
        )
        requeued = still.filter(provider_called_at=None).update(
            status=AttemptStatus.QUEUED, claimed_at=None, dispatched_at=None
        )
    except Exception:
        # The database is gone too: the stale sweep settles the chunk later, as for a dead worker.
        logger.exception("send chunk stopped; its unsettled sends are left to the stale sweep")
        return
    logger.warning(
        "send chunk stopped mid-way (in flight: %s): %d of unknown outcome, %d queued again",
        [str(attempt.pk) for attempt in in_flight],
        unknown,
        requeued,
    )


def _hand_over(
    chunk: Sequence[NotificationAttempt], handing: Sequence[NotificationAttempt]
) -> list[NotificationAttempt]:
    """Mark ``handing`` as handed to its provider now; returns those still this worker's to send
    (a send the stale sweep queued again, and another worker claimed, is no longer)."""
    if not handing:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            HAND_OVER_SQL,
            {
                "now": timezone.now(),
                "handing": [str(attempt.pk) for attempt in handing],
                "ids": [str(attempt.pk) for attempt in chunk],
                "tries": [attempt.tries for attempt in chunk],
                "sending": AttemptStatus.SENDING,
            },
        )
        mine = {row[0] for row in cursor.fetchall()}
    return [attempt for attempt in handing if attempt.pk in mine]


def _message(attempt: NotificationAttempt) -> Message:
    return Message(
        notification_id=str(attempt.notification_id),
        attempt_id=str(attempt.pk),
        kind=attempt.notification.kind,
        urgency=attempt.notification.urgency,
        text=attempt.notification.text,
        link=attempt.notification.link,
        web_link=attempt.notification.web_link,
        link_base_url=settings.NOTIFICATIONS_LINK_BASE_URL,
    )


def _refusals(attempts: Sequence[NotificationAttempt]) -> list[tuple[AttemptStatus, str] | None]:
    """Why each attempt must not go out (revoked device, deactivated user, opt-out, rate
    limit), or None."""
    addressed = [attempt for attempt in attempts if attempt.channel != Channel.IN_APP]
    preferences = _Preferences(
        users=[attempt.recipient.user_id for attempt in addressed if attempt.recipient.user_id],
        phone_numbers=[attempt.recipient.phone_number for attempt in addressed]
        + [phone_number_e164(attempt.address) for attempt in addressed if attempt.channel == Channel.SMS],
        emails=[attempt.recipient.email for attempt in addressed]
        + [attempt.address for attempt in addressed if attempt.channel == Channel.EMAIL],
    )
    refusals: list[tuple[AttemptStatus, str] | None] = []
    counted: list[tuple[int, NotificationAttempt]] = []
    for attempt in attempts:
        refusal: tuple[AttemptStatus, str] | None = None
        registration = attempt.push_registration
        recipient = attempt.recipient
        if attempt.device is not None and attempt.device.is_revoked:
            refusal = AttemptStatus.FAILED, "device revoked"
        elif recipient.user is not None and not recipient.user.is_active:
            # Deactivated since the plan: locked out as their devices are, so the text reaches
            # none of their devices, numbers or addresses.
            refusal = AttemptStatus.FAILED, "user deactivated"
        elif attempt.channel == Channel.PUSH and (registration is None or not registration.is_enabled):
            refusal = AttemptStatus.FAILED, "push registration disabled"
        elif attempt.channel in FALLBACK_CHANNEL.values() and recipient.confirmed_at is not None:
            # A device confirmed while the fallback waited (its task, a retry's backoff, quiet
            # hours): the user has it, so the chain stops here. Read after the claim, so a
            # receipt that raced the fallback's start is seen too.
            refusal = AttemptStatus.SUPPRESSED, "already confirmed by a device"
        elif attempt.channel != Channel.IN_APP:
            preference = preferences.get(
                user_id=recipient.user_id, phone_number=recipient.phone_number, email=recipient.email
            )
            # A user's SMS or email goes to their number or address, which may have opted out
            # on its own (a STOP reply is recorded by number, not by user): either refusal holds.
            by_address = None
            if attempt.channel == Channel.SMS and attempt.address:
                by_address = preferences.get(phone_number=phone_number_e164(attempt.address))
            elif attempt.channel == Channel.EMAIL and attempt.address:
                by_address = preferences.get(email=attempt.address)
            if any(found is not None and not found.allows(attempt.channel) for found in (preference, by_address)):
                refusal = AttemptStatus.SUPPRESSED, "recipient opted out of this channel"
            elif attempt.tries == 1:
                # Counted once per attempt: a retry of the same message is not a second message.
                counted.append((len(refusals), attempt))
        refusals.append(refusal)
    allowed = ratelimit.take_many([(attempt.channel, attempt.recipient.rate_limit_key) for _, attempt in counted])
    for (index, _), ok in zip(counted, allowed, strict=True):
        if not ok:
            refusals[index] = AttemptStatus.SUPPRESSED, "rate limited"
    return refusals


class _Backends:
    """The adapters of one chunk of sends, built once and closed after (one SMTP connection)."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}
        self._stack = ExitStack()

    def __enter__(self) -> _Backends:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _backend(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._built:
            backend = build()
            if hasattr(backend, "__enter__"):
                backend = self._stack.enter_context(backend)
            self._built[name] = backend
        return self._built[name]

    def send(self, attempt: NotificationAttempt, message: Message) -> SendResult:
        if attempt.channel == Channel.PUSH:
            registration = attempt.push_registration
            assert registration is not None
            target = PushTarget(
                registration.provider, registration.token, registration.p256dh, registration.auth_secret
            )
            provider = registration.provider
            backend = self._backend(f"push-{provider}", lambda: registry.push_backend(provider))
            return backend.send(target, message)
        if attempt.channel == Channel.SMS:
            return self._backend("sms", registry.sms_backend).send(attempt.address, message)
        return self._backend("email", registry.email_backend).send(attempt.address, message)


def _record_sent(sent: Sequence[tuple[NotificationAttempt, SendResult]]) -> None:
    """Record the provider's answers of sent attempts in one statement.

    A device's receipt may have overtaken the provider's answer; the status never steps back from it.
    """
    if not sent:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            RECORD_SENT_SQL,
            {
                "now": timezone.now(),
                "ids": [str(attempt.pk) for attempt, _ in sent],
                "provider_message_ids": [result.provider_message_id for _, result in sent],
                "sending": AttemptStatus.SENDING,
                "sent": AttemptStatus.SENT,
            },
        )


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
    fallbacks_started = fallbacks_start(now=now)
    # Before the dispatch, so that a send queued again goes out in this same run.
    attempts_requeued = attempts_requeue_unsent(now=now)
    return {
        "fallbacks_started": fallbacks_started,
        "attempts_requeued": attempts_requeued,
        "attempts_abandoned": attempts_abandon_stale(now=now),
        "attempts_dispatched": attempts_dispatch_due(now=now),
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
        attempts: list[tuple[UUID, str]] = []
        for recipient in due:
            attempts += _start_fallback(recipient=recipient, now=now)
        _dispatch_on_commit(attempts)
    return len(due)


def attempts_dispatch_due(*, now: datetime) -> int:
    """Queue sends whose time has come (retries, quiet hours over) or whose task went missing."""
    with transaction.atomic():
        due = list(
            NotificationAttempt.objects.select_for_update(skip_locked=True)
            .filter(status=AttemptStatus.QUEUED, due_at__lte=now)
            .filter(Q(dispatched_at=None) | Q(dispatched_at__lt=now - REDISPATCH_AFTER))
            .order_by("due_at")
            .values_list("pk", "channel")[: settings.NOTIFICATIONS_SWEEP_BATCH]
        )
        NotificationAttempt.objects.filter(pk__in=[pk for pk, _ in due]).update(dispatched_at=now)
        _dispatch_on_commit(due)
    return len(due)


def attempts_requeue_unsent(*, now: datetime) -> int:
    """A send claimed long ago and never handed to its provider: its worker died before its
    turn in the chunk. It is known not sent, so it is queued again (the dispatch sends it)."""
    cutoff = now - timedelta(seconds=settings.NOTIFICATIONS_SENDING_STALE_SECONDS)
    return NotificationAttempt.objects.filter(
        status=AttemptStatus.SENDING, claimed_at__lt=cutoff, provider_called_at=None
    ).update(status=AttemptStatus.QUEUED, claimed_at=None, dispatched_at=None)


def attempts_abandon_stale(*, now: datetime) -> int:
    """A send handed to its provider long ago with no answer recorded: its worker died mid-call.

    Whether the provider got it cannot be known, so it is not sent again (no duplicate SMS);
    it is marked failed so the dispatcher sees it, and the fallback chain goes on regardless.
    """
    cutoff = now - timedelta(seconds=settings.NOTIFICATIONS_SENDING_STALE_SECONDS)
    return NotificationAttempt.objects.filter(
        status=AttemptStatus.SENDING, claimed_at__lt=cutoff, provider_called_at__isnull=False
    ).update(status=AttemptStatus.FAILED, failed_at=now, error_reason=OUTCOME_UNKNOWN_WORKER_DIED)


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
            try:
                with transaction.atomic():
                    NotificationAttempt.objects.create(
                        notification_id=recipient.notification_id,
                        recipient=recipient,
                        channel=Channel.IN_APP,
                        device=device,
                        status=receipt,
                        **stamps,
                    )
            except IntegrityError:
                # Another receipt of this device (over the socket and REST at once) made it a
                # moment ago: move that one forward instead.
                in_app.filter(status__in=AttemptStatus.before(receipt)).update(status=receipt)
                for field, moment in stamps.items():
                    in_app.filter(**{f"{field}__isnull": True}).update(**{field: moment})
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


# Carrier opt-out words (CTIA) and the others Twilio blocks the number on by default (REVOKE):
# any of them alone stops texts to the number; START resumes.
SMS_STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
SMS_START_WORDS = frozenset({"START", "UNSTOP", "YES"})


def sms_inbound_record(*, from_number: str, body: str, opt_out_type: str = "", message_sid: str = "") -> str:
    """A reply to our SMS arrived through the SMS backend's inbound hook: honour STOP and START.

    ``opt_out_type`` is the provider's own reading of the reply (Twilio's OptOutType, sent with
    Advanced Opt-Out): it covers the keywords configured there, in any language, so it wins
    over the English words. A message (``message_sid``) acts once: sent again, it is
    "ignored". Returns what it did ("opted_out", "opted_in" or "ignored"); the text itself is
    not kept.
    """
    classified = opt_out_type.strip().upper()
    word = classified if classified in {"STOP", "START"} else body.strip().upper()
    if not from_number or word not in SMS_STOP_WORDS | SMS_START_WORDS:
        return "ignored"
    from_number = phone_number_e164(from_number)
    allowed = word in SMS_START_WORDS
    with transaction.atomic():
        if message_sid:
            try:
                with transaction.atomic():
                    InboundSms.objects.create(message_sid=message_sid[:64])
            except IntegrityError:  # a replay, or Twilio's retry of a request we answered
                return "ignored"
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
    phone_number = phone_number_e164(phone_number) if phone_number else ""
    lookup: dict[str, Any] = (
        {"user": user} if user is not None else {"phone_number": phone_number} if phone_number else {"email": email}
    )
    try:
        validate_time_zone(time_zone)
    except ValidationError as error:
        raise _invalid("time_zone", error.messages[0]) from None
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
