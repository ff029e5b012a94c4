from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.common.api.serializers import BoundedListField, QuerySerializer, StrictSerializer
from apps.sync import conf, review
from apps.sync.models import Conflict, Mutation


class FeedQuerySerializer(QuerySerializer):
    cursor = serializers.CharField(required=False, allow_blank=True, max_length=200)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=200)


class FeedEntrySerializer(serializers.Serializer[dict[str, object]]):
    cursor = serializers.CharField(help_text="Position of this entry; resume after it.")
    type = serializers.CharField(help_text="Record type, e.g. `care.encounter`.")
    id = serializers.UUIDField()
    op = serializers.ChoiceField(choices=["upsert", "remove"])
    # Named as on the wire; only describes the schema, never used to read `.data` of.
    data = serializers.DictField()  # type: ignore[assignment]
    changed_at = serializers.DateTimeField()
    version = serializers.IntegerField(allow_null=True, help_text="The record's server version after this change.")
    reason = serializers.ChoiceField(
        choices=["deleted", "out_of_scope"], required=False, help_text="For removals: why the record goes."
    )


class FeedPageSerializer(serializers.Serializer[dict[str, object]]):
    entries = FeedEntrySerializer(many=True)
    cursor = serializers.CharField(help_text="Opaque; send it back to continue.")
    has_more = serializers.BooleanField()


class ListQuerySerializer(QuerySerializer):
    cursor = serializers.CharField(required=False, allow_blank=True, max_length=200)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=200)


class WatermelonPullQuerySerializer(QuerySerializer):
    # Its value is checked by the pull (a number this server issued, or empty).
    last_pulled_at = serializers.CharField(required=False, allow_blank=True)
    # What WatermelonDB's own pullChanges example sends. The server has one schema: the app's
    # version is not used; its migration brings the records of the tables it added.
    schema_version = serializers.CharField(required=False, allow_blank=True)
    migration = serializers.CharField(required=False, allow_blank=True)


class SnapshotQuerySerializer(QuerySerializer):
    cursor = serializers.CharField(required=False, allow_blank=True, max_length=400)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=conf.SNAPSHOT_PAGE_MAX, default=1000)


class SnapshotRecordSerializer(serializers.Serializer[dict[str, object]]):
    type = serializers.CharField()
    id = serializers.UUIDField()
    version = serializers.IntegerField()
    data = serializers.DictField()  # type: ignore[assignment]


class SnapshotPageSerializer(serializers.Serializer[dict[str, object]]):
    records = SnapshotRecordSerializer(many=True)
    cursor = serializers.CharField(allow_null=True, help_text="Send back for the next page; null on the last.")
    has_more = serializers.BooleanField()
    feed_cursor = serializers.CharField(allow_null=True, help_text="On the last page: pull the feed from here.")


class MutationInputSerializer(serializers.Serializer[dict[str, object]]):
    """Describes a mutation for the schema; the push view checks each one itself so one bad
    mutation never fails the others."""

    mutation_id = serializers.IntegerField(min_value=1, help_text="Per device, increasing.")
    type = serializers.CharField()
    id = serializers.UUIDField(help_text="The record's client-made id.")
    op = serializers.ChoiceField(choices=["create", "update", "delete"])
    base_version = serializers.IntegerField(allow_null=True, required=False)
    fields = serializers.DictField(required=False)  # type: ignore[assignment]
    observed_at = serializers.DateTimeField(required=False)


class PushInputSerializer(serializers.Serializer[dict[str, object]]):
    mutations = MutationInputSerializer(many=True)


class PushResultSerializer(serializers.Serializer[dict[str, object]]):
    mutation_id = serializers.IntegerField(allow_null=True)
    type = serializers.CharField(allow_null=True)
    id = serializers.UUIDField(allow_null=True)
    status = serializers.ChoiceField(choices=["applied", "duplicate", "conflict", "quarantined", "rejected"])
    original_status = serializers.CharField(required=False)
    version = serializers.IntegerField(allow_null=True)
    data = serializers.DictField(required=False)  # type: ignore[assignment]
    error = serializers.DictField(required=False)
    conflicts = serializers.ListField(child=serializers.DictField(), required=False)
    repeated = serializers.BooleanField(required=False)
    warnings = serializers.ListField(child=serializers.DictField(), required=False)


class PushOutputSerializer(serializers.Serializer[dict[str, object]]):
    results = PushResultSerializer(many=True, help_text="One per mutation sent, in their order.")
    released = PushResultSerializer(
        many=True,
        help_text="The new results of the device's earlier creates kept as parent_quarantined "
        "that a create of this push released (applied again, or quarantined again saying why); "
        "empty on a retry of this push, whose released records come through the feed.",
    )


class PushPositionSerializer(serializers.Serializer[dict[str, object]]):
    last_mutation_id = serializers.IntegerField(
        min_value=0, help_text="The highest mutation_id stored for this device; number new mutations above it."
    )


class ReviewedMutationsSerializer(StrictSerializer):
    ids = BoundedListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=review.MAX_REVIEWED)

    def validate_ids(self, ids: list[int]) -> list[int]:
        if len(set(ids)) != len(ids):
            raise serializers.ValidationError("Each id once.", code="duplicate")
        return ids


class DismissedMutationsSerializer(ReviewedMutationsSerializer):
    reason = serializers.CharField(max_length=review.DISMISS_REASON_MAX_LENGTH)


class QuarantinedMutationSerializer(serializers.ModelSerializer[Mutation]):
    error = serializers.SerializerMethodField()
    dismissed = serializers.SerializerMethodField()
    type = serializers.CharField(source="record_type")
    op = serializers.CharField(source="operation")

    class Meta:
        model = Mutation
        fields = [
            "id",
            "device",
            "user",
            "program",
            "mutation_id",
            "type",
            "record_id",
            "op",
            "error",
            "payload",
            "observed_at",
            "received_at",
            "client_version",
            "dismissed",
        ]

    def get_dismissed(self, mutation: Mutation) -> dict[str, Any] | None:
        """Who set it aside, when and why (``code``: ``reviewed``, by a supervisor after review;
        ``superseded``, by the server, its device's later create of the record having applied,
        ``by`` that create's writer); null while it waits for review."""
        if mutation.dismissed_at is None:
            return None
        return {
            "at": mutation.dismissed_at,
            "by": mutation.dismissed_by_id,
            "reason": mutation.dismiss_reason,
            "code": mutation.dismiss_code,
        }

    def get_error(self, mutation: Mutation) -> dict[str, Any] | None:
        error = mutation.result.get("error")
        return error if isinstance(error, dict) else None


class ConflictSerializer(serializers.ModelSerializer[Conflict]):
    field = serializers.SerializerMethodField(
        help_text="The field both sides wrote; null when the whole record met (a delete against an edit)."
    )

    class Meta:
        model = Conflict
        fields = [
            "id",
            "record_type",
            "record_id",
            "kind",
            "field",
            "base_value",
            "server_value",
            "device_value",
            "server_version",
            "is_clinical_text",
            "device",
            "user",
            "created_at",
        ]

    def get_field(self, conflict: Conflict) -> str | None:
        return conflict.field or None  # as the push result names it


class _CursorPageSerializer(serializers.Serializer[dict[str, object]]):
    has_more = serializers.BooleanField()
    cursor = serializers.CharField(allow_null=True, help_text="Send it back to read the next page; null on the last.")


class QuarantinePageSerializer(_CursorPageSerializer):
    results = QuarantinedMutationSerializer(many=True)


class ConflictPageSerializer(_CursorPageSerializer):
    results = ConflictSerializer(many=True)
