from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.accounts import services
from apps.accounts.models import Device, Membership, Program, User


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["program"]


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    inlines = [MembershipInline]
    list_display = ["username", "first_name", "last_name", "is_active", "is_staff"]
    list_filter = ["is_active", "is_staff", "memberships__role", "memberships__program"]
    fieldsets = (*BaseUserAdmin.fieldsets, ("Contact", {"fields": ["phone_number"]}))  # type: ignore[misc]

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and not obj.is_active:
            services.user_deactivated(user=obj)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        super().save_formset(request, form, formset, change)
        if formset.model is Membership and (formset.new_objects or formset.deleted_objects or formset.changed_objects):
            # A program role changed: what the user's devices may see changes with it.
            services.access_changed(user_id=form.instance.pk)


@admin.register(Program)
class ProgramAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "time_zone"]
    search_fields = ["name", "slug"]


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "platform", "last_seen_at", "revoked_at"]
    list_filter = ["platform", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "user__username"]
    list_select_related = ["user"]
    readonly_fields = [
        "user",
        "name",
        "platform",
        "created_at",
        "last_seen_at",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
    ]
    actions = ["revoke_devices"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # devices register themselves when their user signs in

    @admin.action(description="Revoke selected devices (lost or stolen)", permissions=["change"])
    def revoke_devices(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        assert isinstance(request.user, User)
        for device in queryset.order_by("pk"):
            services.device_revoke(device=device, revoked_by=request.user, reason="revoked in the admin")
        self.message_user(
            request, f"Revoked {queryset.count()} device(s); their sessions are closed.", messages.SUCCESS
        )
