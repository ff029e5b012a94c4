from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from rest_framework import serializers

from apps.common.api.serializers import StrictSerializer
from apps.notifications.models import AttemptStatus, Notification, PushProvider, PushRegistration


def _b64url_bytes(value: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as error:
        raise serializers.ValidationError("Not base64url.", code="invalid") from error


class SubscriptionKeysSerializer(StrictSerializer):
    p256dh = serializers.CharField(max_length=100)
    auth = serializers.CharField(max_length=50)

    def validate_p256dh(self, value: str) -> str:
        key = _b64url_bytes(value)
        if len(key) != 65 or key[0] != 0x04:
            raise serializers.ValidationError("Expected an uncompressed P-256 public key.", code="invalid")
        return value

    def validate_auth(self, value: str) -> str:
        if len(_b64url_bytes(value)) != 16:
            raise serializers.ValidationError("Expected a 16-byte authentication secret.", code="invalid")
        return value


class WebPushSubscriptionSerializer(StrictSerializer):
    """The browser's PushSubscription.toJSON(), less expirationTime."""

    endpoint = serializers.URLField(max_length=1000)
    keys = SubscriptionKeysSerializer()
    expirationTime = serializers.IntegerField(required=False, allow_null=True)

    def validate_endpoint(self, value: str) -> str:
        parts = urlsplit(value)
        host = parts.hostname or ""
        allowed_scheme = parts.scheme == "https" or (
            parts.scheme == "http" and settings.NOTIFICATIONS_WEBPUSH_ALLOW_HTTP
        )
        allowed_host = any(
            host == entry or (entry.startswith(".") and host.endswith(entry))
            for entry in settings.NOTIFICATIONS_WEBPUSH_ALLOWED_HOSTS
        )
        # The server will POST to this URL: only known push services, never an internal address.
        if not (allowed_scheme and allowed_host):
            raise serializers.ValidationError("Not a known Web Push service.", code="unknown_push_service")
        return value


class PushRegistrationInputSerializer(StrictSerializer):
    provider = serializers.ChoiceField(choices=PushProvider.choices)
    token = serializers.CharField(max_length=4096, required=False)
    subscription = WebPushSubscriptionSerializer(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        provider = attrs["provider"]
        if provider == PushProvider.WEBPUSH:
            if "subscription" not in attrs:
                raise serializers.ValidationError({"subscription": ["Required for webpush."]}, code="required")
            if "token" in attrs:
                raise serializers.ValidationError({"token": ["Send the subscription instead."]}, code="invalid")
            return attrs
        if "subscription" in attrs:
            raise serializers.ValidationError({"subscription": ["Only for webpush."]}, code="invalid")
        token = attrs.get("token", "")
        if not token:
            raise serializers.ValidationError({"token": ["Required."]}, code="required")
        if any(character.isspace() for character in token):
            raise serializers.ValidationError({"token": ["A token has no whitespace."]}, code="invalid")
        if provider == PushProvider.APNS and not (
            64 <= len(token) <= 200 and all(c in "0123456789abcdefABCDEF" for c in token)
        ):
            raise serializers.ValidationError({"token": ["An APNs device token is hexadecimal."]}, code="invalid")
        return attrs


class PushRegistrationSerializer(serializers.ModelSerializer[PushRegistration]):
    class Meta:
        model = PushRegistration
        # The token itself is not echoed back: the device has it, nobody else needs it.
        fields = ["id", "device", "provider", "created_at", "updated_at", "disabled_at", "disabled_reason"]


class ReceiptInputSerializer(StrictSerializer):
    status = serializers.ChoiceField(
        choices=[
            (AttemptStatus.DELIVERED, "delivered"),
            (AttemptStatus.OPENED, "opened"),
            (AttemptStatus.ACKNOWLEDGED, "acknowledged"),
        ]
    )


class ReceiptSerializer(serializers.Serializer[Any]):
    notification = serializers.UUIDField()
    confirmed_at = serializers.DateTimeField(allow_null=True)
    acknowledged_at = serializers.DateTimeField(allow_null=True)


class NotificationSerializer(serializers.ModelSerializer[Notification]):
    class Meta:
        model = Notification
        fields = ["id", "kind", "urgency", "text", "link", "created_at"]


class AttemptLineSerializer(serializers.Serializer[Any]):
    channel = serializers.CharField()
    status = serializers.CharField()
    device_id = serializers.UUIDField(allow_null=True)
    error_reason = serializers.CharField()


class DeliverySummarySerializer(serializers.Serializer[Any]):
    notification_id = serializers.UUIDField()
    recipients = serializers.IntegerField()
    devices = serializers.IntegerField()
    devices_delivered = serializers.IntegerField()
    devices_opened = serializers.IntegerField()
    acknowledged_by = serializers.ListField(child=serializers.UUIDField())
    fallbacks = AttemptLineSerializer(many=True)
    failures = AttemptLineSerializer(many=True)
    description = serializers.CharField(source="describe")


class PushConfigSerializer(serializers.Serializer[Any]):
    vapid_public_key = serializers.CharField(allow_blank=True)
