from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.common.api.pagination import PageQuerySerializer
from apps.common.api.serializers import StrictSerializer
from apps.directory.models import OpeningHours, Service, ServiceType


class OpeningHoursSerializer(serializers.ModelSerializer[OpeningHours]):
    class Meta:
        model = OpeningHours
        fields = ["weekday", "opens_at", "closes_at"]


class ServiceSerializer(serializers.ModelSerializer[Service]):
    hours = OpeningHoursSerializer(many=True, read_only=True)
    zones: serializers.PrimaryKeyRelatedField[Any] = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    is_open_now = serializers.SerializerMethodField()

    class Meta:
        model = Service
        fields = [
            "id",
            "name",
            "service_type",
            "zones",
            "address",
            "phone_number",
            "email",
            "eligibility_notes",
            "languages",
            "is_open_all_hours",
            "hours",
            "is_open_now",
            "capacity_available",
            "capacity_total",
            "capacity_updated_at",
        ]

    def get_is_open_now(self, service: Service) -> bool:
        now = self.context["now"]
        return service.is_open_at(now, list(service.hours.all()), service.program.time_zone)


class ServiceSearchSerializer(PageQuerySerializer):
    type = serializers.ChoiceField(choices=ServiceType.choices, required=False)
    zone = serializers.UUIDField(required=False)
    open_now = serializers.BooleanField(required=False, default=False)


class CapacitySerializer(StrictSerializer):
    available = serializers.IntegerField(min_value=0, max_value=100_000)
    total = serializers.IntegerField(min_value=0, max_value=100_000, required=False, allow_null=True, default=None)
