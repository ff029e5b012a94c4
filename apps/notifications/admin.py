"""Read-only views for supervisors: what was sent, how, and what became of it."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from apps.notifications import selectors
from apps.notifications.models import Notification, NotificationAttempt, NotificationPreference, PushRegistration


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

    @admin.display(description="Delivery")
    def delivery(self, notification: Notification) -> str:
        return selectors.delivery_summary(notification=notification).describe()


@admin.register(PushRegistration)
class PushRegistrationAdmin(ReadOnlyAdmin):
    list_display = ["device", "provider", "updated_at", "disabled_at", "disabled_reason"]
    list_filter = ["provider"]
    exclude = ["token", "p256dh", "auth_secret"]


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    list_display = ["user", "phone_number", "email", "sms_allowed", "email_allowed", "push_allowed"]
