from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.common.api.pagination import PageQuerySerializer
from apps.common.api.serializers import (
    BoundedListField,
    CanonicalUUIDField,
    OffsetDateTimeField,
    QuerySerializer,
    StrictSerializer,
)
from apps.dispatch.models import Acuity, AssignmentStatus, IncidentSource, Priority, Response, UnservedReason
from apps.dispatch.services import END_REASON_MAX_LENGTH
from apps.teams.models import UnitStatus

# Decimal text as the schema publishes it: the range in the pattern too, since a schema
# cannot bound a string's value and a client generating from it would send "195".
_LATITUDE_TEXT = r"^-?(?:90(?:\.0{0,6})?|[0-8]?\d(?:\.\d{0,6})?)$"
_LONGITUDE_TEXT = r"^-?(?:180(?:\.0{0,6})?|(?:1[0-7]\d|0?\d?\d)(?:\.\d{0,6})?)$"


@extend_schema_field({"type": "string", "format": "decimal", "pattern": _LATITUDE_TEXT, "nullable": True})
class LatitudeField(serializers.DecimalField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_digits=9, decimal_places=6, min_value=-90, max_value=90, **kwargs)


@extend_schema_field({"type": "string", "format": "decimal", "pattern": _LONGITUDE_TEXT, "nullable": True})
class LongitudeField(serializers.DecimalField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_digits=9, decimal_places=6, min_value=-180, max_value=180, **kwargs)


class LocationSerializer(StrictSerializer):
    address = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    zone = serializers.CharField(
        max_length=32, required=False, allow_null=True, default=None, help_text="Zone code within the program."
    )
    latitude = LatitudeField(required=False, allow_null=True, default=None)
    longitude = LongitudeField(required=False, allow_null=True, default=None)
    accuracy_m = serializers.IntegerField(min_value=0, max_value=100_000, required=False, allow_null=True, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if (attrs["latitude"] is None) != (attrs["longitude"] is None):
            raise serializers.ValidationError({"longitude": "Give latitude and longitude together."})
        return attrs


class SafetyScreenSerializer(StrictSerializer):
    mental_health_nexus = serializers.BooleanField()
    weapon = serializers.BooleanField()
    violence_in_progress = serializers.BooleanField()
    imminent_self_harm = serializers.BooleanField()
    medical_emergency = serializers.BooleanField()
    substance_use = serializers.BooleanField(required=False, default=False)
    known_high_risk = serializers.BooleanField(required=False, default=False)
    acuity = serializers.ChoiceField(choices=Acuity.choices, required=False, default=Acuity.MODERATE)
    hazards = BoundedListField(
        child=serializers.CharField(max_length=60),
        max_length=20,
        required=False,
        default=list,
        help_text="E.g. dogs, needles.",
    )


class IncidentIntakeSerializer(StrictSerializer):
    program = serializers.SlugField(help_text="The program's slug.")
    external_call_id = serializers.CharField(
        max_length=64, help_text="Your (CAD's) id for the call. A retry with the same id returns the same incident."
    )
    # Named as on the wire; DRF fields have a `source` attribute of their own.
    source = serializers.ChoiceField(choices=IncidentSource.choices)  # type: ignore[assignment]
    priority = serializers.ChoiceField(choices=Priority.choices, required=False, default=Priority.HIGH)
    received_at = OffsetDateTimeField(
        required=False, default=None, allow_null=True, help_text="When the call came in; defaults to now."
    )
    location = LocationSerializer()
    callback_number = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    nature = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    safety_screen = SafetyScreenSerializer()


class IncidentQuerySerializer(PageQuerySerializer):
    program = serializers.SlugField(required=False)
    status = serializers.ChoiceField(choices=["open", "closed"], required=False)


class AssignmentQuerySerializer(PageQuerySerializer):
    active = serializers.BooleanField(required=False, default=False, help_text="Only those still under way.")


class OverrideSerializer(StrictSerializer):
    response = serializers.ChoiceField(choices=Response.choices)
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class CloseSerializer(StrictSerializer):
    unserved_reason = serializers.ChoiceField(
        choices=UnservedReason.choices, required=False, allow_blank=True, default=""
    )
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class OfferSerializer(StrictSerializer):
    unit = serializers.UUIDField()
    additional = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Give a unit that already holds an active assignment this one as well.",
    )


class ObservedSerializer(StrictSerializer):
    observed_at = OffsetDateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="When it happened by the device's clock (recorded offline); the server's time orders.",
    )


class StatusUpdateSerializer(ObservedSerializer):
    status = serializers.ChoiceField(
        choices=[
            AssignmentStatus.EN_ROUTE,
            AssignmentStatus.ON_SCENE,
            AssignmentStatus.TRANSPORTING,
            AssignmentStatus.CLEARED,
        ]
    )
    # The id of the status time synced to devices (dispatch.status_time): spelt as sync takes it.
    event_id = CanonicalUUIDField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Your id for this update (a UUID in lowercase); a retry with it applies once.",
    )


class ReasonSerializer(ObservedSerializer):
    reason = serializers.CharField(max_length=END_REASON_MAX_LENGTH)


class CancelSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=END_REASON_MAX_LENGTH)


class UnitAvailabilitySerializer(ObservedSerializer):
    status = serializers.ChoiceField(choices=[UnitStatus.AVAILABLE, UnitStatus.OUT_OF_SERVICE])


class BoardQuerySerializer(QuerySerializer):
    program = serializers.SlugField()
