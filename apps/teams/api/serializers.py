from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.teams.models import Unit, Zone


class ZoneSerializer(serializers.ModelSerializer[Zone]):
    program: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Zone
        fields = ["id", "program", "code", "name", "borough", "latitude", "longitude"]


class UnitSerializer(serializers.ModelSerializer[Unit]):
    program: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    seconds_in_status = serializers.SerializerMethodField()

    class Meta:
        model = Unit
        fields = [
            "id",
            "program",
            "call_sign",
            "response_model",
            "home_zone",
            "status",
            "status_changed_at",
            "seconds_in_status",
            "latitude",
            "longitude",
        ]

    def get_seconds_in_status(self, unit: Unit) -> int:
        return int(unit.time_in_status())
