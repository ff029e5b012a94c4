"""Working a follow-up from the admin: the person's timeline, and the forms that act on it.

The page gathers what a case manager needs before calling someone back (the encounters, their
notes and addenda, the referrals with both timelines, every contact attempt, the steps and
their history) and offers each action as a small form. Every action calls the same domain
service as the API; a rule the service refuses comes back as an error on the form that asked.
Times are shown and entered in the program's time zone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone

from apps.accounts.models import Role, User
from apps.audit.models import AccessChannel
from apps.audit.services import Accessor
from apps.care import services as care_services
from apps.care.models import (
    ClinicalNote,
    Encounter,
    Person,
    Referral,
    ReferralOutcomeEvent,
    ReferralStatus,
    ReferralTaskEvent,
)
from apps.common import calendar
from apps.common.api.errors import DomainError
from apps.dispatch.models import Assignment, Incident
from apps.followups import services as followup_services
from apps.followups.models import ContactAttempt, ContactMethod, ContactResult, FollowUpStep
from apps.followups.services import REASON_MAX_LENGTH
from apps.sync.registry import Refused
from apps.workspace.access import request_program_ids
from apps.workspace.audit import log_admin_action, record_admin_reads


class LocalDateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self) -> None:
        super().__init__(format="%Y-%m-%dT%H:%M")


def _within_the_calendar(moment: Any) -> None:
    if not calendar.within(moment):
        raise ValidationError(calendar.OUT_OF_RANGE, code="time_out_of_range")


def _local_datetime_field(label: str, help_text: str = "") -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label, widget=LocalDateTimeInput(), help_text=help_text, validators=[_within_the_calendar]
    )


class TimelineChoiceField(forms.ModelChoiceField):
    """A choice of records the timeline shows (and read, audited), each named by its label on
    the page; a record's own name is its bare id, kept that way for the admin's log."""

    labels: dict[Any, str]

    def offer(self, records: list[Any], label: Callable[[Any], str]) -> None:
        assert self.queryset is not None
        self.queryset = self.queryset.model._default_manager.filter(pk__in=[record.pk for record in records])
        self.labels = {record.pk: label(record) for record in records}  # a new dict: fields are copied shallowly

    def label_from_instance(self, obj: Any) -> str:
        return getattr(self, "labels", {}).get(obj.pk) or super().label_from_instance(obj)


def _local_date(moment: dt.datetime) -> str:
    """The day of a time on the page's clock, written as the page writes dates."""
    return formats.date_format(timezone.localtime(moment).date(), "DATE_FORMAT")


def _local_time(moment: dt.datetime) -> str:
    """A time on the page's clock, written as the page writes its other times."""
    return formats.date_format(timezone.localtime(moment), "DATETIME_FORMAT")


def _person_name(user: User) -> str:
    full_name = user.get_full_name()
    return f"{full_name} ({user.username})" if full_name else user.username


def referral_label(referral: Referral, encounter: Encounter | None) -> str:
    """A referral as a case manager knows it: the service, and the day of the encounter that
    made it (its reason, sealed clinical text, is left out)."""
    service = referral.get_service_type_display()
    if referral.service_name:
        service = f"{service} — {referral.service_name}"
    made_at = encounter.started_at if encounter is not None else referral.created_at
    return f"{service}, referred {_local_date(made_at)}"


def note_label(note: ClinicalNote) -> str:
    """A signed note as a case manager knows it: who wrote it and when it was signed (never
    its body, sealed clinical text)."""
    kind = "Addendum by" if note.amends_id else "By"
    signed = f", signed {_local_time(note.signed_at)}" if note.signed_at else ""
    return f"{kind} {_person_name(note.created_by)}{signed}"


def case_managers_of(program_ids: list[Any]) -> QuerySet[User]:
    """Who may own a follow-up step of these programs (the choices of every reassign form)."""
    return (
        User.objects.filter(
            is_active=True, memberships__role=Role.CASE_MANAGER, memberships__program_id__in=program_ids
        )
        .distinct()
        .order_by("username")
    )


# --- the forms -----------------------------------------------------------------------------


class AttemptForm(forms.Form):
    method = forms.ChoiceField(choices=ContactMethod.choices)
    result = forms.ChoiceField(choices=ContactResult.choices)
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    attempted_at = _local_datetime_field("Attempted at")


class OutcomeForm(forms.Form):
    referral = TimelineChoiceField(queryset=Referral.objects.none())
    outcome = forms.ChoiceField(choices=[(c.value, c.label) for c in ReferralStatus if c != ReferralStatus.OPEN])
    observed_at = _local_datetime_field("Happened at")
    details = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


class CompleteForm(forms.Form):
    note = forms.CharField(required=False, max_length=REASON_MAX_LENGTH, label="Note (optional)")


class RescheduleForm(forms.Form):
    due_at = _local_datetime_field("New due time")
    reason = forms.CharField(max_length=REASON_MAX_LENGTH)


class MissedForm(forms.Form):
    reason = forms.CharField(max_length=REASON_MAX_LENGTH, label="Why it was missed")


class ReassignForm(forms.Form):
    owner = forms.ModelChoiceField(queryset=User.objects.none(), label="Case manager")


class AddendumForm(forms.Form):
    note = TimelineChoiceField(queryset=ClinicalNote.objects.none(), label="Signed note")
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), label="Addendum")


def show_domain_error(form: forms.Form, error: DomainError | Refused) -> None:
    """Put a refused rule on the field it names (``owner_id`` is the form's ``owner``), else on the form."""
    field = (error.field or "").removesuffix("_id")
    aliases = {"amends": "note", "status": None}
    field = aliases.get(field, field) or ""
    form.add_error(field if field in form.fields else None, error.detail)


# --- the timeline --------------------------------------------------------------------------


@dataclass
class Timeline:
    """Everything about the step's person that the user's programs hold."""

    step: FollowUpStep
    person: Person | None
    encounters: list[Encounter]
    incidents: dict[Any, Assignment]
    referrals: list[Referral]
    steps: list[FollowUpStep]
    attempts: list[ContactAttempt]

    @property
    def notes(self) -> list[ClinicalNote]:
        return [note for encounter in self.encounters for note in encounter.notes.all()]

    def signed_notes(self) -> list[ClinicalNote]:
        return [note for note in self.notes if note.is_signed and not note.is_deleted]


def build_timeline(step: FollowUpStep, program_ids: list[Any] | None) -> Timeline:
    """The step's person across encounters (only the step's encounter when the person is unknown)."""
    person = step.plan.person
    encounters_qs = Encounter.objects.filter(is_deleted=False)
    if program_ids is not None:
        encounters_qs = encounters_qs.filter(program_id__in=program_ids)
    if person is not None:
        encounters_qs = encounters_qs.filter(person=person)
    else:
        encounters_qs = encounters_qs.filter(pk=step.plan.encounter_id)
    encounters = list(
        encounters_qs.select_related("unit")
        .prefetch_related(
            Prefetch("notes", queryset=ClinicalNote.objects.select_related("created_by").order_by("created_at"))
        )
        .order_by("started_at")
    )
    encounter_ids = [encounter.pk for encounter in encounters]
    referrals = list(
        Referral.objects.filter(encounter_id__in=encounter_ids, is_deleted=False)
        .prefetch_related(
            Prefetch("outcomes", queryset=ReferralOutcomeEvent.objects.order_by("observed_at", "created_at")),
            "task_events",
        )
        .order_by("created_at")
    )
    steps = list(
        FollowUpStep.objects.filter(plan__encounter_id__in=encounter_ids)
        .select_related("owner")
        .prefetch_related("events")
        .order_by("due_at", "pk")
    )
    attempts = list(
        ContactAttempt.objects.filter(step__in=steps, is_deleted=False)
        .select_related("step", "created_by")
        .order_by("attempted_at")
    )
    return Timeline(
        step=step,
        person=person,
        encounters=encounters,
        incidents=_incidents_of(encounters),
        referrals=referrals,
        steps=steps,
        attempts=attempts,
    )


def _incidents_of(encounters: list[Encounter]) -> dict[Any, Assignment]:
    """The call each encounter answered: its unit's latest assignment offered before the encounter began.

    Care keeps no link to dispatch (a crew may start an encounter without a call), so this is
    the unit's assignment at the time, shown as such."""
    found = {}
    for encounter in encounters:
        assignment = (
            Assignment.objects.filter(unit_id=encounter.unit_id, offered_at__lte=encounter.started_at)
            .select_related("incident")
            .order_by("-offered_at")
            .first()
        )
        if assignment is not None:
            found[encounter.pk] = assignment
    return found


# --- the view ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """A form and what it runs: a domain service, given the accessor, audits the write in its
    own transaction (P8); what it returns says what was done, for the message and the step's
    history."""

    form_class: type[forms.Form]
    run: Callable[[FollowUpStep, User, Accessor, dict[str, Any]], str]


def _attempt(step: FollowUpStep, actor: User, accessor: Accessor, data: dict[str, Any]) -> str:
    followup_services.attempt_record(step=step, actor=actor, accessor=accessor, **data)
    return "Recorded a contact attempt."


def _outcome(step: FollowUpStep, actor: User, accessor: Accessor, data: dict[str, Any]) -> str:
    care_services.referral_outcome_record(
        referral=data["referral"],
        outcome=data["outcome"],
        observed_at=data["observed_at"],
        details=data["details"],
        actor=actor,
        accessor=accessor,
    )
    return "Recorded a referral outcome."


def _complete(step: FollowUpStep, actor: User, accessor: Accessor, data: dict[str, Any]) -> str:
    followup_services.step_complete(step=step, actor=actor, note=data["note"], accessor=accessor)
    return "Completed the step."


def _reschedule(step: FollowUpStep, actor: User, accessor: Accessor, data: dict[str, Any]) -> str:
    followup_services.step_reschedule(
        step=step, actor=actor, due_at=data["due_at"], reason=data["reason"], accessor=accessor
    )
    return "Rescheduled the step."


def _missed(step: FollowUpStep, actor: User, accessor: Accessor, data: dict[str, Any]) -> str:
    followup_services.step_mark_missed(step=step, actor=actor, reason=data["reason"], accessor=accessor)
    return "Marked the step missed."


def _reassign(step: FollowUpStep, actor: User, accessor: Accessor, data: dict[str, Any]) -> str:
    followup_services.step_assign(step=step, actor=actor, owner=data["owner"], accessor=accessor)
    return f"Reassigned to {data['owner']}."


def _addendum(step: FollowUpStep, actor: User, accessor: Accessor, data: dict[str, Any]) -> str:
    care_services.note_addendum_add(note=data["note"], body=data["body"], actor=actor, accessor=accessor)
    return "Added an addendum to a signed note."


ACTIONS: dict[str, Action] = {
    "attempt": Action(AttemptForm, _attempt),
    "outcome": Action(OutcomeForm, _outcome),
    "complete": Action(CompleteForm, _complete),
    "reschedule": Action(RescheduleForm, _reschedule),
    "missed": Action(MissedForm, _missed),
    "reassign": Action(ReassignForm, _reassign),
    "addendum": Action(AddendumForm, _addendum),
}


def _forms(timeline: Timeline, program_ids: list[Any], data: Any = None, bound: str = "") -> dict[str, forms.Form]:
    now = timezone.localtime().replace(second=0, microsecond=0)
    initial: dict[str, dict[str, Any]] = {
        "attempt": {"attempted_at": now},
        "outcome": {"observed_at": now},
        "reschedule": {"due_at": now + dt.timedelta(days=1)},
    }
    if len(timeline.referrals) == 1:
        initial["outcome"]["referral"] = timeline.referrals[0].pk
    built = {}
    for name, action in ACTIONS.items():
        form = action.form_class(data if name == bound else None, prefix=name, initial=initial.get(name))
        built[name] = form
    # Choices are only this person's records and this program's people, whatever is posted;
    # each named as the timeline shows it, from what the page read (and audits) already.
    encounters = {encounter.pk: encounter for encounter in timeline.encounters}
    referral_field = built["outcome"].fields["referral"]
    assert isinstance(referral_field, TimelineChoiceField)
    referral_field.offer(
        timeline.referrals, lambda referral: referral_label(referral, encounters.get(referral.encounter_id))
    )
    note_field = built["addendum"].fields["note"]
    assert isinstance(note_field, TimelineChoiceField)
    note_field.offer(timeline.signed_notes(), note_label)
    built["reassign"].fields["owner"].queryset = case_managers_of(  # type: ignore[attr-defined]
        [timeline.step.program_id]
    ).filter(memberships__program_id__in=program_ids)
    return built


def timeline_view(model_admin: ModelAdmin[Any], request: HttpRequest, object_id: str) -> HttpResponse:
    step = model_admin.get_object(request, object_id)  # scoped: another program's step is a 404
    assert isinstance(step, FollowUpStep) and isinstance(request.user, User)
    is_superuser = bool(request.user.is_superuser)
    program_ids = None if is_superuser else request_program_ids(request)
    with timezone.override(ZoneInfo(step.program.time_zone)):
        timeline = build_timeline(step, program_ids)
        everyone = program_ids if program_ids is not None else [step.program_id]
        if request.method == "POST":
            if not model_admin.has_change_permission(request, step):
                return HttpResponse("Not allowed to change follow-ups.", status=403)
            name = request.POST.get("_form", "")
            action = ACTIONS.get(name)
            if action is None:
                return HttpResponse("Unknown form.", status=400)
            built = _forms(timeline, everyone, request.POST, bound=name)
            form = built[name]
            if form.is_valid():
                try:
                    done = action.run(
                        step, request.user, Accessor.from_request(request, AccessChannel.ADMIN), form.cleaned_data
                    )
                except (DomainError, Refused) as error:
                    show_domain_error(form, error)
                else:
                    log_admin_action(request, description=f"{done} (follow-up step {step.pk})", logged=[step])
                    messages.success(request, done)
                    return HttpResponseRedirect(request.path)
            status = 400
        else:
            built = _forms(timeline, everyone)
            status = 200
        # Shown again with a form's errors, the page still shows the whole timeline: a read too.
        _audit_timeline_reads(request, timeline)
        context = {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.model._meta,
            "title": "Follow-up timeline",
            "timeline": timeline,
            "forms": built,
            "time_zone": step.program.time_zone,
            "may_change": model_admin.has_change_permission(request, step),
            "step_url": reverse("admin:followups_followupstep_change", args=[step.pk]),
        }
        response = TemplateResponse(request, "workspace/timeline.html", context, status=status)
        return response.render()


def _audit_timeline_reads(request: HttpRequest, timeline: Timeline) -> None:
    if timeline.person is not None:
        record_admin_reads(request, Person, [timeline.person])
    record_admin_reads(request, Encounter, timeline.encounters)
    record_admin_reads(request, ClinicalNote, timeline.notes)
    record_admin_reads(request, Referral, timeline.referrals)
    record_admin_reads(
        request, ReferralOutcomeEvent, [event for referral in timeline.referrals for event in referral.outcomes.all()]
    )
    # Their task events too (a service's reason for refusing one often says why clinically).
    record_admin_reads(
        request, ReferralTaskEvent, [event for referral in timeline.referrals for event in referral.task_events.all()]
    )
    # The step itself was recorded when the page looked it up, on a GET only (not a form posted).
    looked_up = timeline.step.pk if request.method == "GET" else None
    record_admin_reads(request, FollowUpStep, [step for step in timeline.steps if step.pk != looked_up])
    record_admin_reads(request, ContactAttempt, timeline.attempts)
    # The calls shown are read like an incident or assignment opened in the admin.
    calls = list(timeline.incidents.values())
    record_admin_reads(request, Assignment, calls)
    record_admin_reads(request, Incident, list({call.incident_id: call.incident for call in calls}.values()))
