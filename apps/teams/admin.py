from __future__ import annotations

from django.contrib import admin

from apps.teams.models import Unit, UnitMember, Zone


@admin.register(Zone)
class ZoneAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "borough", "program"]
    list_filter = ["program", "borough"]
    search_fields = ["code", "name"]
    list_select_related = ["program"]


class UnitMemberInline(admin.TabularInline):
    model = UnitMember
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Unit)
class UnitAdmin(admin.ModelAdmin):
    list_display = ["call_sign", "response_model", "status", "status_changed_at", "home_zone", "program"]
    list_filter = ["program", "response_model", "status"]
    search_fields = ["call_sign"]
    list_select_related = ["program", "home_zone"]
    inlines = [UnitMemberInline]
