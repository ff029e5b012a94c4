from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.accounts.services import access_changed
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

    def get_readonly_fields(self, request: HttpRequest, obj: Unit | None = None) -> Any:
        # Its status is the dispatch board's, derived from its calls under the board's lock and
        # published with each change: a page opened before an offer would save the status it
        # showed over the board's, unpublished, and a unit made with a status would hold one
        # no board showed. A new unit starts out of service; its crew or a dispatcher puts it in
        # service through dispatch. A unit stays in its program (the database refuses a move:
        # teams migration 0002), shown read-only so the form does not offer what would fail.
        board = ["status", "status_changed_at"]
        return ["program", *board] if obj is not None else board

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        # A place on the crew given to someone else: the one who had it left the unit.
        former = (
            {place.initial["user"] for place in formset.initial_forms if "user" in place.changed_data}
            if formset.model is UnitMember
            else set()
        )
        super().save_formset(request, form, formset, change)
        if formset.model is UnitMember:
            # The crew changed: what its members' devices may see changes with it.
            touched = {member.user_id for member in formset.new_objects}
            touched |= {member.user_id for member in formset.deleted_objects}
            touched |= {member.user_id for member, _fields in formset.changed_objects}
            touched |= former
            for user_id in sorted(touched):
                access_changed(user_id=user_id)
