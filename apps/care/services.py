"""Writes of care records.

Field devices write through sync: the ``*_apply`` functions below are what apps.sync calls
for each pushed change (registered in apps.care.sync). They check the domain's rules and
raise ``Refused`` before writing anything. Writes made on the server (a case manager, a
supervisor moving an encounter) are the other functions here: each locks, writes and
publishes the change to the feed in one transaction.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from datetime import date, timedelta
from typing import Any
from uuid import UUID

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import status as http_status

from apps.accounts.models import Role, User
from apps.accounts.selectors import overseeing_roles, programs_where
from apps.audit.models import AccessAction
from apps.audit.services import Accessor, record_access, record_access_to
from apps.care import hooks
from apps.care.models import (
    CareRecord,
    ClinicalNote,
    Encounter,
    Person,
    Referral,
    ReferralOutcomeEvent,
    ReferralStatus,
    ReferralTaskEvent,
    ReferralTaskStatus,
)
from apps.common.api.errors import DomainError
from apps.common.encryption import sealed_field_names
from apps.directory.models import Service
from apps.sync import conf as sync_conf
from apps.sync.registry import Change, Refused, WriteContext
from apps.sync.selectors import synced_type_of
from apps.sync.services import Publisher, lock_records, publish_record
from apps.teams.models import Unit
from apps.teams.selectors import crewed_unit_ids

RESOLVER_ROLES = frozenset({Role.CASE_MANAGER, Role.SUPERVISOR, Role.ADMINISTRATOR})


# Who may write: the crew of the record's unit, and the program's case managers, supervisors and
# administrators (who read it too: an administrator reads what case managers do, in the feed).


def _access(context: WriteContext) -> tuple[set[UUID], set[UUID]]:
    cached = context.cache.get("care.access")
    if cached is None:
        user = context.user
        unit_ids = set(crewed_unit_ids(user=user))
        programs = {program_id for program_id, role in context.program_roles() if role in RESOLVER_ROLES}
        cached = context.cache["care.access"] = (unit_ids, programs)
    return cached


def may_work_in(context: WriteContext, *, program_id: UUID, unit_id: UUID) -> bool:
    unit_ids, programs = _access(context)
    return unit_id in unit_ids or program_id in programs


def may_write_person(context: WriteContext, record: Person | None, values: dict[str, Any]) -> bool:
    return _may_write_unit_record(context, record, values)


def may_write_encounter(context: WriteContext, record: Encounter | None, values: dict[str, Any]) -> bool:
    return _may_write_unit_record(context, record, values)


def _may_write_unit_record(context: WriteContext, record: CareRecord | None, values: dict[str, Any]) -> bool:
    if record is not None:
        return may_work_in(context, program_id=record.program_id, unit_id=record.unit_id)
    unit = context.cached(Unit, values.get("unit_id"))
    return unit is not None and may_work_in(context, program_id=unit.program_id, unit_id=unit.pk)


def may_write_child(parent_model: type[Any], parent_field: str) -> Any:
    def may_write(context: WriteContext, record: CareRecord | None, values: dict[str, Any]) -> bool:
        if record is not None:
            return may_work_in(context, program_id=record.program_id, unit_id=record.unit_id)
        parent = context.parent(parent_model, values[parent_field], parent_field)
        return may_work_in(context, program_id=parent.program_id, unit_id=parent.unit_id)

    return may_write


# Applying pushed changes.


def _save(context: WriteContext, record: CareRecord, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(record, name, value)
    # With a push's other writes, in one statement for the batch.
    context.update_later(record, [*values, "updated_at"])


def _soft_delete(context: WriteContext, record: CareRecord) -> CareRecord:
    # Clinical records are never hard-deleted: the row stays, flagged, for the record.
    record.is_deleted = True
    context.update_later(record, ["is_deleted", "updated_at"])
    return record


def remembered(apply: Any) -> Any:
    """Keep the per-batch cache in step with what an apply wrote, for later lookups."""

    @functools.wraps(apply)
    def wrapper(context: WriteContext, change: Change) -> Any:
        record = apply(context, change)
        context.remember(record)
        return record

    return wrapper


_REFERENCES: dict[str, type[Any]] = {
    "unit_id": Unit,
    "person_id": Person,
    "encounter_id": Encounter,
    "referral_id": Referral,
    "amends_id": ClinicalNote,
    "service_id": Service,
}


# What applying a note reads of its encounter. Other types read their parents whole (but for
# their clinical text): a referral's follow-up hooks read its encounter's times and disposition.
_NOTE_READS_OF_ENCOUNTER = ("program_id", "unit_id", "is_deleted")


def prepare_batch(context: WriteContext, fields_list: list[dict[str, Any]], *, type_name: str = "") -> None:
    """Load every record a batch's changes refer to, one query per table."""
    wanted: dict[type[Any], set[UUID]] = {}
    for fields in fields_list:
        for name, model in _REFERENCES.items():
            value = fields.get(name)
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    wanted.setdefault(model, set()).add(UUID(value))
    for model, ids in wanted.items():
        if type_name == "care.note" and model is Encounter:
            context.preload(model, ids, only=_NOTE_READS_OF_ENCOUNTER)
        else:
            # Parents are read for their references and flags, never their clinical text.
            context.preload(model, ids, defer=sealed_field_names(model))


def batch_preparer(type_name: str) -> Any:
    """``prepare_batch`` for the changes of one record type."""
    return functools.partial(prepare_batch, type_name=type_name)


@remembered
def person_apply(context: WriteContext, change: Change) -> Person:
    values = dict(change.values)
    _refuse_birth_not_yet_come(values.get("date_of_birth"))
    if change.operation == "create":
        unit = context.parent(Unit, values.pop("unit_id"), "unit_id")
        person = Person(id=change.record_id, program_id=unit.program_id, unit=unit, created_by=context.user, **values)
        context.insert_later(person)
        return person
    person = change.record  # type: ignore[assignment]
    assert isinstance(person, Person)
    if change.operation == "delete":
        return _soft_delete(context, person)  # type: ignore[return-value]
    if "unit_id" in values and values.pop("unit_id") != person.unit_id:
        raise Refused("unit_change_not_allowed", "A person's unit is changed on the server.", field="unit_id")
    _save(context, person, values)
    return person


@remembered
def encounter_apply(context: WriteContext, change: Change) -> Encounter:
    values = dict(change.values)
    person_id = values.get("person_id")
    _refuse_times_not_yet_come(values, "started_at", "ended_at")
    if "started_at" in values or "ended_at" in values:
        stored = change.record if change.operation == "update" else None
        _refuse_end_before_start(
            values.get("started_at", getattr(stored, "started_at", None)),
            values.get("ended_at", getattr(stored, "ended_at", None)),
            field="ended_at" if "ended_at" in values else "started_at",
        )
    if change.operation == "create":
        unit = context.parent(Unit, values.pop("unit_id"), "unit_id")
        if person_id is not None:
            _same_program(context.parent(Person, person_id, "person_id"), unit.program_id, "person_id")
        encounter = Encounter(
            id=change.record_id, program_id=unit.program_id, unit=unit, created_by=context.user, **values
        )
        context.insert_later(encounter)
        hooks.run("encounter_saved", encounter, actor=context.user, accessor=context.accessor)
        return encounter
    encounter = change.record  # type: ignore[assignment]
    assert isinstance(encounter, Encounter)
    if change.operation == "delete":
        _soft_delete(context, encounter)
        hooks.run("encounter_saved", encounter, actor=context.user, accessor=context.accessor)
        return encounter
    if "unit_id" in values and values.pop("unit_id") != encounter.unit_id:
        raise Refused("unit_change_not_allowed", "An encounter is moved to another unit on the server.", "unit_id")
    if person_id is not None:
        _same_program(context.parent(Person, person_id, "person_id"), encounter.program_id, "person_id")
    _save(context, encounter, values)
    hooks.run("encounter_saved", encounter, actor=context.user, accessor=context.accessor)
    return encounter


def encounter_take_device_value(context: WriteContext, change: Change, writer: User) -> list[tuple[str, UUID, str]]:
    """Write the device's side of a conflict on an encounter that a case manager chose
    (``apps.sync.services.conflict_resolve``).

    A device never moves an encounter, but one that knew no base may send a unit other than
    the one a supervisor moved it to: taking that unit moves the encounter back, with
    everything under it, as a move does (``encounter_reassign``: a supervisor's decision). Any
    other value is written through ``encounter_apply``, as the case manager's change.
    """
    encounter = change.record
    assert isinstance(encounter, Encounter)
    values = dict(change.values)
    unit_id = values.pop("unit_id", encounter.unit_id)
    written: list[tuple[str, UUID, str]] = []
    if unit_id != encounter.unit_id:
        unit = Unit.objects.filter(pk=unit_id, program_id=encounter.program_id).first()
        if unit is None:
            raise Refused("parent_not_found", "No such unit in the encounter's program.", field="unit_id")
        assert context.accessor is not None, "a move is audited: the resolver's accessor is needed"
        encounter = encounter_reassign(encounter=encounter, unit=unit, actor=context.user, accessor=context.accessor)
        written.append(("care.encounter", encounter.pk, "update"))
        written += [(record_type, record_id, "update") for record_type, record_id in records_moved_with(encounter.pk)]
        # The move audited what it wrote, the follow-up's steps with the rest.
        context.audited.update(record_id for _type, record_id, _operation in written)
    if values or change.operation == "delete":
        saved = encounter_apply(context, Change(change.operation, encounter.pk, encounter, values))
        context.flush_inserts()
        publish_record(type_name="care.encounter", record=saved, user=context.user, is_deleted=saved.is_deleted)
        if not written:
            written.append(("care.encounter", saved.pk, change.operation))
    return written


def _same_program(record: CareRecord, program_id: UUID, field: str) -> None:
    if record.program_id != program_id:
        raise Refused("parent_not_found", "That record belongs to another program.", field=field)


@remembered
def note_apply(context: WriteContext, change: Change) -> ClinicalNote:
    values = dict(change.values)
    if change.operation == "create":
        _refuse_times_not_yet_come(values, "signed_at")
        encounter = context.parent(Encounter, values.pop("encounter_id"), "encounter_id")
        amends_id = values.pop("amends_id", None)
        if amends_id is not None:
            amended = context.parent(ClinicalNote, amends_id, "amends_id")
            if amended.encounter_id != encounter.pk or not amended.is_signed:
                raise Refused(
                    "invalid_addendum", "An addendum amends a signed note of the same encounter.", "amends_id"
                )
        note = ClinicalNote(
            id=change.record_id,
            program_id=encounter.program_id,
            unit_id=encounter.unit_id,
            encounter=encounter,
            amends_id=amends_id,
            created_by=context.user,
            **values,
        )
        context.insert_later(note)
        return note
    note = change.record  # type: ignore[assignment]
    assert isinstance(note, ClinicalNote)
    note_refuses_change(context, note, change.operation, values)
    _refuse_times_not_yet_come(values, "signed_at")
    if change.operation == "delete":
        return _soft_delete(context, note)  # type: ignore[return-value]
    if "encounter_id" in values and values.pop("encounter_id") != note.encounter_id:
        raise Refused("parent_change_not_allowed", "A note stays with its encounter.", "encounter_id")
    if "amends_id" in values and values.pop("amends_id") != note.amends_id:
        raise Refused("parent_change_not_allowed", "An addendum stays with the note it amends.", "amends_id")
    _save(context, note, values)
    return note


def note_refuses_change(context: WriteContext, note: ClinicalNote, operation: str, values: dict[str, Any]) -> None:
    """Refuse any change of a note but its author's of a draft, whatever its values: sync asks
    this of a change it would keep as a conflict, which never reaches ``note_apply``."""
    if note.created_by_id != context.user.pk:
        raise Refused("not_author", "Only its author changes a note; others write an addendum.")
    if note.is_signed:
        # P3: a signed note is a clinical document; a later change is an addendum.
        # A delete refuses the whole note; an edit, the first field it changes.
        changed = None if operation == "delete" else min(values, key=lambda name: name != "body", default=None)
        raise Refused("note_signed", "This note is signed and cannot change; write an addendum.", changed)


def note_take_device_value(context: WriteContext, change: Change, writer: User) -> list[tuple[str, UUID, str]]:
    """Write the device's side of a conflict on a note that a case manager chose
    (``apps.sync.services.conflict_resolve``).

    Both sides are the note's author's: only its author's changes of a draft are kept as a
    conflict. A draft takes the device's text as its author's change. A note signed since
    never changes (P3): the device's text becomes an addendum amending it, written and
    signed by the case manager, as one added in the workspace is; the conflict keeps whose
    text it was. A change of a signed note's other fields, or its deletion, is refused. So is
    a signature: its author gives it, over the text they read (one kept as a conflict was
    made over text that has changed since).
    """
    note = change.record
    assert isinstance(note, ClinicalNote)
    if "signed_at" in change.values:
        raise Refused(
            "signature_is_the_authors",
            "Only the note's author signs it, over the text they read: they sign it again on their device.",
            "signed_at",
        )
    if not note.is_signed:
        saved = note_apply(WriteContext(user=writer, device=None), change)
        publish_record(type_name="care.note", record=saved, user=context.user, is_deleted=saved.is_deleted)
        return [("care.note", saved.pk, change.operation)]
    if change.operation != "update" or set(change.values) != {"body"}:
        changed = None if change.operation == "delete" else min(change.values, default=None)
        raise Refused("note_signed", "This note is signed and never changes; keep the server's value.", changed)
    addendum = note_apply(
        context,
        Change(
            "create",
            uuid.uuid4(),
            None,
            {
                "encounter_id": note.encounter_id,
                "amends_id": note.pk,
                "body": change.values["body"],
                "signed_at": timezone.now(),
            },
        ),
    )
    context.flush_inserts()
    publish_record(type_name="care.note", record=addendum, user=context.user)
    return [("care.note", addendum.pk, "create")]


@remembered
def referral_apply(context: WriteContext, change: Change) -> Referral:
    values = dict(change.values)
    if change.operation == "create":
        encounter = context.parent(Encounter, values.pop("encounter_id"), "encounter_id")
        _check_service(context, values.get("service_id"), encounter.program_id)
        referral = Referral(
            id=change.record_id,
            program_id=encounter.program_id,
            unit_id=encounter.unit_id,
            encounter=encounter,
            created_by=context.user,
            **values,
        )
        context.insert_later(referral)
        hooks.run("referral_saved", referral, actor=context.user, accessor=context.accessor)
        return referral
    referral = change.record  # type: ignore[assignment]
    assert isinstance(referral, Referral)
    if change.operation == "delete":
        return _soft_delete(context, referral)  # type: ignore[return-value]
    if "encounter_id" in values and values.pop("encounter_id") != referral.encounter_id:
        raise Refused("parent_change_not_allowed", "A referral stays with its encounter.", "encounter_id")
    if "service_id" in values:
        _check_service(context, values["service_id"], referral.program_id)
    _save(context, referral, values)
    hooks.run("referral_saved", referral, actor=context.user, accessor=context.accessor)
    return referral


def _check_service(context: WriteContext, service_id: UUID | None, program_id: UUID) -> None:
    if service_id is None:
        return
    service = context.cached(Service, service_id)
    if service is None or service.program_id != program_id:
        raise Refused("service_not_found", "No such service in this program's directory.", field="service_id")


@remembered
def referral_outcome_apply(context: WriteContext, change: Change) -> ReferralOutcomeEvent:
    if change.operation != "create":
        referral_outcome_refuses_change(context, change.record, change.operation, change.values)
    values = dict(change.values)
    # The outcome sets the referral's status: read it as it stands under its lock.
    referral = context.locked_parent(Referral, values.pop("referral_id"), "referral_id")
    if referral.task_status == ReferralTaskStatus.CANCELLED:
        raise Refused("referral_cancelled", "The referral was cancelled; it takes no outcome.", field="referral_id")
    _refuse_times_not_yet_come(values, "observed_at")
    event = ReferralOutcomeEvent(
        id=change.record_id,
        program_id=referral.program_id,
        unit_id=referral.unit_id,
        referral=referral,
        created_by=context.user,
        **values,
    )
    event.save(force_insert=True)
    _refresh_referral_status(referral, context=context)
    hooks.run("outcome_recorded", event, actor=context.user, accessor=context.accessor)
    return event


def _refuse_times_not_yet_come(values: dict[str, Any], *names: str) -> None:
    """Refuse a change that dates what happened ahead of the server's clock (a device clock
    years off), kept for review instead, like any change that cannot apply: the latest outcome
    by when it happened is the referral's status, and one dated ahead would hold it against
    every real outcome after it; an encounter's end dates its follow-up, which one ended years
    ahead would put off as long; a signature dates what the note attests."""
    latest = timezone.now() + timedelta(seconds=sync_conf.CLOCK_SKEW_SECONDS)
    for name in names:
        moment = _moment(values.get(name))
        if moment is not None and moment > latest:
            raise Refused(
                "time_in_future",
                f"{name} is ahead of the server's clock; check the device clock and record it again.",
                field=name,
            )


def _refuse_end_before_start(started_at: Any, ended_at: Any, *, field: str) -> None:
    """An encounter ends after it starts, once a change sets either (as merged), the other as
    stored: one that ended before it started dated its follow-up from a time the crew was not
    yet there. An edit of neither still applies to an encounter stored so before this rule.
    A start whose end the merge kept as a conflict with a colleague's is checked against
    the colleague's, and refused whole when it would pass it: the record never holds an
    end before its start, and the device's change stays for review."""
    started_at, ended_at = _moment(started_at), _moment(ended_at)
    if started_at is not None and ended_at is not None and ended_at < started_at:
        raise Refused(
            "invalid_fields",
            "ended_at comes after started_at. Moving both, send them in one change (resolving both"
            " conflicts, take the one that keeps the start before the end first).",
            field=field,
        )


def _refuse_birth_not_yet_come(date_of_birth: Any) -> None:
    # A day's grace: the device's today may be the server's tomorrow (UTC+14).
    if isinstance(date_of_birth, date) and date_of_birth > (timezone.now() + timedelta(days=1)).date():
        raise Refused("invalid_fields", "A date of birth is not in the future.", field="date_of_birth")


def _moment(value: Any) -> Any:
    return parse_datetime(value) if isinstance(value, str) else value


def referral_outcome_refuses_change(context: WriteContext, event: Any, operation: str, values: dict[str, Any]) -> None:
    """Outcome events are append-only: every change of one is refused, whatever its values."""
    raise Refused("append_only", "Outcome events are never changed or deleted; record a new one.")


def _refresh_referral_status(referral: Referral, *, context: WriteContext | None) -> None:
    """The referral's status is its latest outcome's (by when it happened, then when recorded).

    ``referral`` is read under its lock (``WriteContext.locked_parent``): it is published whole.
    """
    latest = referral.outcomes.order_by("-observed_at", "-created_at", "-id").values_list("outcome", flat=True).first()
    status = latest or ReferralStatus.OPEN
    if referral.status == status:
        return
    referral.status = status
    referral.save(update_fields=["status", "updated_at"])
    if context is not None and context.accessor is not None:
        # Its writer's, as the outcome that changed it is (P8).
        record_access_to(
            accessor=context.accessor, action=AccessAction.UPDATE, record_type="care.referral", record=referral
        )
    publisher = context.publisher if context is not None else None
    if isinstance(publisher, Publisher):
        _publish_into(publisher, referral, context)
    else:
        publish_record(type_name="care.referral", record=referral, user=context.user if context else None)


def _publish_into(publisher: Publisher, record: CareRecord, context: WriteContext | None) -> None:
    from apps.sync import registry

    synced_type = registry.get("care.referral")
    assert synced_type is not None
    # Its lock is held since it was read (locked_parent): the head is read under it.
    publisher.read_heads([record.pk])
    publisher.publish(
        synced_type,
        record,
        user=context.user if context else None,
        device=context.device if context else None,
        echo_to_origin=True,
    )


# Server-side writes.


@transaction.atomic
def referral_outcome_record(
    *,
    referral: Referral,
    outcome: str,
    observed_at: Any,
    details: str,
    actor: User,
    accessor: Accessor,
    event_id: UUID | None = None,
) -> ReferralOutcomeEvent:
    """A case manager records an outcome (a phone call, a clinic's report).

    With the id of an outcome already recorded by the actor (a retry whose answer was lost),
    the outcome is that one, returned as it stands; other content under its id, someone
    else's outcome (answered as the actor's, it would be audited as theirs), or the id of
    another record, is refused. Outcomes are append-only: recorded twice, a retry would count
    twice.

    The outcome is the accessor's create in the audit trail, in its transaction (P8): when the
    row cannot be written, neither is the outcome (nor the status and steps it settles). A
    retry writes nothing and answers with the outcome as it stands: a read, as a retried
    intake is, not a second creation.
    """
    event_id = event_id or uuid.uuid4()
    lock_records([referral.pk, event_id])
    _live_referral_under_lock(referral)
    if synced_type_of(event_id) not in (None, "care.referral_outcome"):
        raise DomainError(
            "This id is another record's; give the outcome an id of its own.", code="id_in_use", field="id"
        )
    recorded = ReferralOutcomeEvent.objects.filter(pk=event_id).first()
    if recorded is not None:
        moment = parse_datetime(observed_at) if isinstance(observed_at, str) else observed_at
        if (
            recorded.referral_id,
            recorded.outcome,
            recorded.observed_at,
            recorded.details,
            recorded.created_by_id,
        ) != (referral.pk, outcome, moment, details, actor.pk):
            raise DomainError(
                "An outcome with this id is recorded already, with other content or by someone else; it stands.",
                code="id_in_use",
                field="id",
            )
        record_access_to(
            accessor=accessor, action=AccessAction.READ, record_type="care.referral_outcome", record=recorded
        )
        return recorded
    context = WriteContext(user=actor, device=None, accessor=accessor)
    change = Change(
        "create",
        event_id,
        None,
        {"referral_id": referral.pk, "outcome": outcome, "observed_at": observed_at, "details": details},
    )
    try:
        event = referral_outcome_apply(context, change)
    except Refused as refused:
        # What a device's push keeps for review is refused to a person at once: a time that
        # cannot be true as a bad request, the referral's state (cancelled) as a conflict.
        status_code = http_status.HTTP_400_BAD_REQUEST if refused.code == "time_in_future" else None
        raise DomainError(refused.detail, code=refused.code, field=refused.field, status_code=status_code) from refused
    publish_record(type_name="care.referral_outcome", record=event, user=actor)
    record_access_to(accessor=accessor, action=AccessAction.CREATE, record_type="care.referral_outcome", record=event)
    return event


def _live_referral_under_lock(referral: Referral) -> Referral:
    """The referral as it stands under its lock (the caller holds it): a device's delete may
    have committed since the request read it, and then it is gone, as if deleted before."""
    found = Referral.objects.select_for_update().filter(pk=referral.pk, is_deleted=False).first()
    if found is None:
        raise DomainError("No such referral.", code="not_found", status_code=http_status.HTTP_404_NOT_FOUND)
    return found


class InvalidTransition(DomainError):
    status_code = http_status.HTTP_409_CONFLICT
    code = "invalid_transition"


# A referral's task event's health record type in the audit trail (apps.care.apps).
TASK_EVENT_RECORD = "care.referral_task_event"

# A task step's reason is a sentence (sealed at rest, so the database no longer bounds it).
TASK_REASON_MAX_LENGTH = 300


@transaction.atomic
def referral_task_status_change(
    *, referral: Referral, to_status: str, reason: str, actor: User, accessor: Accessor
) -> ReferralTaskEvent:
    """Move a referral along its task timeline (received, accepted, …, completed, cancelled).

    Only the transitions of ``TASK_TRANSITIONS`` are allowed: a cancelled, rejected, failed or
    completed referral is closed. "Unable to reach" is an outcome, not a cancellation. The
    same move sent again by whoever made it, with the same reason (a retry whose answer was
    lost), is that move, returned as it stands.

    The move is the accessor's update of the referral and creation of its task event in the
    audit trail, in its transaction (P8): when a row cannot be written, the move is not made.
    A retry writes nothing: a read of the referral and of the event it answers with, as a
    retried intake is.
    """
    if len(reason) > TASK_REASON_MAX_LENGTH:
        raise DomainError(
            f"Keep the reason to {TASK_REASON_MAX_LENGTH} characters.",
            code="max_length",
            field="reason",
            status_code=400,
        )
    lock_records([referral.pk])
    referral = _live_referral_under_lock(referral)
    current = referral.task_status
    if to_status == current:
        latest = referral.task_events.order_by("-created_at", "-id").first()
        if latest is not None and (latest.to_status, latest.reason, latest.created_by_id) == (
            to_status,
            reason,
            actor.pk,
        ):
            record_access_to(accessor=accessor, action=AccessAction.READ, record_type="care.referral", record=referral)
            record_access_to(accessor=accessor, action=AccessAction.READ, record_type=TASK_EVENT_RECORD, record=latest)
            return latest
    if to_status not in ReferralTaskStatus.allowed_next(current):
        raise InvalidTransition(
            f"A referral that is {ReferralTaskStatus(current).label.lower()} cannot become "
            f"{ReferralTaskStatus(to_status).label.lower()}.",
            field="status",
        )
    event = ReferralTaskEvent.objects.create(
        program_id=referral.program_id,
        unit_id=referral.unit_id,
        referral=referral,
        created_by=actor,
        from_status=current,
        to_status=to_status,
        reason=reason,
    )
    referral.task_status = to_status
    referral.save(update_fields=["task_status", "updated_at"])
    publish_record(type_name="care.referral", record=referral, user=actor)
    record_access_to(accessor=accessor, action=AccessAction.UPDATE, record_type="care.referral", record=referral)
    record_access_to(accessor=accessor, action=AccessAction.CREATE, record_type=TASK_EVENT_RECORD, record=event)
    return event


@transaction.atomic
def encounter_reassign(*, encounter: Encounter, unit: Unit, actor: User, accessor: Accessor) -> Encounter:
    """Move an encounter and everything under it to another unit of the same program: a
    supervisor's (or the program administrator's) decision of which crew works it.

    Its notes, referrals with their outcomes and task timelines, and what apps above care
    keep under it (follow-ups: the plan, its steps and their contact attempts) go with it.
    The old unit's devices are told to remove the synced ones; the new unit's get them (P5).
    Each health record moved is a write of the accessor's in the audit trail (P8), recorded
    here and by the hooks that move theirs, whichever way the move was asked for.
    """
    from apps.sync import registry

    overseen = programs_where(user=actor, roles=overseeing_roles()).filter(pk=encounter.program_id)
    if not overseen.exists():
        raise DomainError(
            "Only a supervisor of the encounter's program moves it to another unit.",
            code="permission_denied",
            status_code=http_status.HTTP_403_FORBIDDEN,
        )
    if unit.program_id != encounter.program_id:
        raise Refused("unit_in_other_program", "The unit belongs to another program.", field="unit")
    records = _lock_records_under(encounter)
    encounter = records[0][1]  # type: ignore[assignment]
    if encounter.unit_id == unit.pk:
        # Nothing moves: writing it all again would send every record under it to the unit's
        # devices again, and record a move that did not happen.
        raise Refused("unit_unchanged", "The encounter is already in this unit.", field="unit")
    publisher = Publisher()
    publisher.read_heads([record.pk for _name, record in records])
    for type_name, record in records:
        record.unit = unit
        record.save(update_fields=["unit", "updated_at"])
        synced_type = registry.get(type_name)
        assert synced_type is not None
        publisher.publish(synced_type, record, user=actor, device=None, is_deleted=record.is_deleted)
    # Not synced; they carry their referral's unit like every child record. They are written
    # under their referral's lock, held here.
    referral_ids = [record.pk for type_name, record in records if type_name == "care.referral"]
    task_events = ReferralTaskEvent.objects.filter(referral__in=referral_ids)
    task_event_ids = list(task_events.order_by("pk").values_list("pk", flat=True))
    task_events.update(unit=unit, updated_at=timezone.now())
    publisher.flush()
    moved: dict[str, list[UUID]] = {}
    for type_name, record in records:
        moved.setdefault(type_name, []).append(record.pk)
    moved[TASK_EVENT_RECORD] = task_event_ids
    for type_name, record_ids in moved.items():
        record_access(
            accessor=accessor,
            action=AccessAction.UPDATE,
            record_type=type_name,
            record_ids=record_ids,
            program_id=encounter.program_id,
        )
    hooks.run("encounter_reassigned", encounter, actor=actor, accessor=accessor)
    return encounter


def _lock_records_under(encounter: Encounter) -> list[tuple[str, CareRecord]]:
    """The encounter and every synced record under it, the encounter first, read as they
    stand under their locks.

    Read again under the locks: a copy read before a colleague's edit committed (a note's
    author finishing it, a case manager's referral priority) would publish it undone. A
    create takes the lock of the record it is placed under (``SyncedType.parent_field``): a
    record created while this waited for its parent's lock is found by the next read, and
    locked in its turn, until a read finds nothing new.
    """
    held: set[UUID] = set()
    while True:
        records = _records_under(encounter.pk)
        wanted = {record.pk for _name, record in records} | set(hooks.places_under_encounter(encounter))
        if wanted <= held:
            return records
        lock_records(wanted - held)
        held |= wanted


def records_moved_with(encounter_id: UUID) -> list[tuple[str, UUID]]:
    """The synced records under an encounter, by type and id: what a move writes with it."""
    return [(type_name, record.pk) for type_name, record in _records_under(encounter_id)[1:]]


def _records_under(encounter_id: UUID) -> list[tuple[str, CareRecord]]:
    encounter = Encounter.objects.get(pk=encounter_id)
    referrals = list(Referral.objects.filter(encounter=encounter))
    records: list[tuple[str, CareRecord]] = [("care.encounter", encounter)]
    records += [("care.note", note) for note in ClinicalNote.objects.filter(encounter=encounter)]
    records += [("care.referral", referral) for referral in referrals]
    outcomes = ReferralOutcomeEvent.objects.filter(referral__in=referrals)
    records += [("care.referral_outcome", event) for event in outcomes]
    records += hooks.records_under_encounter(encounter)
    return records


@transaction.atomic
def note_addendum_add(*, note: ClinicalNote, body: str, actor: User, accessor: Accessor) -> ClinicalNote:
    """Amend a signed note on the server (a case manager's correction): a new, signed note.

    The signed note itself never changes (P3). The addendum goes through the same rules as one
    pushed from a device (``note_apply``: a signed, live note of the same encounter) and is
    published to the feed, so the crew's devices get it like any other note. It is the
    accessor's create in the audit trail, in its transaction (P8): when the row cannot be
    written, neither is the addendum.
    """
    if not body.strip():
        raise DomainError("Write the addendum's text.", code="required", field="body", status_code=400)
    addendum_id = uuid.uuid4()
    lock_records([note.pk, addendum_id])
    current = ClinicalNote.objects.filter(pk=note.pk, is_deleted=False).first()
    if current is None or not current.is_signed:
        raise DomainError(
            "Only a signed note takes an addendum; a draft is changed by its author.",
            code="note_not_signed",
            field="amends_id",
            status_code=400,
        )
    context = WriteContext(user=actor, device=None, accessor=accessor)
    try:
        addendum = note_apply(
            context,
            Change(
                "create",
                addendum_id,
                None,
                {
                    "encounter_id": current.encounter_id,
                    "amends_id": current.pk,
                    "body": body,
                    "signed_at": timezone.now(),
                },
            ),
        )
    except Refused as refused:
        raise DomainError(refused.detail, code=refused.code, field=refused.field, status_code=400) from refused
    publish_record(type_name="care.note", record=addendum, user=actor)
    record_access_to(accessor=accessor, action=AccessAction.CREATE, record_type="care.note", record=addendum)
    return addendum
