from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.common.api.pagination import PageQuerySerializer
from apps.common.api.serializers import CanonicalUUIDField, OffsetDateTimeField, StrictSerializer
from apps.followups.models import ContactAttempt, ContactMethod, ContactResult, FollowUpStep, StepEvent, StepStatus
from apps.followups.services import REASON_MAX_LENGTH


class AttemptSerializer(serializers.ModelSerializer[ContactAttempt]):
    recorded_by = serializers.UUIDField(source="created_by_id", read_only=True)

    class Meta:
        model = ContactAttempt
        fields = ["id", "method", "result", "notes", "attempted_at", "recorded_by", "created_at"]


class StepEventSerializer(serializers.ModelSerializer[StepEvent]):
    class Meta:
        model = StepEvent
        fields = ["action", "actor", "occurred_at", "due_at", "reason"]


class StepSerializer(serializers.ModelSerializer[FollowUpStep]):
    encounter = serializers.UUIDField(source="plan.encounter_id", read_only=True)
    is_overdue = serializers.SerializerMethodField()

    class Meta:
        model = FollowUpStep
        fields = [
            "id",
            "program",
            "unit",
            "plan",
            "encounter",
            "key",
            "label",
            "due_at",
            "is_overdue",
            "owner",
            "status",
            "closed_at",
            "closed_by",
            "closing_outcome",
            "missed_reason",
        ]

    def get_is_overdue(self, step: FollowUpStep) -> bool:
        return step.is_open and step.due_at < self.context["now"]


class StepDetailSerializer(StepSerializer):
    attempts = serializers.SerializerMethodField()
    history = serializers.SerializerMethodField()

    class Meta(StepSerializer.Meta):
        fields = [*StepSerializer.Meta.fields, "attempts", "history"]

    def get_attempts(self, step: FollowUpStep) -> list[dict[str, Any]]:
        attempts = step.attempts.filter(is_deleted=False).order_by("attempted_at", "pk")
        return list(AttemptSerializer(attempts, many=True).data)

    def get_history(self, step: FollowUpStep) -> list[dict[str, Any]]:
        return list(StepEventSerializer(step.events.order_by("pk"), many=True).data)


class StepQuerySerializer(PageQuerySerializer):
    status = serializers.ChoiceField(choices=StepStatus.choices, required=False)
    mine = serializers.BooleanField(required=False, default=False)
    due_before = OffsetDateTimeField(required=False)


class AttemptInputSerializer(StrictSerializer):
    # The id of the attempt synced to devices (followups.contact_attempt): spelt as sync takes it.
    id = CanonicalUUIDField(required=False)
    method = serializers.ChoiceField(choices=ContactMethod.choices)
    result = serializers.ChoiceField(choices=ContactResult.choices)
    notes = serializers.CharField(max_length=20_000, required=False, allow_blank=True, default="")
    attempted_at = OffsetDateTimeField()


class CompleteInputSerializer(StrictSerializer):
    note = serializers.CharField(max_length=REASON_MAX_LENGTH, required=False, allow_blank=True, default="")


class RescheduleInputSerializer(StrictSerializer):
    due_at = OffsetDateTimeField()
    reason = serializers.CharField(max_length=REASON_MAX_LENGTH)


class MissedInputSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=REASON_MAX_LENGTH)


class AssignInputSerializer(StrictSerializer):
    owner_id = serializers.UUIDField()
