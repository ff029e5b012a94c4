from __future__ import annotations

from django.contrib import admin

from apps.followups.models import CaseManagerAssignment, ScheduleStep


@admin.register(ScheduleStep)
class ScheduleStepAdmin(admin.ModelAdmin):
    """A program's follow-up schedule: add rows to replace the default for a trigger."""

    list_display = ["program", "trigger", "key", "label", "offset_minutes", "overdue_margin_minutes"]
    list_filter = ["program", "trigger"]


@admin.register(CaseManagerAssignment)
class CaseManagerAssignmentAdmin(admin.ModelAdmin):
    list_display = ["program", "zone", "case_manager"]
    list_filter = ["program"]
