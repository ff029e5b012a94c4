"""Writes for dispatch: intake and triage, offers and acknowledgements, crew status, escalation.

Every change to an incident, an assignment or a unit's status becomes a change-feed entry in
the same transaction (apps.sync), addressed to the unit's crew and to the program's
dispatchers and supervisors; connected devices are nudged after commit. Locks are taken in a
fixed order — the units' boards (_lock_unit_boards), then the incident, then the assignment,
then unit rows by primary key — so concurrent actions on one incident or unit queue up
instead of deadlocking, and the board's entries are served in the order they were written.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.expressions import RawSQL
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Device, Program, Role, User
from apps.audit.models import AccessAction
from apps.audit.services import Accessor, record_access
from apps.common.api.errors import DomainError
from apps.common.locks import advisory_lock_key, lock_in_order
from apps.dispatch import selectors
from apps.dispatch.models import (
    UNIT_STATUS_FOR,
    AlertKind,
    Assignment,
    AssignmentStatus,
    EventKind,
    Incident,
    IncidentStatus,
    SupervisorAlert,
    TimelineEvent,
    TriagePolicy,
    UnservedReason,
)
from apps.dispatch.payloads import (
    DROPPED_BY_CREW,
    alert_payload,
    assignment_payload,
    crew_assignment_payload,
    incident_payload,
    unit_payload,
)
from apps.notifications.models import Urgency
from apps.notifications.services import NotificationRequest, notify_many
from apps.sync.models import ChangeEntry, ChangeOperation
from apps.sync.scopes import program_role_scope, unit_scope
from apps.sync.selectors import record_as_served, synced_type_of
from apps.sync.services import WrittenSinceTransactionBegan, lock_records, publish_record, record_change
from apps.teams.models import Unit, UnitStatus

logger = logging.getLogger(__name__)

INCIDENT_RECORD = "dispatch.incident"
ASSIGNMENT_RECORD = "dispatch.assignment"
ALERT_RECORD = "dispatch.alert"
UNIT_RECORD = "teams.unit"
# A crew's status time: a synced record (apps.dispatch.sync), however it was reported.
STATUS_TIME_RECORD = "dispatch.status_time"


# ---------------------------------------------------------------------------------------------
# Feed entries


def staff_scopes(program_id: UUID) -> list[str]:
    return [program_role_scope(program_id, Role.DISPATCHER), program_role_scope(program_id, Role.SUPERVISOR)]


def _publish_incident(incident: Incident, *, origin_device_id: UUID | None = None) -> None:
    record_change(
        program_id=incident.program_id,
        record_type=INCIDENT_RECORD,
        record_id=incident.pk,
        scopes=staff_scopes(incident.program_id),
        data=incident_payload(incident),
        origin_device_id=origin_device_id,
    )


def _publish_assignment(assignment: Assignment, *, origin_device_id: UUID | None = None) -> None:
    program_id = assignment.incident.program_id
    payload = assignment_payload(assignment)
    if assignment.status in DROPPED_BY_CREW:
        # The crew no longer needs the call's details on their devices (P5): tell them to drop it.
        crew_operation, crew_data = ChangeOperation.REMOVE, crew_assignment_payload(assignment)
    else:
        crew_operation, crew_data = ChangeOperation.UPSERT, payload
    # The crew's entry first: its nudge is the first to go out after commit.
    record_change(
        program_id=program_id,
        record_type=ASSIGNMENT_RECORD,
        record_id=assignment.pk,
        scopes=[unit_scope(assignment.unit_id)],
        data=crew_data,
        operation=crew_operation,
        origin_device_id=origin_device_id,
    )
    record_change(
        program_id=program_id,
        record_type=ASSIGNMENT_RECORD,
        record_id=assignment.pk,
        scopes=staff_scopes(program_id),
        data=payload,
        origin_device_id=origin_device_id,
    )


def _publish_unit(unit: Unit, *, origin_device_id: UUID | None = None) -> None:
    # For the unit board. The crew follows its own state through its assignments.
    record_change(
        program_id=unit.program_id,
        record_type=UNIT_RECORD,
        record_id=unit.pk,
        scopes=staff_scopes(unit.program_id),
        data=unit_payload(unit),
        origin_device_id=origin_device_id,
    )


# The advisory-lock namespace of the unit board (apps.sync.services keeps its own apart).
_UNIT_BOARD_LOCKS = b"tandem.unitboard"


def _unit_board_key(unit_id: UUID) -> int:
    return advisory_lock_key(_UNIT_BOARD_LOCKS, unit_id)


def _lock_unit_boards(unit_ids: Iterable[UUID]) -> None:
    """Take the locks of these units' board entries, until the transaction ends.

    The feed serves entries in the order of their transactions' ids, which a transaction
    takes at its first write (a row lock counts), not at its commit. A writer of a unit's
    board that took its id first and wrote the unit after a younger writer committed (an
    offer that had locked its incident, and a crew putting the unit out of service) would
    have its entry served first, and the board would end on a status the unit no longer has.
    So every writer of a unit's board takes this lock before its first write: the one that
    waits takes its id after the other has committed, and its entry, written from what the
    other left, is served after it. Hence the fixed order: units' boards first (an advisory
    lock, which takes no transaction id), then the incident, then the assignment.

    A transaction that has written already can neither wait for the lock in that order nor
    gain by it: it takes the lock if it is free and no younger transaction has published
    the unit since (_try_lock_unit_board), or raises WrittenSinceTransactionBegan (the write
    is undone; the client tries again).
    """
    unit_ids = set(unit_ids)
    if not unit_ids:
        return
    if _written_yet():
        if not all(_try_lock_unit_board(unit_id) for unit_id in unit_ids):
            raise WrittenSinceTransactionBegan()
        return
    lock_in_order(_UNIT_BOARD_LOCKS, unit_ids)


def lock_boards_of_assignments(reports: Mapping[UUID, Iterable[UUID]]) -> None:
    """Take the boards of the units of the assignments that users (by id) are about to
    report a status of among other changes (a push, a review: ``reports``, each user's
    assignments), before the transaction's first write (_lock_unit_boards), as a crew's
    report over REST does. Only of the assignments each user may report
    (selectors.units_of_assignments_reported, whatever their status): a device that names
    another unit's assignment must not hold that unit's board for as long as its push
    takes; its report is refused (not_permitted) without the board. An id of no assignment
    is passed over.

    The units are read before their locks, which is safe: an assignment keeps the unit it
    was offered to (another unit gets an assignment of its own). Were it to change, or the
    user gain the right to report it meanwhile, the report would take the board after the
    first write, only if free and not published since; otherwise the write is undone
    (WrittenSinceTransactionBegan) and tried again (_lock_unit_boards)."""
    named = {user_id: ids for user_id, assignment_ids in reports.items() if (ids := set(assignment_ids))}
    if not named:
        return
    _lock_unit_boards(selectors.units_of_assignments_reported(reports=named))


def _try_lock_unit_board(unit_id: UUID) -> bool:
    """Take the lock of the unit's board if it is free now, and, in a transaction that has
    written already, only if no younger transaction has published the unit since: its entry
    would be served after this one's (_lock_unit_boards). Never waits, so it may be taken
    in any order."""
    written = _written_yet()
    if not _take_unit_board_lock_now(unit_id):
        return False
    # Held now, so every other writer of the board has ended.
    return not written or not _unit_published_since_we_began(unit_id)


def _take_unit_board_lock_now(unit_id: UUID) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_unit_board_key(unit_id)])
        return bool(cursor.fetchone()[0])


def _unit_published_since_we_began(unit_id: UUID) -> bool:
    """Whether a transaction younger than this one (which has written) published the unit."""
    return ChangeEntry.objects.filter(
        record_type=UNIT_RECORD,
        record_id=unit_id,
        version=None,
        transaction_id__gt=RawSQL("pg_current_xact_id()::text::bigint", []),
    ).exists()


def _written_yet() -> bool:
    """Whether the transaction has taken its id (at its first write or row lock)."""
    assert connection.in_atomic_block, "unit boards are locked in a transaction"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
        return bool(cursor.fetchone()[0])


def alert_supervisors(
    *, kind: AlertKind, incident: Incident, assignment: Assignment | None = None, unit: Unit | None = None
) -> SupervisorAlert:
    """Raise an alert to the program's supervisors and dispatchers. Call inside the transaction.

    The alert reaches them over the change feed (their open websockets within a second of
    commit, and their next pull), and through notifications by push, then SMS if no device
    confirms it: a supervisor away from the screen must still hear of it.
    """
    alert = SupervisorAlert.objects.create(
        program_id=incident.program_id, kind=kind, incident=incident, assignment=assignment, unit=unit
    )
    record_change(
        program_id=incident.program_id,
        record_type=ALERT_RECORD,
        record_id=alert.pk,
        scopes=staff_scopes(incident.program_id),
        data=alert_payload(alert),
    )
    supervisors, dispatchers = selectors.alerted_staff_ids(program_id=incident.program_id)
    alerted = NotificationRequest(
        program=incident.program,
        kind="dispatch.alert",
        urgency=Urgency.URGENT,
        text="Dispatch alert: an assignment needs your attention.",
        link=f"/dispatch/incidents/{incident.pk}",  # the app's path, for push and in-app
    )
    requests = []
    if supervisors:
        # Their SMS opens the incident in the admin workspace, where supervisors work.
        web_link = reverse("admin:dispatch_incident_change", args=[incident.pk])
        requests.append(
            replace(alerted, recipients=supervisors, web_link=web_link, dedupe_key=f"dispatch-alert-{alert.pk}")
        )
    if dispatchers:
        # Dispatchers work in the dispatch console, an app: no page of the staff site is theirs.
        requests.append(replace(alerted, recipients=dispatchers, dedupe_key=f"dispatch-alert-{alert.pk}-dispatchers"))
    if requests:
        notify_many(requests=requests)
    logger.info("dispatch alert %s kind=%s incident=%s", alert.pk, kind, incident.pk)
    return alert


def _event(
    *,
    incident: Incident,
    kind: EventKind,
    assignment: Assignment | None = None,
    actor: User | None = None,
    device: Device | None = None,
    observed_at: datetime | None = None,
    applied: bool = True,
    client_event_id: UUID | None = None,
    event_id: UUID | None = None,
    at: datetime | None = None,
    reason: str = "",
    **detail: Any,
) -> TimelineEvent:
    return TimelineEvent.objects.create(
        # A device's report is known by the id the device gave it (a synced record's too), a
        # status time by the id its writer locked before writing.
        id=event_id or client_event_id or uuid.uuid4(),
        incident=incident,
        assignment=assignment,
        kind=kind,
        at=at or timezone.now(),
        observed_at=observed_at,
        applied=applied,
        actor=actor,
        device=device,
        client_event_id=client_event_id,
        detail=detail,
        reason=reason,
    )


# ---------------------------------------------------------------------------------------------
# Device-reported times


def _audit(accessor: Accessor | None, action: AccessAction, record: Incident | Assignment | TimelineEvent) -> None:
    """A write to a call's record, recorded in the write's own transaction (P8): a refused
    write leaves no trace and an accepted one always does. A retry that writes nothing (an
    action already taken, answered with the record as it stands) is a read, as a retried
    intake is. A status time reported over REST is audited as the record the feeds serve it
    as. Internal callers (the escalation sweep) pass no accessor."""
    if accessor is None:
        return
    if isinstance(record, Incident):
        record_type, program_id = INCIDENT_RECORD, record.program_id
    elif isinstance(record, Assignment):
        record_type, program_id = ASSIGNMENT_RECORD, record.incident.program_id
    else:
        record_type, program_id = STATUS_TIME_RECORD, record.incident.program_id
    record_access(
        accessor=accessor, action=action, record_type=record_type, record_ids=[record.pk], program_id=program_id
    )


def _record_crew_report(
    assignment: Assignment,
    *,
    kind: EventKind,
    user: User,
    device: Device,
    observed_at: datetime | None,
    at: datetime | None = None,
    **detail: Any,
) -> None:
    """A crew member's report: kept in the timeline and fed to the crew (but the reporting
    device) and the dispatchers."""
    _event(
        incident=assignment.incident,
        assignment=assignment,
        kind=kind,
        actor=user,
        device=device,
        observed_at=observed_at,
        at=at,
        **detail,
    )
    _publish_assignment(assignment, origin_device_id=device.pk)


def validate_observed_at(
    observed_at: datetime | None, *, not_before: datetime | None = None, field: str = "observed_at"
) -> datetime | None:
    """A device's clock is kept as what the user observed; the server's clock orders events.

    Times that cannot be true are refused, naming the field: ahead of the server by more
    than the allowed skew, older than the longest plausible offline spell, or before the
    thing they report on existed.
    """
    if observed_at is None:
        return None
    now = timezone.now()
    skew = timedelta(seconds=settings.DISPATCH_CLOCK_SKEW_SECONDS)
    if observed_at > now + skew:
        raise DomainError(
            f"{field} is in the future; check the device clock.",
            code="time_in_future",
            field=field,
            status_code=400,
        )
    if observed_at < now - timedelta(hours=settings.DISPATCH_MAX_OFFLINE_HOURS):
        raise DomainError(
            f"{field} is more than {settings.DISPATCH_MAX_OFFLINE_HOURS} hours old.",
            code="time_too_old",
            field=field,
            status_code=400,
        )
    if not_before is not None and observed_at < not_before - skew:
        raise DomainError(
            f"{field} is before the assignment was offered.",
            code="time_before_offer",
            field=field,
            status_code=400,
        )
    return observed_at


# ---------------------------------------------------------------------------------------------
# Intake and triage


@dataclass(frozen=True)
class TriageDecision:
    response: str
    reasons: list[str]
    policy: TriagePolicy


def triage(*, program_id: UUID, answers: dict[str, Any]) -> TriageDecision:
    """Apply the program's triage policy to the safety-screen answers: first matching rule wins."""
    policy = selectors.triage_policy_for(program_id=program_id)
    for rule in policy.rules.all():
        decisive = rule.matches(answers)
        if decisive:
            return TriageDecision(rule.response, [f"{rule.reason} ({', '.join(decisive)})"], policy)
    return TriageDecision(policy.fallback_response, [policy.fallback_reason], policy)


def incident_intake(
    *,
    program: Program,
    actor: User,
    device: Device | None,
    external_call_id: str,
    accessor: Accessor | None = None,
    **fields: Any,
) -> tuple[Incident, bool]:
    """Create an incident from a call, triaged; returns (incident, created).

    Idempotent by the caller's external call id: the unique constraint decides, so two
    concurrent retries of one CAD post create one incident and both get it back.
    """
    # An unsaved incident fills in the screen's defaults (acuity, substance use, ...).
    answers = Incident(**fields).screen_answers()
    decision = triage(program_id=program.pk, answers=answers)
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                program=program,
                external_call_id=external_call_id,
                triage_policy=decision.policy,
                recommended_response=decision.response,
                triage_reasons=decision.reasons,
                chosen_response=decision.response,
                created_by=actor,
                **fields,
            )
            _event(
                incident=incident, kind=EventKind.RECEIVED, actor=actor, device=device, recommended=decision.response
            )
            _publish_incident(incident, origin_device_id=device.pk if device else None)
            _audit(accessor, AccessAction.CREATE, incident)
    except IntegrityError as error:
        if _constraint_of(error) != "incident_unique_external_call":
            raise
        # A retried intake answers with the stored incident: a read, not a second creation.
        stored = Incident.objects.get(program=program, external_call_id=external_call_id)
        _audit(accessor, AccessAction.READ, stored)
        return stored, False
    return incident, True


def _constraint_of(error: IntegrityError) -> str | None:
    diag = getattr(error.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)


@transaction.atomic
def incident_override(
    *,
    incident: Incident,
    actor: User,
    device: Device | None,
    response: str,
    reason: str,
    accessor: Accessor | None = None,
) -> Incident:
    """The dispatcher picks a different response model than triage recommended, saying why."""
    incident = Incident.objects.select_for_update().get(pk=incident.pk)
    _audit(accessor, AccessAction.UPDATE, incident)
    if incident.is_closed:
        raise DomainError("The incident is closed.", code="incident_closed")
    if response != incident.recommended_response and not reason.strip():
        raise DomainError("Say why the recommendation is overridden.", code="required", field="reason", status_code=400)
    previous = incident.chosen_response
    incident.chosen_response = response
    incident.override_reason = reason.strip() if response != incident.recommended_response else ""
    incident.save(update_fields=["chosen_response", "override_reason", "updated_at"])
    _event(
        incident=incident,
        kind=EventKind.OVERRIDDEN,
        actor=actor,
        device=device,
        previous=previous,
        chosen=response,
        reason=incident.override_reason,
    )
    _publish_incident(incident, origin_device_id=device.pk if device else None)
    return incident


@transaction.atomic
def incident_close(
    *,
    incident: Incident,
    actor: User,
    device: Device | None,
    unserved_reason: str = "",
    note: str = "",
    accessor: Accessor | None = None,
) -> Incident:
    """Close an incident. An eligible call no unit served must say why (a database constraint
    enforces it too); any assignment still active is cancelled. The same close sent again by
    whoever closed it (its answer lost) answers with the incident as it stands; anyone else's
    close of a closed incident is refused, never answered as theirs."""
    # Before the first lock (_lock_unit_boards). An offer committed between this read and
    # the incident's lock has its unit's board locked by _refresh_units, or refused there.
    _lock_unit_boards(
        Assignment.objects.filter(incident_id=incident.pk, status__in=AssignmentStatus.active()).values_list(
            "unit_id", flat=True
        )
    )
    incident = Incident.objects.select_for_update().get(pk=incident.pk)
    if incident.is_closed:
        if incident.closed_by_id == actor.pk and incident.unserved_reason == unserved_reason:
            # A retried close writes nothing and answers with the incident: a read.
            _audit(accessor, AccessAction.READ, incident)
            return incident
        raise DomainError("The incident is already closed.", code="incident_closed")
    _audit(accessor, AccessAction.UPDATE, incident)
    if incident.served_at is not None and unserved_reason:
        raise DomainError(
            "A unit served this incident; it has no unserved reason.",
            code="served",
            field="unserved_reason",
            status_code=400,
        )
    if incident.is_eligible and incident.served_at is None and not unserved_reason:
        raise DomainError(
            "No unit served this eligible call: say why (e.g. no_unit_available).",
            code="unserved_reason_required",
            field="unserved_reason",
            status_code=400,
        )
    if unserved_reason == UnservedReason.OTHER and not note.strip():
        raise DomainError("Describe the reason in a note.", code="required", field="note", status_code=400)
    now = timezone.now()
    active = list(
        Assignment.objects.select_for_update()
        .select_related("incident")
        .filter(incident=incident, status__in=AssignmentStatus.active())
        .order_by("pk")
    )
    for assignment in active:
        _end(assignment, status=AssignmentStatus.CANCELLED, reason="incident closed", now=now)
        _event(
            incident=incident,
            assignment=assignment,
            kind=EventKind.CANCELLED,
            actor=actor,
            device=device,
            reason="incident closed",
        )
        _publish_assignment(assignment)
    _stop_waiting_for_unit(incident, now=now)
    incident.status = IncidentStatus.CLOSED
    incident.closed_at = now
    incident.closed_by = actor
    incident.unserved_reason = unserved_reason
    incident.unserved_note = note.strip()
    incident.save(update_fields=["status", "closed_at", "closed_by", "unserved_reason", "unserved_note", "updated_at"])
    _event(incident=incident, kind=EventKind.CLOSED, actor=actor, device=device, unserved_reason=unserved_reason)
    _refresh_units([assignment.unit_id for assignment in active], now=now)
    _publish_incident(incident, origin_device_id=device.pk if device else None)
    return incident


# ---------------------------------------------------------------------------------------------
# Offers


def assignment_offer(
    *,
    incident: Incident,
    unit: Unit,
    actor: User | None,
    device: Device | None = None,
    additional: bool = False,
    accessor: Accessor | None = None,
) -> Assignment:
    """Offer an incident to a unit. A unit holds one active assignment unless the dispatcher
    explicitly adds one (`additional`); the database's partial unique index decides."""
    with transaction.atomic():
        _lock_unit_boards([unit.pk])  # before the first lock: see there
        incident = Incident.objects.select_for_update().get(pk=incident.pk)
        if incident.is_closed:
            raise DomainError("The incident is closed.", code="incident_closed")
        if unit.program_id != incident.program_id:
            raise DomainError("No such unit.", code="not_found", field="unit", status_code=404)
        if Unit.objects.filter(pk=unit.pk, status=UnitStatus.OUT_OF_SERVICE).exists():
            raise DomainError("The unit is out of service.", code="unit_out_of_service", field="unit")
        try:
            with transaction.atomic():
                assignment = _offer(incident=incident, unit=unit, actor=actor, device=device, additional=additional)
        except IntegrityError as error:
            constraint = _constraint_of(error)
            if constraint == "assignment_one_active_per_unit":
                raise DomainError(
                    "The unit already has an active assignment; send additional=true to add this one.",
                    code="unit_busy",
                    field="unit",
                ) from None
            if constraint == "assignment_one_active_per_incident_unit":
                raise DomainError(
                    "The unit already holds this incident.", code="already_assigned", field="unit"
                ) from None
            raise
        # The dispatcher has taken the call in hand: it stops waiting for a free unit (an
        # escalated offer stays open to a late acknowledgement).
        _stop_waiting_for_unit(incident, now=assignment.offered_at)
        _audit(accessor, AccessAction.CREATE, assignment)
        return assignment


def _offer(
    *,
    incident: Incident,
    unit: Unit,
    actor: User | None,
    device: Device | None,
    additional: bool = False,
    now: datetime | None = None,
) -> Assignment:
    now = now or timezone.now()
    timing = selectors.timing_for(program_id=incident.program_id, priority=incident.priority)
    assignment = Assignment.objects.create(
        incident=incident,
        unit=unit,
        is_additional=additional,
        offered_at=now,
        offered_by=actor,
        resend_due_at=now + timedelta(seconds=timing.ack_resend_seconds),
        escalate_due_at=now + timedelta(seconds=timing.ack_escalate_seconds),
    )
    _event(
        incident=incident,
        assignment=assignment,
        kind=EventKind.OFFERED,
        actor=actor,
        device=device,
        unit=str(unit.pk),
        additional=additional,
    )
    _publish_assignment(assignment, origin_device_id=device.pk if device else None)
    _refresh_units([unit.pk], now=now)
    return assignment


def _offer_to_next_unit(*, incident: Incident, now: datetime) -> Assignment | None:
    """Offer the incident to the nearest available unit that has not had it yet."""
    for recommendation in selectors.recommended_units(
        incident=incident, exclude_unit_ids=selectors.units_already_offered(incident=incident)
    ):
        # Found after this transaction's first write (_lock_unit_boards). A unit another
        # action holds now is on its way to another call, and one no longer available was
        # taken: both are passed over. One still available that a younger transaction
        # published (put back in service as this one began) cannot be offered from here, its
        # entry to be served first: the whole action is undone, to be tried again (the sweep
        # at its next beat, a crew's decline answered 409), rather than the call left waiting
        # with the supervisors told no unit is free.
        unit_id = recommendation.unit.pk
        if not _take_unit_board_lock_now(unit_id):
            continue
        if not Unit.objects.filter(pk=unit_id, status=UnitStatus.AVAILABLE).exists():
            continue
        if _written_yet() and _unit_published_since_we_began(unit_id):
            raise WrittenSinceTransactionBegan()
        try:
            with transaction.atomic():
                return _offer(incident=incident, unit=recommendation.unit, actor=None, device=None, now=now)
        except IntegrityError:
            continue  # taken by a concurrent offer since we looked: try the next one
    return None


# Why an assignment ended: a sentence (sealed at rest, so the database no longer bounds it).
END_REASON_MAX_LENGTH = 300


def _end(assignment: Assignment, *, status: AssignmentStatus, reason: str, now: datetime) -> None:
    if len(reason) > END_REASON_MAX_LENGTH:
        raise DomainError(
            f"Keep the reason to {END_REASON_MAX_LENGTH} characters.",
            code="max_length",
            field="reason",
            status_code=400,
        )
    assignment.status = status
    assignment.ended_at = now
    assignment.end_reason = reason
    assignment.resend_due_at = None
    assignment.escalate_due_at = None
    assignment.checkin_due_at = None
    assignment.save(
        update_fields=[
            "status",
            "ended_at",
            "end_reason",
            "resend_due_at",
            "escalate_due_at",
            "checkin_due_at",
            "updated_at",
        ]
    )


def _refresh_units(unit_ids: Iterable[UUID], *, now: datetime) -> None:
    """Derive each unit's board status from its active assignments; publish what changed.

    Each caller has locked the units' boards before its first write; one it could not know
    of then is locked here, or the write refused (_lock_unit_boards)."""
    unit_ids = set(unit_ids)
    _lock_unit_boards(unit_ids)
    progress = AssignmentStatus.progress()
    for unit in Unit.objects.select_for_update().filter(pk__in=unit_ids).order_by("pk"):
        statuses = list(
            Assignment.objects.filter(unit=unit, status__in=AssignmentStatus.active()).values_list("status", flat=True)
        )
        if statuses:
            status = UNIT_STATUS_FOR[AssignmentStatus(max(statuses, key=progress.index))]
        elif unit.status == UnitStatus.OUT_OF_SERVICE:
            status = UnitStatus.OUT_OF_SERVICE
        else:
            status = UnitStatus.AVAILABLE
        if status != unit.status:
            unit.status = status
            unit.status_changed_at = now
            unit.save(update_fields=["status", "status_changed_at", "updated_at"])
            _publish_unit(unit)


# ---------------------------------------------------------------------------------------------
# Crew actions


class Superseded(DomainError):
    """A late answer to an offer that has since been re-offered to another unit."""

    code = "superseded"


def _lock_assignment(assignment_id: UUID) -> Assignment:
    """Lock the unit's board, the incident, then the assignment (the fixed order)."""
    incident_id, unit_id = Assignment.objects.values_list("incident_id", "unit_id").get(pk=assignment_id)
    _lock_unit_boards([unit_id])
    Incident.objects.select_for_update().filter(pk=incident_id).get()
    return Assignment.objects.select_for_update().select_related("incident", "unit").get(pk=assignment_id)


def _refuse_ended(assignment: Assignment) -> None:
    if assignment.status == AssignmentStatus.TIMED_OUT:
        raise Superseded(
            "This assignment was not acknowledged in time and has been offered to another unit.",
            field="assignment",
        )
    if assignment.status in (AssignmentStatus.DECLINED, AssignmentStatus.CANCELLED):
        raise DomainError(
            f"This assignment was {assignment.status}.", code=f"assignment_{assignment.status}", field="assignment"
        )


@transaction.atomic
def assignment_acknowledge(
    *,
    assignment_id: UUID,
    user: User,
    device: Device,
    observed_at: datetime | None = None,
    accessor: Accessor | None = None,
) -> Assignment:
    """A crew member acknowledges an offer. First wins: a second member's ack, or a retried
    one, changes nothing and returns the same assignment, saying who acknowledged it from
    which device and when. An ack after the offer went to another unit is refused as superseded."""
    assignment = _lock_assignment(assignment_id)
    if assignment.acknowledged_at is not None:
        # A retry or a partner's ack writes nothing and answers with the assignment: a read.
        _audit(accessor, AccessAction.READ, assignment)
        return assignment
    _audit(accessor, AccessAction.UPDATE, assignment)
    _refuse_ended(assignment)
    observed_at = validate_observed_at(observed_at, not_before=assignment.offered_at)
    now = timezone.now()
    assignment.status = AssignmentStatus.ACKNOWLEDGED
    assignment.acknowledged_at = now
    assignment.acknowledged_by = user
    assignment.acknowledged_device = device
    assignment.resend_due_at = None
    assignment.escalate_due_at = None
    assignment.save(
        update_fields=[
            "status",
            "acknowledged_at",
            "acknowledged_by",
            "acknowledged_device",
            "resend_due_at",
            "escalate_due_at",
            "updated_at",
        ]
    )
    _record_crew_report(
        assignment, kind=EventKind.ACKNOWLEDGED, user=user, device=device, observed_at=observed_at, at=now
    )
    return assignment


CREW_STATUS_EVENTS = {
    AssignmentStatus.EN_ROUTE: EventKind.EN_ROUTE,
    AssignmentStatus.ON_SCENE: EventKind.ON_SCENE,
    AssignmentStatus.TRANSPORTING: EventKind.TRANSPORTING,
    AssignmentStatus.CLEARED: EventKind.CLEARED,
}


@dataclass(frozen=True)
class StatusUpdate:
    assignment: Assignment
    applied: bool
    event: TimelineEvent


@dataclass(frozen=True)
class StatusUpdateAnswer(StatusUpdate):
    """A status update reported outside a push, with what its answer carries: the status time
    as the feeds serve it, in sync's snapshot shape (``{"type", "id", "version", "data"}``)."""

    status_time: dict[str, Any] | None


_EVENT_ID_CONSTRAINTS = frozenset({"dispatch_timelineevent_pkey", "dispatch_timelineevent_client_event_id_key"})


def repeats_report(
    earlier: TimelineEvent, *, event_id: UUID, assignment_id: UUID, status: str, observed_at: datetime | None
) -> bool:
    """Whether a crew's report under ``event_id`` is a retry of ``earlier``, the event stored
    under that id: the same report of the same assignment, with the same observed time or
    none on one side (a status sent over REST without one, then with the outbox with the
    device's). Another report under the id is not its retry: answered as one, it would be
    dropped unseen (on scene, sent under the id of an earlier en route). The REST update and
    the push (the status time's create_repeats) both judge by this."""
    return (
        earlier.client_event_id == event_id
        and earlier.assignment_id == assignment_id
        and earlier.kind == CREW_STATUS_EVENTS.get(AssignmentStatus(status))
        and (observed_at is None or earlier.observed_at in (None, observed_at))
    )


def event_id_reused() -> DomainError:
    return DomainError(
        "This event id was used for another event.", code="event_id_reused", field="event_id", status_code=400
    )


@transaction.atomic
def assignment_update_status(
    *,
    assignment_id: UUID,
    user: User,
    device: Device | None,
    status: AssignmentStatus,
    observed_at: datetime | None = None,
    client_event_id: UUID | None = None,
    accessor: Accessor | None = None,
) -> StatusUpdateAnswer:
    """Move an acknowledged assignment along en route → on scene → transporting → cleared.

    Updates recorded offline may arrive late and out of order: one that the assignment has
    already moved past is kept in the timeline (with its observed time) but does not move
    the status back (`applied: false`). A retried update with the same client_event_id
    applies once and returns the same answer.

    Every report is a status time (dispatch.status_time) in the feeds of the unit's crew and
    the program's dispatchers, however it was sent. One reported over REST is locked and
    published here, and the answer carries it with the assignment, so the assignment's entry
    skips the reporting device; one pushed with the outbox goes through
    assignment_update_status_from_outbox.
    """
    event_id = client_event_id or uuid.uuid4()
    # Every writer of a status time takes the unit's board, then the status time's record
    # lock, before its first write (a push: its type's lock_before_writing, then its
    # records' locks), then the incident and the assignment (_lock_assignment, where the
    # board, held, is taken again at once). A report over REST and a push of the same id
    # so queue up in one order, and the second finds the event the first wrote.
    lock_boards_of_assignments({user.pk: [assignment_id]})
    lock_records([event_id])
    if client_event_id is not None and synced_type_of(event_id) not in (None, STATUS_TIME_RECORD):
        # Another synced record's id (a person a device created): publishing a status
        # time under it would take that record's place in every feed.
        raise event_id_reused()
    update = _apply_status_report(
        assignment_id=assignment_id,
        user=user,
        device=device,
        status=status,
        observed_at=observed_at,
        client_event_id=client_event_id,
        event_id=event_id,
        accessor=accessor,
        publishes_status_time=True,
        assignment_origin_device_id=device.pk if device is not None else None,
    )
    # The status time it is in the feeds as, for a client that keeps its timeline: its own
    # report, under its id and version (None: one an earlier release took, never published).
    status_time = record_as_served(record_type=STATUS_TIME_RECORD, record_id=update.event.pk)
    return StatusUpdateAnswer(update.assignment, update.applied, update.event, status_time)


@transaction.atomic
def assignment_update_status_from_outbox(
    *,
    assignment_id: UUID,
    user: User,
    device: Device | None,
    status: AssignmentStatus,
    observed_at: datetime | None,
    client_event_id: UUID,
    accessor: Accessor | None,
) -> StatusUpdate:
    """A status time pushed with a device's outbox (apps.dispatch.sync), applied as over
    REST (assignment_update_status), within the push's transaction. The push has taken the
    status time's record lock before its first write, and the unit's board too where its
    writer could report the assignment then (else _lock_assignment takes the board, if it is
    free and unpublished since); it publishes and audits the status time itself, and answers
    with it alone: the assignment's entry goes to every device, the pushing one too, whose
    feed brings the moved assignment."""
    return _apply_status_report(
        assignment_id=assignment_id,
        user=user,
        device=device,
        status=status,
        observed_at=observed_at,
        client_event_id=client_event_id,
        event_id=client_event_id,
        accessor=accessor,
        publishes_status_time=False,
        assignment_origin_device_id=None,
    )


def _apply_status_report(
    *,
    assignment_id: UUID,
    user: User,
    device: Device | None,
    status: AssignmentStatus,
    observed_at: datetime | None,
    client_event_id: UUID | None,
    event_id: UUID,
    accessor: Accessor | None,
    publishes_status_time: bool,
    assignment_origin_device_id: UUID | None,
) -> StatusUpdate:
    """A crew's status report, however it was sent, once its caller holds the status time's
    record lock (and, as a rule, the unit's board): the incident and the assignment are
    locked after them, the board with them (at once when held).

    ``publishes_status_time``: whether the status time is published and audited here (a
    report over REST) or by the push that carries it. ``assignment_origin_device_id``: the
    device whose feed the moved assignment's entry skips (None: every device gets it).
    """
    assignment = _lock_assignment(assignment_id)
    if client_event_id is not None:
        earlier = TimelineEvent.objects.filter(Q(client_event_id=client_event_id) | Q(pk=client_event_id)).first()
        if earlier is not None:
            if not repeats_report(
                earlier, event_id=client_event_id, assignment_id=assignment.pk, status=status, observed_at=observed_at
            ):
                raise event_id_reused()
            # A retry writes nothing and answers with the assignment as it stands: a read.
            _audit(accessor, AccessAction.READ, assignment)
            if publishes_status_time:  # the answer carries the status time too
                _audit(accessor, AccessAction.READ, earlier)
            return StatusUpdate(assignment, earlier.applied, earlier)
    _audit(accessor, AccessAction.UPDATE, assignment)
    _refuse_ended(assignment)
    if assignment.status == AssignmentStatus.OFFERED:
        raise DomainError("Acknowledge the assignment first.", code="not_acknowledged", field="status")
    observed_at = validate_observed_at(observed_at, not_before=assignment.offered_at)
    progress = AssignmentStatus.progress()
    applied = progress.index(status) > progress.index(assignment.status)
    now = timezone.now()
    try:
        with transaction.atomic():
            event = _event(
                incident=assignment.incident,
                assignment=assignment,
                kind=CREW_STATUS_EVENTS[status],
                actor=user,
                device=device,
                observed_at=observed_at,
                applied=applied,
                client_event_id=client_event_id,
                event_id=event_id,
                at=now,
            )
    except IntegrityError as error:
        # Not met by two reports under one id: each (over REST, pushed, reviewed) holds the
        # id's record lock from before the look above, so the second finds the first's event.
        # Kept should a writer that takes no such lock ever write an event under the id between
        # the look and the insert: refused as event_id_reused, as had it come first, not a 500.
        if _constraint_of(error) not in _EVENT_ID_CONSTRAINTS:
            raise
        raise event_id_reused() from None
    if publishes_status_time:
        _publish_status_time(event, user=user, device=device, id_named_by_device=client_event_id is not None)
        _audit(accessor, AccessAction.CREATE, event)
    if status in (AssignmentStatus.ON_SCENE, AssignmentStatus.TRANSPORTING, AssignmentStatus.CLEARED):
        # Within the clocks' tolerance a crew's time may fall before the offer, or ahead of
        # the server: the call was served no earlier than the unit was offered it.
        _mark_served(assignment.incident, at=max(min(observed_at or now, now), assignment.offered_at))
    if not applied:
        return StatusUpdate(assignment, False, event)
    assignment.status = status
    timing = selectors.timing_for(program_id=assignment.incident.program_id, priority=assignment.incident.priority)
    if status == AssignmentStatus.ON_SCENE:
        assignment.checkin_due_at = now + timedelta(seconds=timing.checkin_interval_seconds)
    elif status in (AssignmentStatus.TRANSPORTING, AssignmentStatus.CLEARED):
        assignment.checkin_due_at = None
    if status == AssignmentStatus.CLEARED:
        assignment.ended_at = now
    assignment.save(update_fields=["status", "checkin_due_at", "ended_at", "updated_at"])
    _publish_assignment(assignment, origin_device_id=assignment_origin_device_id)
    _refresh_units([assignment.unit_id], now=now)
    return StatusUpdate(assignment, True, event)


def _publish_status_time(event: TimelineEvent, *, user: User, device: Device | None, id_named_by_device: bool) -> None:
    """A status time reported over REST, published as a pushed one is: a device that keeps its
    unit's timeline from the feed must not miss the times a colleague reported online (one
    the assignment had moved past, ``applied: false``, stands in the timeline too).

    As every write of a device, it does not come back to the device that reported it, which
    holds it under the id it gave (``event_id``); reported without one, the device has no id
    to hold it under, and gets it in its feed as its colleagues do.
    """
    publish_record(
        type_name=STATUS_TIME_RECORD, record=event, user=user, device=device, echo_to_origin=not id_named_by_device
    )


def _mark_served(incident: Incident, *, at: datetime) -> None:
    """The call was served when a unit of ours first got on scene, as its crew observed it: a
    report made offline arrives late, and maybe after a later one, which must not date it."""
    served = (
        Incident.objects.filter(pk=incident.pk).filter(Q(served_at=None) | Q(served_at__gt=at)).update(served_at=at)
    )
    if served:
        incident.refresh_from_db()
        _publish_incident(incident)


@transaction.atomic
def assignment_decline(
    *,
    assignment_id: UUID,
    user: User,
    device: Device,
    reason: str,
    observed_at: datetime | None = None,
    accessor: Accessor | None = None,
) -> Assignment:
    """The crew declines (before going en route), saying why; unless another offer still holds
    the call, it goes to the next unit that has not had it or, with none free, waits for one."""
    assignment = _lock_assignment(assignment_id)
    if assignment.status == AssignmentStatus.DECLINED:
        # A retried decline writes nothing and answers with the assignment: a read.
        _audit(accessor, AccessAction.READ, assignment)
        return assignment
    _audit(accessor, AccessAction.UPDATE, assignment)
    _refuse_ended(assignment)
    if assignment.status not in (AssignmentStatus.OFFERED, AssignmentStatus.ACKNOWLEDGED):
        raise DomainError("Only an assignment not yet under way can be declined.", code="under_way", field="assignment")
    observed_at = validate_observed_at(observed_at, not_before=assignment.offered_at)
    now = timezone.now()
    _end(assignment, status=AssignmentStatus.DECLINED, reason=reason.strip(), now=now)
    _record_crew_report(
        assignment, kind=EventKind.DECLINED, user=user, device=device, observed_at=observed_at, reason=reason.strip()
    )
    _refresh_units([assignment.unit_id], now=now)
    if not _covered(assignment.incident_id):
        # An escalated offer still open (to a late acknowledgement) but with no deadline left
        # does not hold the call; when there is one, the call's wait is held on it, as at
        # escalation, so that the sweep times it out when it finds a unit.
        silent = (
            Assignment.objects.filter(incident_id=assignment.incident_id, status=AssignmentStatus.OFFERED)
            .order_by("offered_at", "pk")
            .first()
        )
        _reoffer_or_alert(assignment.incident, previous=silent or assignment, now=now)
    return assignment


@transaction.atomic
def assignment_cancel(
    *, assignment_id: UUID, actor: User, device: Device | None, reason: str, accessor: Accessor | None = None
) -> Assignment:
    """Dispatch withdraws an offer or recalls a unit."""
    assignment = _lock_assignment(assignment_id)
    if assignment.status == AssignmentStatus.CANCELLED:
        # A retried cancel writes nothing and answers with the assignment: a read.
        _audit(accessor, AccessAction.READ, assignment)
        return assignment
    _audit(accessor, AccessAction.UPDATE, assignment)
    if not assignment.is_active:
        raise DomainError(
            f"This assignment is already {assignment.status}.", code="assignment_ended", field="assignment"
        )
    now = timezone.now()
    _end(assignment, status=AssignmentStatus.CANCELLED, reason=reason.strip(), now=now)
    _event(
        incident=assignment.incident,
        assignment=assignment,
        kind=EventKind.CANCELLED,
        actor=actor,
        device=device,
        reason=reason.strip(),
    )
    _publish_assignment(assignment, origin_device_id=device.pk if device else None)
    _refresh_units([assignment.unit_id], now=now)
    return assignment


@transaction.atomic
def assignment_check_in(
    *,
    assignment_id: UUID,
    user: User,
    device: Device,
    observed_at: datetime | None = None,
    accessor: Accessor | None = None,
) -> Assignment:
    """A crew on scene confirms it is safe; the next check-in is due one interval from now."""
    assignment = _lock_assignment(assignment_id)
    _audit(accessor, AccessAction.UPDATE, assignment)
    _refuse_ended(assignment)
    if assignment.status != AssignmentStatus.ON_SCENE:
        raise DomainError("Check-ins are for crews on scene.", code="not_on_scene", field="assignment")
    observed_at = validate_observed_at(observed_at, not_before=assignment.offered_at)
    now = timezone.now()
    timing = selectors.timing_for(program_id=assignment.incident.program_id, priority=assignment.incident.priority)
    assignment.last_checkin_at = now
    assignment.checkin_due_at = now + timedelta(seconds=timing.checkin_interval_seconds)
    assignment.save(update_fields=["last_checkin_at", "checkin_due_at", "updated_at"])
    _record_crew_report(
        assignment, kind=EventKind.CHECKED_IN, user=user, device=device, observed_at=observed_at, at=now
    )
    return assignment


@transaction.atomic
def unit_set_availability(
    *, unit: Unit, actor: User, device: Device | None, status: UnitStatus, observed_at: datetime | None = None
) -> Unit:
    """A crew (or dispatcher) puts a unit in or out of service; not while it holds an assignment."""
    validate_observed_at(observed_at)
    # Before the unit's row lock, the transaction's first write (_lock_unit_boards): an offer
    # under way commits first, and the unit is then refused as busy.
    _lock_unit_boards([unit.pk])
    unit = Unit.objects.select_for_update().get(pk=unit.pk)
    if Assignment.objects.filter(unit=unit, status__in=AssignmentStatus.active()).exists():
        raise DomainError("The unit holds an active assignment; clear it first.", code="unit_busy", field="status")
    if unit.status != status:
        unit.status = status
        unit.status_changed_at = timezone.now()
        unit.save(update_fields=["status", "status_changed_at", "updated_at"])
        _publish_unit(unit, origin_device_id=device.pk if device else None)
    return unit


# ---------------------------------------------------------------------------------------------
# Escalation and check-in deadlines


def _covered(incident_id: UUID) -> bool:
    """Someone holds the call: a unit that acknowledged it (or is further along), or an offer
    whose deadline is still to come (or whose wait for a free unit goes on). An escalated offer
    left open to a late acknowledgement, its deadline gone, does not hold it."""
    active = Assignment.objects.filter(incident_id=incident_id, status__in=AssignmentStatus.active())
    return active.filter(~Q(status=AssignmentStatus.OFFERED) | Q(escalate_due_at__isnull=False)).exists()


def _reoffer_or_alert(incident: Incident, *, previous: Assignment, now: datetime) -> Assignment | None:
    """A crew declined and nobody else holds the call (_covered): offer it to the next unit
    or, with none free, the call waits for one (_wait_for_unit), the wait held on `previous`:
    an escalated offer still open, or else the declined one."""
    if incident.is_closed:
        return None
    successor = _offer_to_next_unit(incident=incident, now=now)
    if successor is None:
        _wait_for_unit(previous, now=now)
    return successor


def _wait_for_unit(holder: Assignment, *, now: datetime) -> None:
    """No unit is free for the call: the supervisors are told, and the call waits for one
    (_search_for_unit). The wait is held on the offer that found nobody to pass the call to:
    the silent crew's, which stays open to a late acknowledgement (escalation), or the
    declined one (a decline). Its escalate_due_at is when the sweep next looks for a unit; a
    wait carried over from an escalated offer its crew then declines keeps its start, so
    the call keeps its place among the calls waiting longest."""
    waiting = {
        "resend_due_at": None,
        "escalate_due_at": now + timedelta(seconds=_no_unit_retry_seconds()),
        "awaiting_unit_since": holder.awaiting_unit_since or now,
        "no_unit_alerted_at": now,
        "updated_at": now,
    }
    Assignment.objects.filter(pk=holder.pk).update(**waiting)
    for field, value in waiting.items():
        setattr(holder, field, value)
    alert_supervisors(kind=AlertKind.NO_UNIT_AVAILABLE, incident=holder.incident, assignment=holder, unit=holder.unit)


def _stop_waiting_for_unit(incident: Incident, *, now: datetime) -> None:
    """The call no longer waits for a free unit (a dispatcher offered it by hand, or it is
    closed). An escalated offer that held the wait stays open to a late acknowledgement."""
    Assignment.objects.filter(incident=incident, awaiting_unit_since__isnull=False).exclude(
        escalate_due_at=None
    ).update(escalate_due_at=None, updated_at=now)


def _resend(assignment: Assignment, now: datetime) -> None:
    """First deadline: send the offer again (a new feed entry nudges every device of the crew)."""
    Assignment.objects.filter(pk=assignment.pk).update(
        resend_due_at=None, resend_count=F("resend_count") + 1, updated_at=now
    )
    assignment.refresh_from_db()
    _event(
        incident=assignment.incident,
        assignment=assignment,
        kind=EventKind.RESENT,
        at=now,
        resend_count=assignment.resend_count,
    )
    _publish_assignment(assignment)


def _escalate(assignment: Assignment, now: datetime) -> None:
    """Second deadline: alert supervisors and dispatchers, and offer the incident to the next
    recommended unit. With no other unit free, the offer stays with this one (a late ack is
    still welcome), the alert says no unit is available, and the call waits for a unit
    (_search_for_unit). While another unit that has acknowledged the call holds it, it goes to
    no further unit (as when a crew declines): the offer stays, and the alert tells the
    supervisors of this unit's silence. (Another offer still unacknowledged does not count:
    it may be as silent as this one.)"""
    incident = assignment.incident
    alert_supervisors(kind=AlertKind.ACK_OVERDUE, incident=incident, assignment=assignment, unit=assignment.unit)
    _event(incident=incident, assignment=assignment, kind=EventKind.ESCALATED, at=now)
    if _acknowledged_elsewhere(assignment):
        Assignment.objects.filter(pk=assignment.pk).update(resend_due_at=None, escalate_due_at=None, updated_at=now)
        return
    successor = _offer_to_next_unit(incident=incident, now=now)
    if successor is None:
        _wait_for_unit(assignment, now=now)
        return
    _time_out(assignment, successor=successor, now=now)


def _search_for_unit(assignment: Assignment, now: datetime) -> None:
    """A call no unit was free for (at escalation, or when its crew declined): look again for
    a free unit that has not had the call, and offer the call to it as soon as there is one.
    An escalated offer that held the wait then times out, as at escalation.

    The search runs from the holding offer's escalate_due_at (_wait_for_unit), every
    DISPATCH_NO_UNIT_RETRY_SECONDS, and tells the supervisors again every
    DISPATCH_NO_UNIT_REALERT_SECONDS that the call still waits. It ends when the silent crew
    acknowledges or its offer is cancelled (both clear the deadline), when a dispatcher offers
    the call to a unit by hand or the incident is closed (_stop_waiting_for_unit), or here,
    when the call is answered: another unit has acknowledged it or, for a declined call,
    someone holds it (_covered).
    """
    incident = assignment.incident
    still_open = assignment.status == AssignmentStatus.OFFERED
    answered = _acknowledged_elsewhere(assignment) if still_open else incident.is_closed or _covered(incident.pk)
    if answered:
        Assignment.objects.filter(pk=assignment.pk).update(escalate_due_at=None, updated_at=now)
        return
    successor = _offer_to_next_unit(incident=incident, now=now)
    if successor is not None:
        if still_open:
            _time_out(assignment, successor=successor, now=now)
        else:
            Assignment.objects.filter(pk=assignment.pk).update(escalate_due_at=None, updated_at=now)
        return
    changes: dict[str, Any] = {"escalate_due_at": now + timedelta(seconds=_no_unit_retry_seconds()), "updated_at": now}
    last_alert = assignment.no_unit_alerted_at or assignment.awaiting_unit_since or now
    if now >= last_alert + timedelta(seconds=settings.DISPATCH_NO_UNIT_REALERT_SECONDS):
        alert_supervisors(
            kind=AlertKind.NO_UNIT_AVAILABLE, incident=incident, assignment=assignment, unit=assignment.unit
        )
        changes["no_unit_alerted_at"] = now
    Assignment.objects.filter(pk=assignment.pk).update(**changes)


def _no_unit_retry_seconds() -> int:
    return max(settings.DISPATCH_NO_UNIT_RETRY_SECONDS, 1)


def _acknowledged_elsewhere(assignment: Assignment) -> bool:
    """Another unit has acknowledged the call (or is further along): it is being answered."""
    return (
        Assignment.objects.filter(incident_id=assignment.incident_id, status__in=AssignmentStatus.active())
        .exclude(status=AssignmentStatus.OFFERED)
        .exclude(pk=assignment.pk)
        .exists()
    )


def _time_out(assignment: Assignment, *, successor: Assignment, now: datetime) -> None:
    """The offer went to another unit: the silent crew is told to drop it."""
    _end(assignment, status=AssignmentStatus.TIMED_OUT, reason="not acknowledged in time", now=now)
    assignment.superseded_by = successor
    assignment.save(update_fields=["superseded_by"])
    _event(
        incident=assignment.incident,
        assignment=assignment,
        kind=EventKind.TIMED_OUT,
        at=now,
        offered_to=str(successor.unit_id),
    )
    _publish_assignment(assignment)
    _refresh_units([assignment.unit_id], now=now)


def _missed_checkin(assignment: Assignment, now: datetime) -> None:
    """A crew on scene did not confirm it is safe: alert, and expect the next check-in one interval on."""
    timing = selectors.timing_for(program_id=assignment.incident.program_id, priority=assignment.incident.priority)
    Assignment.objects.filter(pk=assignment.pk).update(
        checkin_due_at=now + timedelta(seconds=timing.checkin_interval_seconds), updated_at=now
    )
    _event(incident=assignment.incident, assignment=assignment, kind=EventKind.CHECKIN_MISSED, at=now)
    alert_supervisors(
        kind=AlertKind.CHECKIN_MISSED, incident=assignment.incident, assignment=assignment, unit=assignment.unit
    )


@dataclass
class SweepResult:
    resent: int = 0
    escalated: int = 0
    checkins_missed: int = 0
    unit_searches: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "resent": self.resent,
            "escalated": self.escalated,
            "checkins_missed": self.checkins_missed,
            "unit_searches": self.unit_searches,
            "failed": self.failed,
        }


def sweep_deadlines(*, now: datetime | None = None, limit: int = 500) -> SweepResult:
    """Act on every deadline that has passed: re-send, escalate, missed check-ins.

    Each due assignment is claimed with SELECT … FOR UPDATE SKIP LOCKED together with its
    incident (after its unit's board lock, taken only if free: _sweep), acted on and
    committed in its own transaction, and its due time cleared or moved in that same
    transaction. So two sweeps at once (two beats, a retried task) never act on one deadline
    twice, and a sweep killed mid-way rolls back and leaves the deadline due for the next
    one. A sweep stopped by its task's soft time limit stops at once, the same way: the
    deadline it was on is not counted as failed.
    """
    now = now or timezone.now()
    result = SweepResult()
    # Calls waiting for a free unit first, the longest-waiting first: a unit that has just
    # freed up goes to them before a call escalated only now. A declined offer holds the wait
    # of a call its crew declined when no other unit was free.
    result.unit_searches, failed_searches = _sweep(
        Q(
            status__in=[AssignmentStatus.OFFERED, AssignmentStatus.DECLINED],
            escalate_due_at__lte=now,
            awaiting_unit_since__isnull=False,
        ),
        "escalate_due_at",
        _search_for_unit,
        now,
        limit,
        order_by="awaiting_unit_since",
    )
    # Escalations next: an assignment overdue for both acts on the later, stronger deadline.
    result.escalated, failed_escalations = _sweep(
        Q(status=AssignmentStatus.OFFERED, escalate_due_at__lte=now, awaiting_unit_since=None),
        "escalate_due_at",
        _escalate,
        now,
        limit,
    )
    result.resent, failed_resends = _sweep(
        Q(status=AssignmentStatus.OFFERED, resend_due_at__lte=now), "resend_due_at", _resend, now, limit
    )
    result.checkins_missed, failed_checkins = _sweep(
        Q(status=AssignmentStatus.ON_SCENE, checkin_due_at__lte=now), "checkin_due_at", _missed_checkin, now, limit
    )
    result.failed = failed_searches + failed_escalations + failed_resends + failed_checkins
    return result


def _sweep(
    due: Q,
    due_field: str,
    act: Callable[[Assignment, datetime], None],
    now: datetime,
    limit: int,
    *,
    order_by: str | None = None,
) -> tuple[int, int]:
    handled = 0
    failed: set[UUID] = set()
    # Due when looked at, but held by another sweep or action, or answered since: the next
    # beat's, if still due.
    passed: set[UUID] = set()
    undone: dict[UUID, int] = {}  # actions undone by a unit's board moving under them
    while handled < limit:
        claimed: UUID | None = None
        try:
            with transaction.atomic():
                # The next one and its unit, read before the claim: the unit's board is locked
                # before the transaction's first lock (_lock_unit_boards), as an action of the
                # crew or a dispatcher on it does, for a time-out frees the unit. Held by
                # another sweep on this one or by such an action, it is passed over for now,
                # as a claimed row is: sweeps at once go on in parallel.
                candidate = (
                    Assignment.objects.filter(due)
                    .exclude(pk__in=failed | passed)
                    .order_by(order_by or due_field, "pk")
                    .values_list("pk", "unit_id")
                    .first()
                )
                if candidate is None:
                    break
                if not _try_lock_unit_board(candidate[1]):
                    passed.add(candidate[0])
                    continue
                assignment = (
                    Assignment.objects.select_for_update(of=("self", "incident"), skip_locked=True)
                    .select_related("incident", "unit")
                    .filter(due, pk=candidate[0])
                    .first()
                )
                if assignment is None:
                    passed.add(candidate[0])
                    continue
                claimed = assignment.pk
                act(assignment, now)
                if assignment.sweep_failures and assignment.sweep_failing_deadline == due_field:
                    Assignment.objects.filter(pk=assignment.pk).update(
                        sweep_failing_deadline="", sweep_failures=0, sweep_failure_alerted_at=None
                    )
        except SoftTimeLimitExceeded:
            # The task's soft time limit, its warning before the worker is killed: stop here.
            # The deadline it was on rolled back and stays due, not counted as failed; it and
            # the ones after it are the next beat's.
            raise
        except WrittenSinceTransactionBegan:
            # A unit's board moved under the action (_offer_to_next_unit): undone, and tried
            # again at once in a new transaction, younger than the unit's writer. Left for the
            # next beat, the unit just freed would go to a call escalated only later in this one.
            if claimed is None:
                raise
            undone[claimed] = undone.get(claimed, 0) + 1
            if undone[claimed] >= _UNDONE_BEFORE_NEXT_BEAT:
                logger.warning("dispatch sweep left assignment %s for the next beat (%s)", claimed, due_field)
                passed.add(claimed)
            continue
        except Exception:
            if claimed is None:
                raise
            # One bad row must not hold up every other deadline; it stays due, a little later.
            logger.exception("dispatch sweep could not act on assignment %s (%s)", claimed, due_field)
            failed.add(claimed)
            _put_off_failed(claimed, due=due, due_field=due_field, now=now)
            continue
        handled += 1
    return handled, len(failed)


# An action undone by a unit's board moving under it is tried again at once, this many times
# in all, then left for the next beat.
_UNDONE_BEFORE_NEXT_BEAT = 3
# A deadline whose action raised is tried again after this long, then twice as long each time
# (up to DISPATCH_SWEEP_RETRY_MAX_SECONDS); at this many failures in a row the supervisors hear.
SWEEP_RETRY_FIRST_SECONDS = 5
SWEEP_FAILURES_BEFORE_ALERT = 3


def _put_off_failed(assignment_id: UUID, *, due: Q, due_field: str, now: datetime) -> None:
    """A deadline whose action raised stays due (it is never dropped) but is put off, longer at
    each failure in a row, so a row that keeps failing is neither hammered nor logged at every
    beat. At the third failure in a row the supervisors are alerted, once, to act by hand: the
    crew has not been re-offered or the supervisors told of its silence by the sweep."""
    try:
        with transaction.atomic():
            assignment = (
                Assignment.objects.select_for_update(of=("self", "incident"), skip_locked=True)
                .select_related("incident", "unit")
                .filter(due, pk=assignment_id)
                .first()
            )
            if assignment is None:
                return  # answered, ended or claimed by another sweep since it failed
            # A streak is one deadline's: another deadline of the row acting (a re-send while
            # the escalation fails) neither ends nor extends it.
            same = assignment.sweep_failing_deadline == due_field
            failures = assignment.sweep_failures + 1 if same else 1
            alerted_at = assignment.sweep_failure_alerted_at if same else None
            ceiling = max(settings.DISPATCH_SWEEP_RETRY_MAX_SECONDS, SWEEP_RETRY_FIRST_SECONDS)
            delay = min(SWEEP_RETRY_FIRST_SECONDS * 2 ** min(failures - 1, 20), ceiling)
            Assignment.objects.filter(pk=assignment.pk).update(
                sweep_failing_deadline=due_field,
                sweep_failures=failures,
                sweep_failure_alerted_at=alerted_at,
                **{due_field: now + timedelta(seconds=delay)},
            )
            if failures < SWEEP_FAILURES_BEFORE_ALERT or alerted_at is not None:
                return
            logger.error(
                "dispatch sweep keeps failing on assignment %s (%s): %d times in a row; alerting supervisors",
                assignment.pk,
                due_field,
                failures,
            )
            try:
                with transaction.atomic():
                    alert_supervisors(
                        kind=AlertKind.ESCALATION_FAILING,
                        incident=assignment.incident,
                        assignment=assignment,
                        unit=assignment.unit,
                    )
                    Assignment.objects.filter(pk=assignment.pk).update(sweep_failure_alerted_at=now)
            except SoftTimeLimitExceeded:
                raise  # the sweep stops; this failure is tried and counted again at the next beat
            except Exception:
                # Tried again at the next failure; the deadline is put off all the same.
                logger.exception("dispatch sweep could not alert supervisors of assignment %s", assignment.pk)
    except SoftTimeLimitExceeded:
        raise
    except Exception:
        logger.exception("dispatch sweep could not put off the failing assignment %s", assignment_id)
