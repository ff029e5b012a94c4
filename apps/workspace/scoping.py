"""Every admin page shows a staff user only their programs' records.

``ProgramScopedAdmin`` is mixed into every ModelAdmin on the site (``apps.workspace.admin``
wraps the registrations of the other apps and defines its own on top of it). A model is
scoped by ``program_path``, the lookup from it to its program; a model with no path is for
superusers only. Superusers see everything.
"""

from __future__ import annotations

import functools
from typing import Any

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import NotRelationField, get_fields_from_path
from django.contrib.admin.views.autocomplete import AutocompleteJsonView
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponseBadRequest

from apps.workspace.access import request_program_ids
from apps.workspace.audit import record_admin_reads


class ProgramScopedAdmin(admin.ModelAdmin):
    # The lookup from the model to its program ("program", "incident__program", "id" for
    # Program itself); None keeps the model to superusers.
    program_path: str | None = "program"
    # Whether workspace staff may use this admin's change page and actions without a Django
    # model permission: only admins whose every change goes through a domain service say so.
    workspace_may_change: bool = False
    # A second COUNT of every row of the user's programs on each list page is the slowest
    # query of a big list; the filtered count is enough.
    show_full_result_count = False

    def _is_superuser(self, request: HttpRequest) -> bool:
        return bool(getattr(request.user, "is_superuser", False))

    def _works_here(self, request: HttpRequest) -> bool:
        return self.program_path is not None and bool(request_program_ids(request))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if self._is_superuser(request):
            return queryset
        if not self._works_here(request):
            return queryset.none()
        assert self.program_path is not None
        lookup = {f"{self.program_path}__in": request_program_ids(request)}
        if self._path_is_multivalued():
            # Through a to-many relation (a user's memberships): a subquery, so no duplicate rows.
            return queryset.filter(pk__in=self.model._default_manager.filter(**lookup).values("pk"))
        return queryset.filter(**lookup)

    def _path_is_multivalued(self) -> bool:
        assert self.program_path is not None
        try:
            fields = get_fields_from_path(self.model, self.program_path)
        except FieldDoesNotExist:
            return False
        return any(field.many_to_many or field.one_to_many for field in fields)

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        # A record of another program is "not found", exactly like one that does not exist:
        # the admin's default (a redirect saying it may have been deleted) would confirm it exists.
        found = super().get_object(request, object_id, from_field)
        if found is None:
            raise Http404("No such record.")
        if request.method == "GET":
            record_admin_reads(request, self.model, [found])
        return found

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> Any:
        response = super().change_view(request, object_id, form_url, extra_context)
        if request.method == "GET":
            # The page shows its inlines' records too (an encounter's notes, a referral's
            # outcomes, a step's contact attempts): each one shown is read, like the page's own.
            for inline in getattr(response, "context_data", {}).get("inline_admin_formsets", []):
                formset = inline.formset
                record_admin_reads(request, formset.model, [form.instance for form in formset.initial_forms])
        return response

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            record_admin_reads(request, self.model, changelist.result_list)
        return response

    def response_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        # The admin filters by the selected ids as posted: one that is not an id of this model
        # (edited by hand) would fail the page with a 500 instead of being refused as bad input.
        for selected in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
            try:
                self.model._meta.pk.to_python(selected)
            except ValidationError:
                return HttpResponseBadRequest(
                    f"{helpers.ACTION_CHECKBOX_NAME}: not an id of a {self.model._meta.verbose_name}.",
                    content_type="text/plain; charset=utf-8",
                )
        return super().response_action(request, queryset)

    # Add and change forms: a foreign key or many-to-many offers only the user's programs'
    # records (program, zone, unit, person, owner, …), so another program's id posted by hand
    # is "not one of the available choices" and nothing is saved.

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        return self._scope_choices(request, formfield)

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        formfield = super().formfield_for_manytomany(db_field, request, **kwargs)
        return self._scope_choices(request, formfield)

    def get_inline_instances(self, request: HttpRequest, obj: Model | None = None) -> Any:
        # An inline is a form too (a user's memberships, a unit's crew): its foreign keys offer
        # the same choices, or a membership of another program could be posted by hand.
        inlines = super().get_inline_instances(request, obj)
        for inline in inlines:
            for name in ("formfield_for_foreignkey", "formfield_for_manytomany"):
                setattr(inline, name, functools.partial(self._scoped_formfield, getattr(inline, name)))
            # And its rows are the user's programs' only (a colleague's membership of another
            # program is neither shown nor changed).
            inline.get_queryset = functools.partial(self._scoped_rows, inline.get_queryset)  # type: ignore[method-assign]
        return inlines

    def _scoped_rows(self, rows: Any, request: HttpRequest) -> QuerySet[Any]:
        if self._is_superuser(request):
            return rows(request)
        return scope_choices(rows(request), self.admin_site, request_program_ids(request))

    def _scoped_formfield(self, build: Any, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        return self._scope_choices(request, build(db_field, request, **kwargs))

    def _scope_choices(self, request: HttpRequest, formfield: Any) -> Any:
        queryset = getattr(formfield, "queryset", None)
        if queryset is None or self._is_superuser(request):
            return formfield
        formfield.queryset = scope_choices(queryset, self.admin_site, request_program_ids(request))
        return formfield

    def get_list_filter(self, request: HttpRequest) -> Any:
        filters = super().get_list_filter(request)
        if self._is_superuser(request):
            return filters
        # A related filter would list every program's zones, units and people; offer only
        # the values the user's own records have.
        return [self._related_only(entry) for entry in filters]

    def _related_only(self, entry: Any) -> Any:
        if not isinstance(entry, str):
            return entry
        try:
            field = get_fields_from_path(self.model, entry)[-1]
        except (FieldDoesNotExist, NotRelationField):
            return entry
        if field.is_relation:
            return (entry, ProgramRelatedFieldListFilter)
        return entry

    # Permissions: superusers keep Django's; workspace staff get view (and, where the admin
    # allows it, change) by their role; a model without a program path stays superusers'.

    def has_module_permission(self, request: HttpRequest) -> bool:
        if self._is_superuser(request):
            return super().has_module_permission(request)
        return self._works_here(request)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if self._is_superuser(request):
            return super().has_view_permission(request, obj)
        return self._works_here(request)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if self._is_superuser(request):
            return super().has_change_permission(request, obj)
        if not self._works_here(request):
            return False
        if self.workspace_may_change:
            return True
        return super().has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        if not self._is_superuser(request) and not self._works_here(request):
            return False
        return bool(super().has_add_permission(request, *args))

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if not self._is_superuser(request) and not self._works_here(request):
            return False
        return super().has_delete_permission(request, obj)


class ProgramRelatedFieldListFilter(admin.RelatedOnlyFieldListFilter):
    """A related filter offering only the user's programs' values.

    Programs, zones and units are read from their own (small) tables, filtered by program;
    any other related model (people) falls back to the values the user's records have, which
    costs a DISTINCT over the list's rows."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> Any:
        related = field.remote_field.model
        program_ids = request_program_ids(request)
        if related._meta.label_lower == "accounts.program":
            lookup = {"pk__in": program_ids}
        elif any(f.name == "program" for f in related._meta.concrete_fields):
            lookup = {"program__in": program_ids}
        else:
            return super().field_choices(field, request, model_admin)
        choices = [(row.pk, str(row)) for row in related._default_manager.filter(**lookup)]
        return sorted(choices, key=lambda choice: choice[1])


def choice_path(model: type[Model], site: admin.AdminSite) -> str | bool | None:
    """How a related model's rows reach their program: its admin's path, else its ``program``
    field; False when the model is not program data at all (choices stay as they are)."""
    model_admin = site._registry.get(model)
    if isinstance(model_admin, ProgramScopedAdmin):
        return model_admin.program_path
    if any(field.name == "program" for field in model._meta.get_fields()):
        return "program"
    return False


def scope_choices(queryset: QuerySet[Any], site: admin.AdminSite, program_ids: list[Any]) -> QuerySet[Any]:
    path = choice_path(queryset.model, site)
    if path is False:
        return queryset
    if path is None:
        # Kept to superusers in the admin: no choice of it for anyone else either.
        return queryset.none()
    assert isinstance(path, str)
    lookup = {f"{path}__in": program_ids}
    fields = get_fields_from_path(queryset.model, path)
    if any(field.many_to_many or field.one_to_many for field in fields):
        return queryset.filter(pk__in=queryset.model._default_manager.filter(**lookup).values("pk"))
    return queryset.filter(**lookup)


class AuditedAutocompleteJsonView(AutocompleteJsonView):
    """The admin's autocomplete runs any admin's search (an encounter by the person's name)
    and answers with the records found: each one is read, as on the list."""

    def get_context_data(self, **kwargs: Any) -> Any:
        context = super().get_context_data(**kwargs)
        record_admin_reads(self.request, self.model_admin.model, context["object_list"])
        return context
