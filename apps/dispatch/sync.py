"""What dispatch syncs to field devices: a crew's status times, recorded offline.

A crew in a basement records "on scene" when it happens; the tablet pushes it with the rest
of its outbox when it is back online. Each report is a record of its own (its id is the
device's event id, as over REST): created once, never changed, kept in the incident's
timeline with the time the crew observed, and it moves the assignment on as the REST status
update does. A report the dispatch rules refuse (a time that cannot be true, an assignment
that has ended) is quarantined for a supervisor, never lost. A report sent over REST is the
same record, published by the status update's service (services.assignment_update_status).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from uuid import UUID

from rest_framework import serializers

from apps.common.api.errors import DomainError
from apps.common.api.serializers import CanonicalUUIDField, OffsetDateTimeField, StrictSerializer
from apps.common.ids import canonical_uuid
from apps.dispatch import selectors, services
from apps.dispatch.models import Assignment, AssignmentStatus, TimelineEvent
from apps.sync import registry
from apps.sync.registry import Change, IncomingWrite, Refused, WriteContext
from apps.sync.scopes import unit_scope
from apps.sync.services import WrittenSinceTransactionBegan

# The wire field a dispatch rule's refusal is about, where the REST request names it
# otherwise (None: the record's own id, which a refusal of sync names by its mutation).
_WIRE_FIELD: dict[str, str | None] = {"event_id": None, "assignment": "assignment_id"}


class StatusTimeWire(StrictSerializer):
    assignment_id = CanonicalUUIDField()
    status = serializers.ChoiceField(choices=[status.value for status in services.CREW_STATUS_EVENTS])
    # Served as the time the server took the report when the crew gave none (_with_reported_at).
    observed_at = OffsetDateTimeField()
    # False when the assignment had already moved past it: kept in the timeline only.
    applied = serializers.BooleanField(read_only=True)
    unit_id = serializers.UUIDField(source="assignment.unit_id", read_only=True)
    program_id = serializers.UUIDField(source="incident.program_id", read_only=True)
    author_id = serializers.UUIDField(source="actor_id", read_only=True)

    def to_representation(self, instance: TimelineEvent) -> dict[str, Any]:
        return _with_reported_at(instance, super().to_representation(instance))


class _ReportedAtWire(StrictSerializer):
    observed_at = OffsetDateTimeField(source="at")


_reported_at = registry.representation(_ReportedAtWire)


def _with_reported_at(event: TimelineEvent, data: dict[str, Any]) -> dict[str, Any]:
    """A status time reported over REST without the crew's time is served with the time the
    server took the report: a device's timeline always has a time to place it at. The event
    keeps none, and a later report of it with the crew's time is the same report
    (services.repeats_report)."""
    if data["observed_at"] is None:
        data["observed_at"] = _reported_at(event)["observed_at"]
    return data


_as_sent = registry.representation(StatusTimeWire)  # compiled from the fields alone


def status_time_to_wire(event: TimelineEvent) -> dict[str, Any]:
    """The wire form, as StatusTimeWire renders it (checked against DRF in the wire-form tests)."""
    return _with_reported_at(event, _as_sent(event))


def scopes_of(event: TimelineEvent) -> list[str]:
    """The crew of the unit, and the program's dispatchers and supervisors."""
    assert event.assignment is not None  # a status time always belongs to an assignment
    return [unit_scope(event.assignment.unit_id), *services.staff_scopes(event.incident.program_id)]


def program_id_of(event: TimelineEvent) -> UUID:
    return event.incident.program_id


def may_write_status_time(context: WriteContext, event: TimelineEvent | None, values: dict[str, Any]) -> bool:
    """The assignment's crew, or its program's dispatchers (relaying a radio report), as
    over REST."""
    assignment = (
        event.assignment if event is not None else context.parent(Assignment, values["assignment_id"], "assignment_id")
    )
    assert assignment is not None  # a status time always belongs to an assignment
    return selectors.is_crew_of(user=context.user, unit_id=assignment.unit_id) or selectors.can_dispatch(
        user=context.user, program_id=assignment.incident.program_id
    )


def status_time_refuses_change(context: WriteContext, event: Any, operation: str, values: dict[str, Any]) -> None:
    """Every change of a status time is refused, whatever its values (sync asks before keeping
    one as a conflict, which never reaches ``status_time_apply``).

    A create that meets one and is not the same report (``status_time_repeats``: a time sent
    over REST, then with the outbox) is another report under its id, refused as over REST."""
    if operation == "create":
        refusal = services.event_id_reused()
        raise Refused(refusal.code, refusal.detail)
    raise Refused("append_only", "A status time is never changed; report the next status.")


def status_time_repeats(event: TimelineEvent, values: dict[str, Any]) -> bool:
    """Whether a create that meets this status time under its id is the same report again (sent
    over REST, then with the outbox), by the REST update's own rule."""
    status, assignment_id = values.get("status"), values.get("assignment_id")
    if status is None or assignment_id is None or "observed_at" not in values:
        return False
    return services.repeats_report(
        event, event_id=event.pk, assignment_id=assignment_id, status=status, observed_at=values["observed_at"]
    )


def lock_boards_before_status_times(writes: list[IncomingWrite]) -> None:
    """The boards of the units whose assignments these status times move: a push or a review
    takes them before its first write, as a crew's report over REST does, so that a busy
    board is waited for rather than refusing the whole push or review. Only for new status
    times (every change of one is refused without the board), each of an assignment its
    writer may report (may_write_status_time's rule): naming another unit's assignment
    takes nothing."""
    reports: dict[UUID, set[UUID]] = defaultdict(set)
    for write in writes:
        assignment_id = canonical_uuid(write.fields.get("assignment_id"))
        if write.operation == "create" and assignment_id is not None:
            reports[write.writer_id].add(assignment_id)
    services.lock_boards_of_assignments(reports)


def status_time_apply(context: WriteContext, change: Change) -> TimelineEvent:
    if change.operation != "create":
        status_time_refuses_change(context, change.record, change.operation, change.values)
    values = change.values
    assignment = context.parent(Assignment, values["assignment_id"], "assignment_id")
    assert context.accessor is not None, "the push names who writes each change (P8)"
    try:
        update = services.assignment_update_status_from_outbox(
            assignment_id=assignment.pk,
            user=context.user,
            device=context.device,
            status=AssignmentStatus(values["status"]),
            observed_at=values["observed_at"],
            client_event_id=change.record_id,
            # The assignment's update is recorded as over REST, with the same transaction: as
            # the reviewer's for a status time applied after review, as its writer's otherwise.
            accessor=context.accessor,
        )
    except WrittenSinceTransactionBegan:
        # The unit's board, which a push or a review takes before its first write
        # (lock_boards_before_status_times), was not taken then (its writer was not allowed
        # to report the assignment when that ran, and is now), and was busy or published
        # since (services._lock_unit_boards): not this report's fault. The write is undone,
        # nothing of it kept: a push applies its batch again in a new transaction, which takes
        # the board before its first write; a review is answered 409 concurrent_change.
        raise
    except DomainError as refusal:
        field = _WIRE_FIELD.get(refusal.field, refusal.field) if refusal.field is not None else None
        raise Refused(refusal.code, refusal.detail, field=field) from None
    if update.event.pk != change.record_id:
        # Reported over REST before this record type existed, with this id as its event id.
        raise Refused("reported_already", "This status was already reported; it stands.")
    return update.event


def register_synced_types() -> None:
    registry.register(
        registry.SyncedType(
            name=services.STATUS_TIME_RECORD,
            model=TimelineEvent,
            serializer=StatusTimeWire,
            to_wire=status_time_to_wire,
            scopes_of=scopes_of,
            program_id_of=program_id_of,
            may_write=may_write_status_time,
            apply=status_time_apply,
            refuses_change=status_time_refuses_change,
            create_repeats=status_time_repeats,
            lock_before_writing=lock_boards_before_status_times,
            program_from=(Assignment, "assignment_id"),
            program_lookup="incident__program_id",
            is_clinical=False,
            # Not a WatermelonDB table: an app's schema that lacks it would fail its pulls.
            # Such apps report status over REST, with the same event id.
        )
    )
