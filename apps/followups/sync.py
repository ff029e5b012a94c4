"""What follow-ups syncs to field devices: contact attempts, made offline on a tablet."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from rest_framework import serializers

from apps.care import services as care_services
from apps.care.models import Encounter
from apps.care.sync import CareWire, clinical_text, program_id_of, scopes_of
from apps.common.api.serializers import CanonicalUUIDField, OffsetDateTimeField
from apps.followups import services as followups_services
from apps.followups.models import ContactAttempt, ContactMethod, ContactResult, FollowUpStep
from apps.sync import registry
from apps.sync.registry import Change, Refused, WriteContext


class ContactAttemptWire(CareWire):
    step_id = CanonicalUUIDField()
    method = serializers.ChoiceField(choices=ContactMethod.choices)
    result = serializers.ChoiceField(choices=ContactResult.choices)
    notes = clinical_text(max_length=20_000, allow_blank=True, required=False, default="")
    attempted_at = OffsetDateTimeField()


def may_write_attempt(context: WriteContext, record: ContactAttempt | None, values: dict[str, Any]) -> bool:
    if record is not None:
        return care_services.may_work_in(context, program_id=record.program_id, unit_id=record.unit_id)
    step = context.parent(FollowUpStep, values["step_id"], "step_id")
    return care_services.may_work_in(context, program_id=step.program_id, unit_id=step.unit_id)


def attempt_refuses_change(context: WriteContext, attempt: Any, operation: str, values: dict[str, Any]) -> None:
    """Every change of an attempt is refused, whatever its values (sync asks before keeping one
    as a conflict, which never reaches ``attempt_apply``)."""
    raise Refused("append_only", "A contact attempt is never changed; record another one.")


def attempt_apply(context: WriteContext, change: Change) -> ContactAttempt:
    """An attempt is a record of what happened: created once, never changed or deleted."""
    if change.operation != "create":
        attempt_refuses_change(context, change.record, change.operation, change.values)
    values = dict(change.values)
    step = context.parent(FollowUpStep, values.pop("step_id"), "step_id")
    if followups_services.attempt_is_in_the_future(values["attempted_at"]):
        raise Refused("attempt_in_the_future", followups_services.ATTEMPT_IN_THE_FUTURE, field="attempted_at")
    attempt = ContactAttempt(
        id=change.record_id,
        program_id=step.program_id,
        unit_id=step.unit_id,
        step=step,
        created_by=context.user,
        **values,
    )
    context.insert_later(attempt)
    return attempt


def attempts_under_encounter(encounter: Encounter) -> list[tuple[str, ContactAttempt]]:
    """The contact attempts of the encounter's follow-up: they move with it to another unit."""
    attempts = ContactAttempt.objects.filter(step__plan__encounter_id=encounter.pk).order_by("pk")
    return [(followups_services.CONTACT_ATTEMPT, attempt) for attempt in attempts]


def steps_under_encounter(encounter: Encounter) -> list[UUID]:
    """The steps of the encounter's follow-up: devices create contact attempts under them."""
    return list(FollowUpStep.objects.filter(plan__encounter_id=encounter.pk).values_list("pk", flat=True))


def register_synced_types() -> None:
    registry.register(
        registry.SyncedType(
            name=followups_services.CONTACT_ATTEMPT,
            model=ContactAttempt,
            serializer=ContactAttemptWire,
            to_wire=registry.representation(ContactAttemptWire),
            scopes_of=scopes_of,
            program_id_of=program_id_of,
            may_write=may_write_attempt,
            apply=attempt_apply,
            refuses_change=attempt_refuses_change,
            program_from=(FollowUpStep, "step_id"),
            parent_field="step_id",
            clinical_text_fields=frozenset({"notes"}),
            watermelon_table="contact_attempts",
        )
    )
