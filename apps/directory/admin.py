from __future__ import annotations

from django.contrib import admin

from apps.directory.models import OpeningHours, Service


class OpeningHoursInline(admin.TabularInline):
    model = OpeningHours
    extra = 0


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = ["name", "service_type", "program", "capacity_available", "capacity_updated_at"]
    list_filter = ["service_type", "program"]
    search_fields = ["name"]
    inlines = [OpeningHoursInline]
