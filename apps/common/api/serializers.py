from __future__ import annotations

from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses fields it does not know, so a client's typo is an error and not silently lost."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: [serializers.ErrorDetail("Unknown field.", code="unknown_field")] for name in unknown}
                )
        return super().to_internal_value(data)


class OffsetDateTimeField(serializers.DateTimeField):
    """A moment as a device saw it, with its UTC offset. A time without one (or a bare date)
    is refused: read in the server's zone, a tablet's local time in New York would be
    stored five hours off, with no error to tell anyone."""

    default_error_messages = {
        "offset_required": "Give the time with its UTC offset, e.g. 2026-11-20T14:05:00-05:00 or …Z.",
    }

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value)
            except ValueError:
                parsed = None  # not a time at all: DRF words that error
            if parsed is not None and not timezone.is_aware(parsed):
                self.fail("offset_required")
        return super().to_internal_value(value)
