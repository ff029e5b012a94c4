"""What care syncs to field devices: the wire form of each record type, and its registration."""

from __future__ import annotations

import functools
from typing import Any
from uuid import UUID

from rest_framework import serializers

from apps.accounts.models import Role
from apps.care import services
from apps.care.models import (
    CareRecord,
    ClinicalNote,
    Disposition,
    Encounter,
    Person,
    Referral,
    ReferralOutcomeEvent,
    ReferralPriority,
    ReferralStatus,
    ReferralTaskStatus,
    TransportDestination,
)
from apps.common.api.serializers import CanonicalUUIDField, IsoDateField, OffsetDateTimeField, StrictSerializer
from apps.directory.models import ServiceType
from apps.sync import registry
from apps.sync.scopes import program_role_scope, unit_scope
from apps.teams.models import Unit


def clinical_text(**options: Any) -> serializers.CharField:
    """A wire field of clinical free text, kept as written, its indentation and blank lines
    too: trimmed, the server's copy would differ from the device's, which keeps its own and
    is never told (its own write does not come back to it)."""
    return serializers.CharField(trim_whitespace=False, **options)


class CareWire(StrictSerializer):
    """Fields every care record carries on the wire (all read-only: the server sets them)."""

    unit_id = serializers.UUIDField(read_only=True)
    program_id = serializers.UUIDField(read_only=True)
    author_id = serializers.UUIDField(source="created_by_id", read_only=True)
    deleted = serializers.BooleanField(source="is_deleted", read_only=True)


class PersonWire(CareWire):
    unit_id = CanonicalUUIDField()
    given_name = serializers.CharField(max_length=100, allow_blank=True, required=False, default="")
    family_name = serializers.CharField(max_length=100, allow_blank=True, required=False, default="")
    date_of_birth = IsoDateField(allow_null=True, required=False, default=None)
    phone_number = serializers.CharField(max_length=32, allow_blank=True, required=False, default="")


class EncounterWire(CareWire):
    unit_id = CanonicalUUIDField()
    person_id = CanonicalUUIDField(allow_null=True, required=False, default=None)
    started_at = OffsetDateTimeField()
    ended_at = OffsetDateTimeField(allow_null=True, required=False, default=None)
    location = serializers.CharField(max_length=300, allow_blank=True, required=False, default="")
    assessment = clinical_text(max_length=20_000, allow_blank=True, required=False, default="")
    disposition = serializers.ChoiceField(choices=Disposition.choices, allow_blank=True, required=False, default="")
    transport_destination = serializers.ChoiceField(
        choices=TransportDestination.choices, allow_blank=True, required=False, default=""
    )


class NoteWire(CareWire):
    encounter_id = CanonicalUUIDField()
    amends_id = CanonicalUUIDField(allow_null=True, required=False, default=None)
    body = clinical_text(max_length=50_000)
    signed_at = OffsetDateTimeField(allow_null=True, required=False, default=None)


class ReferralWire(CareWire):
    encounter_id = CanonicalUUIDField()
    service_type = serializers.ChoiceField(choices=ServiceType.choices)
    service_name = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")
    service_id = CanonicalUUIDField(allow_null=True, required=False, default=None)
    reason = clinical_text(max_length=20_000, allow_blank=True, required=False, default="")
    priority = serializers.ChoiceField(choices=ReferralPriority.choices, required=False, default="routine")
    warm_handoff = serializers.BooleanField(required=False, default=False)
    appointment_at = OffsetDateTimeField(allow_null=True, required=False, default=None)
    consent_to_share = serializers.BooleanField(required=False, default=False)
    consent_to_contact = serializers.BooleanField(required=False, default=False)
    status = serializers.ChoiceField(choices=ReferralStatus.choices, read_only=True)
    task_status = serializers.ChoiceField(choices=ReferralTaskStatus.choices, read_only=True)


class ReferralOutcomeWire(CareWire):
    referral_id = CanonicalUUIDField()
    outcome = serializers.ChoiceField(choices=[status for status in ReferralStatus.values if status != "open"])
    observed_at = OffsetDateTimeField()
    details = clinical_text(max_length=20_000, allow_blank=True, required=False, default="")


def scopes_of(record: CareRecord) -> tuple[str, ...]:
    """The unit's crew, and the program's case managers and supervisors."""
    return _unit_and_program_scopes(record.unit_id, record.program_id)


@functools.lru_cache(maxsize=4096)
def _unit_and_program_scopes(unit_id: UUID, program_id: UUID) -> tuple[str, ...]:
    # Asked at every change a push publishes, and a batch's records share a few units.
    return (
        unit_scope(unit_id),
        program_role_scope(program_id, Role.CASE_MANAGER),
        program_role_scope(program_id, Role.SUPERVISOR),
    )


def program_id_of(record: CareRecord) -> Any:
    return record.program_id


def register_synced_types() -> None:
    common: dict[str, Any] = {
        "scopes_of": scopes_of,
        "program_id_of": program_id_of,
    }
    registry.register(
        registry.SyncedType(
            name="care.person",
            prepare=services.batch_preparer("care.person"),
            model=Person,
            serializer=PersonWire,
            to_wire=registry.representation(PersonWire),
            may_write=services.may_write_person,
            apply=services.person_apply,
            program_from=(Unit, "unit_id"),
            health_fields=frozenset({"given_name", "family_name", "date_of_birth", "phone_number"}),
            watermelon_table="persons",
            **common,
        )
    )
    registry.register(
        registry.SyncedType(
            name="care.encounter",
            prepare=services.batch_preparer("care.encounter"),
            model=Encounter,
            serializer=EncounterWire,
            to_wire=registry.representation(EncounterWire),
            may_write=services.may_write_encounter,
            apply=services.encounter_apply,
            take_device_value=services.encounter_take_device_value,
            program_from=(Unit, "unit_id"),
            clinical_text_fields=frozenset({"assessment"}),
            health_fields=frozenset({"location"}),
            watermelon_table="encounters",
            **common,
        )
    )
    registry.register(
        registry.SyncedType(
            name="care.note",
            prepare=services.batch_preparer("care.note"),
            model=ClinicalNote,
            serializer=NoteWire,
            to_wire=registry.representation(NoteWire),
            may_write=services.may_write_child(Encounter, "encounter_id"),
            apply=services.note_apply,
            refuses_change=services.note_refuses_change,
            take_device_value=services.note_take_device_value,
            program_from=(Encounter, "encounter_id"),
            parent_field="encounter_id",
            clinical_text_fields=frozenset({"body"}),
            # A signature is given over the text its author read.
            attests={"signed_at": frozenset({"body"})},
            watermelon_table="notes",
            **common,
        )
    )
    registry.register(
        registry.SyncedType(
            name="care.referral",
            prepare=services.batch_preparer("care.referral"),
            model=Referral,
            serializer=ReferralWire,
            to_wire=registry.representation(ReferralWire),
            may_write=services.may_write_child(Encounter, "encounter_id"),
            apply=services.referral_apply,
            program_from=(Encounter, "encounter_id"),
            parent_field="encounter_id",
            clinical_text_fields=frozenset({"reason"}),
            watermelon_table="referrals",
            **common,
        )
    )
    registry.register(
        registry.SyncedType(
            name="care.referral_outcome",
            prepare=services.batch_preparer("care.referral_outcome"),
            model=ReferralOutcomeEvent,
            serializer=ReferralOutcomeWire,
            to_wire=registry.representation(ReferralOutcomeWire),
            may_write=services.may_write_child(Referral, "referral_id"),
            apply=services.referral_outcome_apply,
            refuses_change=services.referral_outcome_refuses_change,
            program_from=(Referral, "referral_id"),
            parent_field="referral_id",
            clinical_text_fields=frozenset({"details"}),
            watermelon_table="referral_outcomes",
            **common,
        )
    )
