from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.care.models import Referral, ReferralOutcomeEvent, ReferralStatus, ReferralTaskEvent, ReferralTaskStatus
from apps.care.services import TASK_REASON_MAX_LENGTH
from apps.common.api.serializers import CanonicalUUIDField, OffsetDateTimeField, StrictSerializer


class OutcomeSerializer(serializers.ModelSerializer[ReferralOutcomeEvent]):
    recorded_by = serializers.UUIDField(source="created_by_id", read_only=True)
    recorded_at = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = ReferralOutcomeEvent
        fields = ["id", "outcome", "observed_at", "details", "recorded_by", "recorded_at"]


class TaskEventSerializer(serializers.ModelSerializer[ReferralTaskEvent]):
    recorded_by = serializers.UUIDField(source="created_by_id", read_only=True)
    recorded_at = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = ReferralTaskEvent
        fields = ["id", "from_status", "to_status", "reason", "recorded_by", "recorded_at"]


class ReferralSerializer(serializers.ModelSerializer[Referral]):
    outcomes = serializers.SerializerMethodField()
    task_timeline = serializers.SerializerMethodField()

    class Meta:
        model = Referral
        fields = [
            "id",
            "program",
            "unit",
            "encounter",
            "service_type",
            "service_name",
            "service",
            "reason",
            "priority",
            "warm_handoff",
            "appointment_at",
            "consent_to_share",
            "consent_to_contact",
            "status",
            "task_status",
            "task_timeline",
            "outcomes",
            "created_at",
        ]

    def get_outcomes(self, referral: Referral) -> list[dict[str, Any]]:
        events = sorted(referral.outcomes.all(), key=lambda e: (e.observed_at, e.created_at))
        return list(OutcomeSerializer(events, many=True).data)

    def get_task_timeline(self, referral: Referral) -> list[dict[str, Any]]:
        events = sorted(referral.task_events.all(), key=lambda e: e.created_at)
        return list(TaskEventSerializer(events, many=True).data)


class TaskStatusInputSerializer(StrictSerializer):
    status = serializers.ChoiceField(choices=ReferralTaskStatus.choices)
    reason = serializers.CharField(max_length=TASK_REASON_MAX_LENGTH, required=False, allow_blank=True, default="")


class OutcomeInputSerializer(StrictSerializer):
    # The outcome's id (as synced, care.referral_outcome): sent again with a retry, it is
    # recorded once.
    id = CanonicalUUIDField(required=False)
    outcome = serializers.ChoiceField(choices=[s for s in ReferralStatus.values if s != ReferralStatus.OPEN])
    observed_at = OffsetDateTimeField()
    details = serializers.CharField(max_length=20_000, required=False, allow_blank=True, default="")
