"""The case manager's workspace in the admin.

Imported last (``apps.workspace`` is last in INSTALLED_APPS), so every other app's admin is
registered already: this module registers the workspace's own admins of the domain records,
then wraps every registration on the site in ``ProgramScopedAdmin`` so that no admin page
shows a record of a program the user does not work for.
"""

from __future__ import annotations

import contextlib
import functools
import json
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.admin.utils import quote
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apps.accounts.models import Device, Program, Role, User
from apps.audit.models import AccessChannel
from apps.audit.services import Accessor
from apps.care import services as care_services
from apps.care.models import ClinicalNote, Encounter, Person, Referral, ReferralOutcomeEvent, ReferralTaskEvent
from apps.common.api.errors import DomainError
from apps.dispatch.models import Assignment, Incident, TimelineEvent
from apps.followups import services as followup_services
from apps.followups.models import ContactAttempt, FollowUpStep, StepEvent
from apps.notifications.models import NotificationPreference, PushRegistration
from apps.sync import push, review
from apps.sync import registry as sync_registry
from apps.sync import selectors as sync_selectors
from apps.sync import services as sync_services
from apps.sync.models import Conflict, ConflictKind, Mutation, MutationStatus
from apps.sync.registry import Refused
from apps.teams.models import Unit
from apps.workspace import work
from apps.workspace.access import request_program_ids
from apps.workspace.audit import log_admin_action, record_admin_reads
from apps.workspace.filters import QueueFilter, SetAsideFilter
from apps.workspace.scoping import AuditedAutocompleteJsonView, ProgramScopedAdmin
from apps.workspace.work import LocalDateTimeInput

admin.site.index_template = "workspace/index.html"


def _autocomplete_view(request: HttpRequest) -> Any:
    return AuditedAutocompleteJsonView.as_view(admin_site=admin.site)(request)


admin.site.autocomplete_view = _autocomplete_view  # type: ignore[method-assign]


def _all_fields(model: type[Model]) -> list[str]:
    return [field.name for field in model._meta.concrete_fields]


class ReadOnlyWorkspaceAdmin(ProgramScopedAdmin):
    """Records written by the field and the domain services: the admin shows, never edits."""

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        return _all_fields(self.model)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        # Nothing on the page is editable: saving would only write the whole row back as it
        # was read, undoing what a domain service committed meanwhile (a conflict resolved,
        # a quarantined change applied, a step completed).
        return


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        return self.fields or _all_fields(self.model)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# --- follow-up steps -----------------------------------------------------------------------


class StepActionForm(ActionForm):
    # Shown narrowed to the user's programs' case managers (FollowUpStepAdmin.changelist_view);
    # the reassign action checks the choice against those again, and the service checks the
    # step's program.
    owner = forms.ModelChoiceField(
        queryset=User.objects.filter(memberships__role=Role.CASE_MANAGER).distinct().order_by("username"),
        required=False,
        label="Reassign to",
    )
    due_at = forms.DateTimeField(
        required=False,
        label="Reschedule to",
        widget=LocalDateTimeInput(),
        help_text="In each step's program's time zone.",
    )
    reason = forms.CharField(required=False, max_length=300, label="Reason")


class StepEventInline(ReadOnlyInline):
    model = StepEvent
    fields = ["occurred_at", "action", "actor", "due_at", "reason"]
    ordering = ["occurred_at", "id"]


class AttemptInline(ReadOnlyInline):
    model = ContactAttempt
    fk_name = "step"
    fields = ["attempted_at", "method", "result", "notes", "created_by"]
    ordering = ["attempted_at"]


@admin.register(FollowUpStep)
class FollowUpStepAdmin(ReadOnlyWorkspaceAdmin):
    workspace_may_change = True  # its actions call the follow-up services
    list_display = ["due_at", "person_name", "timeline_link", "label", "status", "owner", "unit", "program"]
    list_filter = [QueueFilter, "program", "unit__home_zone", "unit__response_model", "status", "owner", "due_at"]
    search_fields = [
        "plan__person__given_name",
        "plan__person__family_name",
        "=plan__person__phone_number",
        "=plan__encounter__id",
    ]
    list_select_related = ["program", "owner", "unit", "plan__person"]
    ordering = ["due_at"]
    inlines = [AttemptInline, StepEventInline]
    action_form = StepActionForm
    actions = ["mark_completed", "reassign", "reschedule"]
    change_form_template = "workspace/followupstep_change_form.html"

    def get_urls(self) -> list[URLPattern]:
        timeline = self.admin_site.admin_view(functools.partial(work.timeline_view, self))
        return [
            path("<path:object_id>/timeline/", timeline, name="followups_followupstep_timeline"),
            *super().get_urls(),
        ]

    @admin.display(description="Person")
    def person_name(self, step: FollowUpStep) -> str:
        person = step.plan.person
        if person is None:
            return "—"
        return f"{person.given_name} {person.family_name}".strip() or "(unnamed)"

    @admin.display(description="Work it")
    def timeline_link(self, step: FollowUpStep) -> str:
        url = reverse("admin:followups_followupstep_timeline", args=[step.pk])
        return format_html('<a class="timeline-link" href="{}">Timeline</a>', url)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        response = super().changelist_view(request, extra_context)
        action_form = getattr(response, "context_data", {}).get("action_form")
        if action_form is not None:
            action_form.fields["owner"].queryset = self._owner_choices(request)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            # Each row names its person (the Person column): those people are read too.
            people = {step.plan.person_id: step.plan.person for step in changelist.result_list if step.plan.person_id}
            record_admin_reads(request, Person, list(people.values()))
        return response

    def _owner_choices(self, request: HttpRequest) -> QuerySet[User]:
        if getattr(request.user, "is_superuser", False):
            return User.objects.filter(memberships__role=Role.CASE_MANAGER).distinct().order_by("username")
        return work.case_managers_of(request_program_ids(request))

    def _each(
        self, request: HttpRequest, queryset: QuerySet[FollowUpStep], act: Any, done: str, description: str
    ) -> None:
        assert isinstance(request.user, User)
        worked: list[Model] = []
        refused: list[str] = []
        accessor = Accessor.from_request(request, AccessChannel.ADMIN)
        for step in queryset.select_related("program").order_by("pk"):
            try:
                act(step, request.user, accessor)
            except DomainError as error:
                refused.append(f"{step}: {error.detail}")
            else:
                worked.append(step)
        # Each step's change is in the audit trail already: the follow-up service audits it in
        # the change's transaction. The admin's history says what was done, on each step.
        log_admin_action(request, description=f"Bulk action: {description}", logged=worked)
        if worked:
            self.message_user(request, f"{done} {len(worked)} step(s).", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)

    @admin.action(description="Mark selected steps completed", permissions=["change"])
    def mark_completed(self, request: HttpRequest, queryset: QuerySet[FollowUpStep]) -> None:
        self._each(
            request,
            queryset,
            lambda step, actor, accessor: followup_services.step_complete(
                step=step, actor=actor, note="completed in the admin", accessor=accessor
            ),
            "Completed",
            "completed",
        )

    @admin.action(description="Reassign selected steps (choose the case manager)", permissions=["change"])
    def reassign(self, request: HttpRequest, queryset: QuerySet[FollowUpStep]) -> None:
        owner_id = request.POST.get("owner")
        owner = None
        if owner_id:
            with contextlib.suppress(ValueError, ValidationError):
                owner = self._owner_choices(request).filter(pk=owner_id).first()
        if owner is None:
            self.message_user(request, "Choose a case manager of your programs to reassign to.", messages.ERROR)
            return
        self._each(
            request,
            queryset,
            lambda step, actor, accessor: followup_services.step_assign(
                step=step, actor=actor, owner=owner, accessor=accessor
            ),
            f"Reassigned to {owner.username}:",
            f"reassigned to user {owner.pk}",
        )

    @admin.action(description="Reschedule selected steps (choose the time and say why)", permissions=["change"])
    def reschedule(self, request: HttpRequest, queryset: QuerySet[FollowUpStep]) -> None:
        # The action form's own fields, on their own (the admin checked the action already).
        form = work.RescheduleForm(request.POST)
        if not form.is_valid() or not form.cleaned_data["reason"].strip():
            self.message_user(request, "Choose the new due time and say why the steps are rescheduled.", messages.ERROR)
            return
        # The time was typed as a wall-clock time: each step's program's.
        wall_clock = timezone.make_naive(form.cleaned_data["due_at"])
        reason = form.cleaned_data["reason"]

        def act(step: FollowUpStep, actor: User, accessor: Accessor) -> None:
            due_at = wall_clock.replace(tzinfo=ZoneInfo(step.program.time_zone))
            followup_services.step_reschedule(step=step, actor=actor, due_at=due_at, reason=reason, accessor=accessor)

        self._each(request, queryset, act, "Rescheduled", f"rescheduled to {wall_clock:%Y-%m-%d %H:%M} local")


# --- care ----------------------------------------------------------------------------------


class OutcomeInline(ReadOnlyInline):
    model = ReferralOutcomeEvent
    fk_name = "referral"
    fields = ["observed_at", "outcome", "details", "created_by"]
    ordering = ["observed_at"]
    verbose_name_plural = "Outcome timeline"


class TaskEventInline(ReadOnlyInline):
    model = ReferralTaskEvent
    fk_name = "referral"
    fields = ["created_at", "from_status", "to_status", "reason", "created_by"]
    ordering = ["created_at"]
    verbose_name_plural = "Status timeline (with the service)"


@admin.register(Referral)
class ReferralAdmin(ReadOnlyWorkspaceAdmin):
    list_display = ["created_at", "service_type", "service_name", "status", "task_status", "priority", "program"]
    list_filter = [QueueFilter, "program", "unit__home_zone", "status", "task_status", "priority", "service_type"]
    search_fields = [
        "encounter__person__given_name",
        "encounter__person__family_name",
        "=encounter__person__phone_number",
    ]
    list_select_related = ["program"]
    ordering = ["-created_at"]
    inlines = [OutcomeInline, TaskEventInline]


class NoteInline(ReadOnlyInline):
    model = ClinicalNote
    fk_name = "encounter"
    fields = ["created_at", "created_by", "body", "signed_at", "amends"]
    ordering = ["created_at"]
    verbose_name_plural = "Notes (read-only; a change is an addendum)"


class EncounterActionForm(ActionForm):
    # Shown narrowed to the user's programs' units (EncounterAdmin.changelist_view); the move
    # action checks the choice against those again, and care checks who may move it.
    unit = forms.ModelChoiceField(queryset=Unit.objects.order_by("call_sign"), required=False, label="Move to unit")


@admin.register(Encounter)
class EncounterAdmin(ReadOnlyWorkspaceAdmin):
    list_display = ["started_at", "ended_at", "disposition", "unit", "program"]
    list_filter = ["program", "unit__home_zone", "unit__response_model", "disposition"]
    search_fields = ["person__given_name", "person__family_name", "=person__phone_number"]
    list_select_related = ["program", "unit"]
    ordering = ["-started_at"]
    inlines = [NoteInline]
    workspace_may_change = True  # its action calls care's encounter_reassign
    action_form = EncounterActionForm
    actions = ["move_to_unit"]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        response = super().changelist_view(request, extra_context)
        action_form = getattr(response, "context_data", {}).get("action_form")
        if action_form is not None:
            action_form.fields["unit"].queryset = self._unit_choices(request)
        return response

    def _unit_choices(self, request: HttpRequest) -> QuerySet[Unit]:
        units = Unit.objects.order_by("call_sign")
        if getattr(request.user, "is_superuser", False):
            return units
        return units.filter(program_id__in=request_program_ids(request))

    @admin.action(description="Move selected encounters to another unit (supervisors)", permissions=["change"])
    def move_to_unit(self, request: HttpRequest, queryset: QuerySet[Encounter]) -> None:
        assert isinstance(request.user, User)
        unit = None
        if unit_id := request.POST.get("unit"):
            with contextlib.suppress(ValueError, ValidationError):
                unit = self._unit_choices(request).filter(pk=unit_id).first()
        if unit is None:
            self.message_user(request, "Choose a unit of your programs to move the encounters to.", messages.ERROR)
            return
        moved: list[Model] = []
        refused: list[str] = []
        accessor = Accessor.from_request(request, AccessChannel.ADMIN)
        for encounter in queryset.order_by("pk"):
            try:
                care_services.encounter_reassign(encounter=encounter, unit=unit, actor=request.user, accessor=accessor)
            except (DomainError, Refused) as error:
                refused.append(f"{timezone.localtime(encounter.started_at):%Y-%m-%d %H:%M}: {error.detail}")
            else:
                moved.append(encounter)
        # Every record that moved (the encounter, what is under it, its follow-up's steps) is
        # in the audit trail already: the move audits its writes. The admin's history says
        # what was done, on each encounter.
        log_admin_action(request, description=f"Bulk action: moved to unit {unit.pk}", logged=moved)
        if moved:
            self.message_user(request, f"Moved {len(moved)} encounter(s) to {unit.call_sign}.", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)


# --- dispatch ------------------------------------------------------------------------------


class TimelineInline(ReadOnlyInline):
    model = TimelineEvent
    fk_name = "incident"
    fields = ["at", "kind", "assignment", "actor", "observed_at"]


@admin.register(Incident)
class IncidentAdmin(ReadOnlyWorkspaceAdmin):
    list_display = [
        "external_call_id",
        "received_at",
        "zone",
        "chosen_response",
        "status",
        "served_at",
        "unserved_reason",
        "program",
    ]
    list_filter = [QueueFilter, "program", "zone", "chosen_response", "status", "unserved_reason", "received_at"]
    search_fields = ["=external_call_id", "=id", "=callback_number"]
    list_select_related = ["program", "zone"]
    ordering = ["-received_at"]
    inlines = [TimelineInline]


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyWorkspaceAdmin):
    program_path = "incident__program"
    list_display = ["offered_at", "incident", "unit", "status", "acknowledged_at", "last_checkin_at"]
    list_filter = [QueueFilter, "incident__program", "unit__response_model", "status"]
    search_fields = ["=incident__external_call_id", "unit__call_sign"]
    list_select_related = ["incident", "unit"]
    ordering = ["-offered_at"]


# --- sync conflicts ------------------------------------------------------------------------


@admin.register(Conflict)
class ConflictAdmin(ReadOnlyWorkspaceAdmin):
    list_display = ["created_at", "record_type", "field", "kind", "user", "resolved_at", "program"]
    list_filter = [QueueFilter, "program", "kind", "record_type", "is_clinical_text"]
    search_fields = ["=record_id"]
    list_select_related = ["program", "user"]
    ordering = ["-created_at"]
    fieldsets = [
        (None, {"fields": ["program", "record_type", "record_page", "field", "kind", "is_clinical_text"]}),
        ("Side by side", {"fields": ["base_value", "server_value", "device_value", "server_version"]}),
        ("Where the device's value came from", {"fields": ["user", "device", "mutation", "created_at"]}),
        ("Resolution", {"fields": ["resolved_at", "resolved_by", "resolution"]}),
    ]
    workspace_may_change = True  # its actions call sync's conflict_resolve
    actions = ["keep_server_value", "take_device_value"]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        return [*super().get_readonly_fields(request, obj), "record_page", "edit_against_delete"]

    def get_fieldsets(self, request: HttpRequest, obj: Conflict | None = None) -> Any:
        fieldsets: list[Any] = list(super().get_fieldsets(request, obj))
        if obj is not None and getattr(obj, "edit_against", None) is not None:
            # A delete against an edit: the edit, which the values side by side do not show.
            fieldsets.insert(2, ("The edit the delete is weighed against", {"fields": ["edit_against_delete"]}))
        return fieldsets

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        # Read with the request (whose pages it may open): the page shows what it found. The
        # edit is the record's, whose read opening the conflict audits (record_admin_reads).
        conflict = super().get_object(request, object_id, from_field)
        conflict.record_url = _record_page_url(request, self.admin_site, conflict.record_type, conflict.record_id)
        conflict.edit_against = sync_selectors.edit_against_delete(conflict)
        return conflict

    @admin.display(description="Record")
    def record_page(self, conflict: Conflict) -> str:
        url = getattr(conflict, "record_url", None)
        if url is None:
            return str(conflict.record_id)
        return format_html('<a href="{}">{}</a>', url, conflict.record_id)

    @admin.display(description="Edit")
    def edit_against_delete(self, conflict: Conflict) -> str:
        edit = getattr(conflict, "edit_against", None)
        if edit is None:
            return "—"
        whose = (
            "The device's edit, as it sent it (the record was deleted before it arrived):"
            if conflict.kind == ConflictKind.EDIT_VS_DELETE
            else "Written by others after the copy the deleting device had (it had not seen it):"
        )
        if not edit:
            return format_html("{} no field changed.", whose)
        rows = format_html_join("", "<li><b>{}</b>: {}</li>", ((name, _shown(value)) for name, value in edit.items()))
        return format_html("{}<ul>{}</ul>", whose, rows)

    def _resolve(self, request: HttpRequest, queryset: QuerySet[Conflict], choice: str) -> None:
        assert isinstance(request.user, User)
        resolved: list[Conflict] = []
        accessor = Accessor.from_request(request, AccessChannel.ADMIN)
        for conflict in queryset.order_by("pk"):
            try:
                done = sync_services.conflict_resolve(
                    conflict=conflict, choice=choice, resolved_by=request.user, accessor=accessor
                )
            except DomainError as error:
                self.message_user(request, f"{conflict}: {error.detail}", messages.WARNING)
            else:
                resolved.append(done)
        # What each resolution wrote is in the audit trail already (sync audits it); the
        # admin's history says what was done, on the conflict.
        log_admin_action(request, description=f"Bulk action: resolved conflict ({choice})", logged=resolved)
        if resolved:
            self.message_user(request, f"Resolved {len(resolved)} conflict(s).", messages.SUCCESS)

    @admin.action(description="Resolve: keep the server's value", permissions=["change"])
    def keep_server_value(self, request: HttpRequest, queryset: QuerySet[Conflict]) -> None:
        self._resolve(request, queryset, sync_services.ConflictChoice.SERVER)

    @admin.action(description="Resolve: take the device's value", permissions=["change"])
    def take_device_value(self, request: HttpRequest, queryset: QuerySet[Conflict]) -> None:
        self._resolve(request, queryset, sync_services.ConflictChoice.DEVICE)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# The records shown on another record's page (as an inline): a note on its encounter's, an
# outcome on its referral's, a contact attempt on its step's.
_SHOWN_ON_PAGE_OF: dict[type[Model], str] = {
    ClinicalNote: "encounter_id",
    ReferralOutcomeEvent: "referral_id",
    ContactAttempt: "step_id",
}


def _record_page_url(request: HttpRequest, site: admin.AdminSite, record_type: str, record_id: Any) -> str | None:
    """The workspace page that shows a synced record, if it has one the user may open."""
    synced_type = sync_registry.get(record_type)
    if synced_type is None:
        return None
    model: type[Model] = synced_type.model
    if parent_field := _SHOWN_ON_PAGE_OF.get(model):
        record_id = model._default_manager.filter(pk=record_id).values_list(parent_field, flat=True).first()
        model = model._meta.get_field(parent_field.removesuffix("_id")).related_model  # type: ignore[assignment]
    model_admin = site._registry.get(model)
    if record_id is None or model_admin is None or not model_admin.has_view_permission(request):
        return None
    if not model_admin.get_queryset(request).filter(pk=record_id).exists():
        return None
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[quote(record_id)])


# --- sync quarantine -----------------------------------------------------------------------


class DismissActionForm(ActionForm):
    reason = forms.CharField(required=False, max_length=300, label="Reason (to set aside)")


@admin.register(Mutation)
class QuarantinedMutationAdmin(ReadOnlyWorkspaceAdmin):
    """Changes a device sent that the server kept but did not apply: read each as it was sent,
    and apply again what should stand (a supervisor of its program only). Those set aside
    are read through their filter."""

    list_display = ["received_at", "record_type", "operation", "error_code", "user", "device", "program"]
    list_filter = [QueueFilter, SetAsideFilter, "program", "error_code", "record_type"]
    search_fields = ["=record_id"]
    list_select_related = ["program", "user", "device"]
    ordering = ["-received_at"]
    fieldsets = [
        (None, {"fields": ["program", "record_type", "record_id", "operation", "base_version"]}),
        ("Why it was kept", {"fields": ["error_code", "result"]}),
        ("As the device sent it", {"fields": ["payload", "observed_at", "observed_at_plausible"]}),
        ("From", {"fields": ["user", "device", "mutation_id", "client_version", "received_at"]}),
        (
            "Set aside",
            {"fields": ["dismissed_at", "dismissed_by", "dismiss_code", "dismiss_reason", "superseding_create"]},
        ),
    ]
    workspace_may_change = True  # its actions call sync's apply_after_review and dismiss_after_review
    action_form = DismissActionForm
    actions = ["apply_again", "set_aside"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Mutation]:
        # Set aside or not (SetAsideFilter): a page of one set aside opens as any other.
        return super().get_queryset(request).filter(status=MutationStatus.QUARANTINED)

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        return [*super().get_readonly_fields(request, obj), "superseding_create"]

    @admin.display(description="Superseded by")
    def superseding_create(self, mutation: Mutation) -> str:
        # Named, not linked: the create that applied has left quarantine, and this list.
        later = mutation.superseded_by
        if later is None:
            return "-"
        numbered = f", mutation_id {later.mutation_id}" if later.mutation_id is not None else ""
        return f"The same device's create #{later.pk}{numbered}, which applied"

    @admin.action(description="Set aside after review, saying why (supervisors)", permissions=["change"])
    def set_aside(self, request: HttpRequest, queryset: QuerySet[Mutation]) -> None:
        assert isinstance(request.user, User)
        ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        try:
            review.dismiss_after_review(mutation_ids=ids, reviewer=request.user, reason=request.POST.get("reason", ""))
        except DomainError as error:
            self.message_user(request, f"Nothing was set aside: {error.detail}", messages.WARNING)
            return
        self.message_user(request, f"Set aside {len(ids)} change(s); their writers see why.", messages.SUCCESS)

    @admin.action(description="Apply again after review (supervisors)", permissions=["change"])
    def apply_again(self, request: HttpRequest, queryset: QuerySet[Mutation]) -> None:
        assert isinstance(request.user, User)
        try:
            results = review.apply_after_review(
                mutation_ids=list(queryset.order_by("pk").values_list("pk", flat=True)),
                reviewer=request.user,
                accessor=Accessor.from_request(request, AccessChannel.ADMIN),
            )
        except DomainError as error:
            self.message_user(request, f"Nothing was applied: {error.detail}", messages.WARNING)
            return
        kept = [result for result in results if result["status"] == push.PushStatus.QUARANTINED]
        self.message_user(
            request,
            f"Applied {len(results) - len(kept)} of {len(results)}; {len(kept)} kept in quarantine again, saying why.",
            messages.SUCCESS if not kept else messages.WARNING,
        )


# --- every other registration: scoped by program -------------------------------------------

# How each model registered by another app reaches its program; a model with a ``program``
# field needs no entry, and a model with neither stays with superusers. The audit trail has
# no entry on purpose: who read which record is for superusers only, whatever its program.
PROGRAM_PATHS: dict[type[Model], str] = {
    Program: "id",
    User: "memberships__program",
    Device: "user__memberships__program",
    PushRegistration: "device__user__memberships__program",
    NotificationPreference: "user__memberships__program",
}


def _program_path(model: type[Model]) -> str | None:
    if model in PROGRAM_PATHS:
        return PROGRAM_PATHS[model]
    field_names = {field.name for field in model._meta.get_fields()}
    return "program" if "program" in field_names else None


def scope_every_registration(site: admin.AdminSite) -> None:
    for model, model_admin in list(site._registry.items()):
        if isinstance(model_admin, ProgramScopedAdmin):
            continue
        base = type(model_admin)
        scoped = type(
            f"ProgramScoped{base.__name__}",
            (ProgramScopedAdmin, base),
            {"program_path": _program_path(model), "__module__": base.__module__},
        )
        site.unregister(model)
        site.register(model, scoped)


scope_every_registration(admin.site)
