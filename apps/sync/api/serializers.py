from __future__ import annotations

from rest_framework import serializers

from apps.common.api.serializers import StrictSerializer


class FeedQuerySerializer(StrictSerializer):
    cursor = serializers.CharField(required=False, allow_blank=True, max_length=200)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=200)


class FeedEntrySerializer(serializers.Serializer[dict[str, object]]):
    cursor = serializers.CharField(help_text="Position of this entry; resume after it.")
    type = serializers.CharField(help_text="Record type, e.g. `dispatch.assignment`.")
    id = serializers.UUIDField()
    op = serializers.ChoiceField(choices=["upsert", "remove"])
    # Named as on the wire; only describes the schema, never used to read `.data` of.
    data = serializers.DictField()  # type: ignore[assignment]
    changed_at = serializers.DateTimeField()


class FeedPageSerializer(serializers.Serializer[dict[str, object]]):
    entries = FeedEntrySerializer(many=True)
    cursor = serializers.CharField(help_text="Opaque; send it back to continue.")
    has_more = serializers.BooleanField()
