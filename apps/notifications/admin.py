"""Read-only views for supervisors: what was sent, how, and what became of it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from apps.notifications import selectors
from apps.notifications.models import (
    AttemptStatus,
    Notification,
    NotificationAttempt,
    NotificationPreference,
    PushRegistration,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    # Rows are written by the services only; the admin looks, it does not change history.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


ATTEMPT_FIELDS = ("channel", "device", "status", "tries", "sent_at", "delivered_at", "acknowledged_at", "error_reason")


class AttemptInline(admin.TabularInline):
    model = NotificationAttempt
    extra = 0
    can_delete = False
    fields = ATTEMPT_FIELDS
    readonly_fields = ATTEMPT_FIELDS

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "urgency", "program", "delivery"]
    list_filter = ["urgency", "kind", "program"]
    inlines = [AttemptInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        # The list's delivery column from one query, not three per row.
        reached = selectors.STATUS_ORDER[selectors.STATUS_ORDER.index(AttemptStatus.DELIVERED) :]
        return (
            super()
            .get_queryset(request)
            .annotate(
                devices=Count("attempts__device", distinct=True),
                devices_delivered=Count("attempts__device", distinct=True, filter=Q(attempts__status__in=reached)),
                acknowledged=Count("recipients", distinct=True, filter=Q(recipients__acknowledged_at__isnull=False)),
            )
        )

    @admin.display(description="Delivery")
    def delivery(self, notification: Notification) -> str:
        counted: Any = notification
        acknowledged = counted.acknowledged
        return (
            f"delivered to {counted.devices_delivered} of {counted.devices} devices, "
            f"acknowledged by {acknowledged if acknowledged else 'nobody'}"
        )


@admin.register(PushRegistration)
class PushRegistrationAdmin(ReadOnlyAdmin):
    list_display = ["device", "provider", "updated_at", "disabled_at", "disabled_reason"]
    list_filter = ["provider"]
    exclude = ["token", "p256dh", "auth_secret"]


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    list_display = ["user", "phone_number", "email", "sms_allowed", "email_allowed", "push_allowed"]
