from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from apps.common import calendar
from apps.common.ids import CANONICAL_UUID, canonical_uuid


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses fields it does not know, so a client's typo is an error and not silently lost,
    and values of a JSON type their field does not take."""

    # False for a query string's values: all text, each read as its field says.
    checks_json_types = True

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: [serializers.ErrorDetail("Unknown field.", code="unknown_field")] for name in unknown}
                )
        if self.checks_json_types and isinstance(data, dict):
            mistyped = mistyped_fields(self, data)
            if mistyped:
                raise serializers.ValidationError(
                    {name: [serializers.ErrorDetail(wanted, code="invalid")] for name, wanted in mistyped.items()}
                )
        return super().to_internal_value(data)


class BoundedListField(serializers.ListField):
    """A list refused for its length before its items are read: DRF checks ``max_length``
    after validating every item, so a body of a million bad items took minutes and answered
    a million errors."""

    def to_internal_value(self, data: Any) -> Any:
        if self.max_length is not None and isinstance(data, list) and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class QuerySerializer(StrictSerializer):
    """The parameters of a query string: unknown ones refused, values all text, each sent once.

    Pass ``request.query_params`` itself: a parameter sent twice (``?limit=5&limit=500``) is
    refused rather than read as its last value, which the client may not have meant.
    """

    checks_json_types = False

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, QueryDict):
            # An unknown name sent twice is unknown first (StrictSerializer says so).
            repeated = sorted(name for name, values in data.lists() if len(values) > 1 and name in self.fields)
            if repeated:
                raise serializers.ValidationError(
                    {
                        name: [serializers.ErrorDetail("Send this parameter once.", code="repeated_parameter")]
                        for name in repeated
                    }
                )
            data = data.dict()
        # DRF reads a number through int(), which takes "1_0" as 10, " 5" or "5.0" as 5 and
        # any script's digits: a query's number is plain digits, or the client is told.
        unreadable = sorted(
            name
            for name, value in data.items()
            if isinstance(self.fields.get(name), serializers.IntegerField)
            and isinstance(value, str)
            and not (value.isascii() and value.removeprefix("-").isdigit())
        )
        if unreadable:
            raise serializers.ValidationError(
                {
                    name: [serializers.ErrorDetail("Send a whole number in digits.", code="invalid")]
                    for name in unreadable
                }
            )
        return super().to_internal_value(data)


# The JSON types a field takes. DRF reads 12 as the text "12", 1 and "yes" as true and 5 as
# the UUID 00000000-…-0005: a client sending those has a bug, and is told so, field by field.
_JSON_TYPES: tuple[tuple[type[serializers.Field[Any, Any, Any, Any]], tuple[type, ...], str], ...] = (
    (serializers.BooleanField, (bool,), "true or false"),
    (serializers.IntegerField, (int,), "a whole number"),
    (serializers.DecimalField, (int, float, str), "a number"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.CharField, (str,), "a string"),
    (serializers.ChoiceField, (str,), "a string"),
    (serializers.UUIDField, (str,), "a UUID string"),
    (serializers.DateTimeField, (str,), "a string (an ISO 8601 time)"),
    (serializers.DateField, (str,), "a string (an ISO 8601 date)"),
    (serializers.DictField, (dict,), "an object"),
    (serializers.ListField, (list,), "a list"),
)


def mistyped_fields(serializer: serializers.Serializer[Any], data: dict[str, Any]) -> dict[str, str]:
    """The fields sent as a JSON type their field does not take, each with what to send; none
    when every value is of a type its field takes (DRF still checks the values)."""
    mistyped: dict[str, str] = {}
    for name, value in data.items():
        field = serializer.fields.get(name)
        if field is None or field.read_only or value is None:  # DRF words those
            continue
        wanted = _mistyped(field, value)
        if wanted is not None:
            mistyped[name] = wanted
        elif isinstance(field, serializers.ListField) and isinstance(value, list):
            # A list's items too, each named by its place: ["13"] for a list of numbers.
            for index, item in enumerate(value):
                wanted = _mistyped(field.child, item) if item is not None else None
                if wanted is not None:
                    mistyped[f"{name}.{index}"] = wanted
                    break
    return mistyped


def _mistyped(field: serializers.Field[Any, Any, Any, Any], value: Any) -> str | None:
    """What to send instead of ``value``, when its JSON type is not one the field takes."""
    for kind, json_types, wanted in _JSON_TYPES:
        if isinstance(field, kind):
            if not isinstance(value, json_types) or (bool not in json_types and isinstance(value, bool)):
                return f"Send {wanted}."
            return None
    return None


class OffsetDateTimeField(serializers.DateTimeField):
    """A moment as a device saw it, with its UTC offset. A time without one (or a bare date)
    is refused: read in the server's zone, a tablet's local time in New York would be
    stored five hours off, with no error to tell anyone."""

    default_error_messages = {
        "offset_required": "Give the time with its UTC offset, e.g. 2026-11-20T14:05:00-05:00 or …Z.",
        "null_characters_not_allowed": "Null characters are not allowed.",
        "not_ascii": "Write the time in ASCII (digits 0-9), e.g. 2026-11-20T14:05:00-05:00.",
        "time_out_of_range": calendar.OUT_OF_RANGE,
        "overflow": calendar.OUT_OF_RANGE,
    }

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str):
            # Python's ISO 8601 parser stops at a NUL: what follows it would be dropped unread.
            if "\x00" in value:
                self.fail("null_characters_not_allowed")
            if not value.isascii():  # Django's parser reads any script's digits: ٢٠٢٦ as 2026
                self.fail("not_ascii")
            try:
                parsed = parse_datetime(value)
            except ValueError:
                parsed = None  # not a time at all: DRF words that error
            if parsed is not None and not timezone.is_aware(parsed):
                self.fail("offset_required")
        try:
            moment = super().to_internal_value(value)
        except serializers.ValidationError as invalid:
            if invalid.get_codes() == ["overflow"]:  # beyond year 9999 or before year 1 in UTC
                self.fail("time_out_of_range")
            raise
        if not calendar.within(moment):
            self.fail("time_out_of_range")
        return moment


class IsoDateField(serializers.DateField):
    """A date in ISO 8601 (YYYY-MM-DD) in ASCII digits: DRF's parser reads any script's digits,
    so ١٩٩٠-01-01 was taken for 1990-01-01."""

    default_error_messages = {"not_ascii": "Write the date in ASCII (digits 0-9), e.g. 1990-01-31."}

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str) and not value.isascii():
            self.fail("not_ascii")
        return super().to_internal_value(value)


class CanonicalUUIDField(serializers.UUIDField):
    """A record's id, as a client names it: only in the form the server writes ids in
    (apps.common.ids). Read in another spelling, it would come back from the server in a form
    the client does not hold, naming no record it has."""

    default_error_messages = {"invalid": f"Must be {CANONICAL_UUID}."}

    def to_internal_value(self, data: Any) -> UUID:
        if isinstance(data, UUID):  # an in-process caller's value: no spelling to keep
            return data
        parsed = canonical_uuid(data)
        if parsed is None:
            self.fail("invalid")
        return parsed
