"""Working a follow-up from the admin: the timeline page, its forms, and the bulk actions.

Every form calls the domain service the API calls; a refusal is an error on the form."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.models import LogEntry
from django.db import DatabaseError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Program
from apps.audit.models import AuditEvent
from apps.care import services as care_services
from apps.care.models import ClinicalNote, Encounter, Referral, ReferralOutcomeEvent, ReferralStatus
from apps.common.api.errors import DomainError
from apps.dispatch import services as dispatch
from apps.dispatch.models import Assignment
from apps.followups.models import ContactAttempt, FollowUpStep, StepAction, StepStatus
from apps.sync.models import Conflict
from tests.accounts.factories import UserFactory
from tests.conftest import audit_trail_refusing, in_the_admin, sign_in_to_admin
from tests.dispatch.factories import make_incident, seed_default_triage_policy
from tests.followups.factories import case_manager
from tests.workspace.scenario import Casework, casework, workday
from tests.workspace.test_admin import changelist_url, outsider_of


def timeline_url(step: FollowUpStep) -> str:
    return reverse("admin:followups_followupstep_timeline", args=[step.pk])


def local_input(moment: dt.datetime, program: Program) -> str:
    """A time as a case manager types it into the form: wall-clock time in the program's zone."""
    return moment.astimezone(ZoneInfo(program.time_zone)).strftime("%Y-%m-%dT%H:%M")


def post_form(client: Client, step: FollowUpStep, name: str, **fields: Any) -> Any:
    data = {"_form": name, **{f"{name}-{key}": value for key, value in fields.items()}}
    return client.post(timeline_url(step), data)


@pytest.fixture
def work(program: Program) -> Casework:
    return casework(workday(program))


@pytest.fixture
def manager(work: Casework) -> Client:
    return sign_in_to_admin(Client(), work.day.case_manager)


def admin_writes(work: Casework, record_type: str) -> Any:
    return AuditEvent.objects.filter(
        channel="admin", actor_id=work.day.case_manager.pk, record_type=record_type
    ).exclude(action="read")


def test_the_overdue_queue_leads_to_the_persons_timeline_in_one_click(work: Casework, manager: Client) -> None:
    step = work.overdue_step()

    queue = manager.get(f"{changelist_url(FollowUpStep)}?queue=steps_overdue")
    assert step in queue.context["cl"].result_list
    assert f'href="{timeline_url(step)}"' in queue.content.decode()

    page = manager.get(timeline_url(step))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Rosa Diaz" in html
    assert "Calm on arrival." in html  # the signed note, read-only
    assert "Harlem Clinic" in html  # the referral and its status
    assert html.count('class="timeline-step') == len(work.steps)
    # Every health record shown is a read in the audit trail.
    reads = AuditEvent.objects.filter(channel="admin", action="read", actor_id=work.day.case_manager.pk)
    assert set(reads.values_list("record_type", flat=True)) >= {
        "care.person",
        "care.encounter",
        "care.note",
        "care.referral",
        "followups.step",
    }


def test_a_contact_attempt_is_recorded_through_the_service_and_audited(work: Casework, manager: Client) -> None:
    step = work.overdue_step()

    response = post_form(
        manager,
        step,
        "attempt",
        method="phone",
        result="no_answer",
        notes="Rang twice.",
        attempted_at=local_input(timezone.now() - dt.timedelta(minutes=10), work.day.program),
    )

    assert response.status_code == 302
    attempt = ContactAttempt.objects.get(step=step)
    assert (attempt.method, attempt.result, attempt.created_by) == ("phone", "no_answer", work.day.case_manager)
    # Entered in the program's zone, stored as that instant.
    assert abs(attempt.attempted_at - (timezone.now() - dt.timedelta(minutes=10))) < dt.timedelta(minutes=2)
    assert list(admin_writes(work, "followups.contact_attempt").values_list("record_id", "action")) == [
        (attempt.pk, "create")
    ]
    assert LogEntry.objects.get(object_id=str(step.pk)).change_message.startswith("Recorded a contact attempt.")
    assert "Rang twice." in manager.get(timeline_url(step)).content.decode()


def test_an_attempt_in_the_future_is_refused_on_the_form(work: Casework, manager: Client) -> None:
    step = work.overdue_step()

    response = post_form(
        manager,
        step,
        "attempt",
        method="phone",
        result="reached",
        attempted_at=local_input(timezone.now() + dt.timedelta(hours=2), work.day.program),
    )

    assert response.status_code == 400
    assert response.context["forms"]["attempt"].errors == {"attempted_at": ["An attempt cannot be in the future."]}
    assert not ContactAttempt.objects.filter(step=step).exists()


@pytest.mark.parametrize(("form", "field"), [("attempt", "attempted_at"), ("outcome", "observed_at")])
def test_a_time_outside_the_calendar_a_program_works_in_is_refused_on_the_form(
    work: Casework, manager: Client, form: str, field: str
) -> None:
    """The API refuses times before 1900 or after 2999; a form typed in the workspace too."""
    step = work.overdue_step()
    fields = {"method": "phone", "result": "reached"} if form == "attempt" else {"outcome": "connected"}
    if form == "outcome":
        fields["referral"] = str(step.plan.encounter.referrals.get().pk)

    response = post_form(manager, step, form, **fields, **{field: "0001-01-01T10:00"})

    assert response.status_code == 400
    assert response.context["forms"][form].errors == {field: ["Give a time between the years 1900 and 2999."]}
    assert not ContactAttempt.objects.filter(step=step).exists()
    assert not ReferralOutcomeEvent.objects.exists()


def test_a_referral_outcome_recorded_on_the_timeline_completes_the_steps_it_answers(
    work: Casework, manager: Client
) -> None:
    # "connected" answers the first contact and the connection check, not the outcome checks
    # (at 7 days: did they attend; at 30), whichever of them are overdue on the day it runs.
    answered = [step for step in work.steps if "connected" in step.completed_by_outcomes]
    unanswered = [step for step in work.steps if step not in answered]
    assert answered and unanswered
    assert all(step.due_at < timezone.now() for step in answered)

    response = post_form(
        manager,
        answered[0],
        "outcome",
        referral=str(work.referral_id),
        outcome="connected",
        observed_at=local_input(timezone.now(), work.day.program),
        details="Clinic confirmed intake.",
    )

    assert response.status_code == 302
    assert Referral.objects.get(pk=work.referral_id).status == ReferralStatus.CONNECTED
    for step in FollowUpStep.objects.filter(pk__in=[step.pk for step in answered]):
        assert (step.status, step.closed_by) == (StepStatus.COMPLETED, work.day.case_manager)
    for step in FollowUpStep.objects.filter(pk__in=[step.pk for step in unanswered]):
        assert (step.status, step.closed_by) == (StepStatus.PENDING, None)
    assert admin_writes(work, "care.referral_outcome").count() == 1


def test_another_referral_is_not_a_choice_of_the_outcome_form(work: Casework, manager: Client) -> None:
    # The workday's own referral is of another (unknown) person: not on this timeline.
    response = post_form(
        manager,
        work.overdue_step(),
        "outcome",
        referral=str(work.day.referral_id),
        outcome="connected",
        observed_at=local_input(timezone.now(), work.day.program),
    )

    assert response.status_code == 400
    assert "referral" in response.context["forms"]["outcome"].errors
    assert Referral.objects.get(pk=work.day.referral_id).status == ReferralStatus.OPEN


def options_of(page: str, name: str) -> list[str]:
    """The labels a form's choice offers, as the case manager reads them."""
    select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', page, re.DOTALL)
    assert select is not None, name
    return [html.unescape(label).strip() for label in re.findall(r"<option[^>]*>(.*?)</option>", select.group(1))]


def test_the_forms_choices_name_referrals_and_notes_as_a_case_manager_knows_them(
    work: Casework, manager: Client
) -> None:
    """A referral by its service and the day it was made, a note by its author and when it was
    signed, on the program's clock — never by an id, and never by the note's sealed text."""
    # Late in the evening of the 19th in New York: the 20th in UTC.
    Encounter.objects.filter(pk=work.encounter_id).update(started_at=dt.datetime(2026, 11, 20, 3, 30, tzinfo=dt.UTC))
    author = work.day.crew.user

    page = manager.get(timeline_url(work.overdue_step())).content.decode()

    referrals = options_of(page, "outcome-referral")
    notes = options_of(page, "addendum-note")
    assert referrals == ["---------", "Outpatient mental health — Harlem Clinic, referred Nov. 19, 2026"]
    assert notes == ["---------", f"By {author.get_full_name()} ({author.username}), signed Nov. 20, 2026, 10 a.m."]
    assert not any(str(work.referral_id) in label or str(work.note_id) in label for label in referrals + notes)
    # What the choices name was read on this page, and is in the audit trail as such.
    reads = AuditEvent.objects.filter(channel="admin", action="read", actor_id=work.day.case_manager.pk)
    assert set(reads.values_list("record_type", "record_id")) >= {
        ("care.referral", work.referral_id),
        ("care.note", work.note_id),
        ("care.encounter", work.encounter_id),
    }


def test_rescheduling_into_the_past_is_a_clear_form_error_and_changes_nothing(work: Casework, manager: Client) -> None:
    step = work.overdue_step()

    response = post_form(
        manager,
        step,
        "reschedule",
        due_at=local_input(timezone.now() - dt.timedelta(hours=1), work.day.program),
        reason="Person asked for a call tomorrow.",
    )

    assert response.status_code == 400
    assert response.context["forms"]["reschedule"].errors == {"due_at": ["The new due time is in the past."]}
    assert "The new due time is in the past." in response.content.decode()
    step.refresh_from_db()
    assert not step.events.filter(action=StepAction.RESCHEDULED).exists()


def test_rescheduling_takes_the_wall_clock_time_of_the_programs_zone(work: Casework, manager: Client) -> None:
    step = work.overdue_step()
    tomorrow = timezone.now().astimezone(ZoneInfo(work.day.program.time_zone)) + dt.timedelta(days=1)
    nine_am = tomorrow.replace(hour=9, minute=0, second=0, microsecond=0)

    response = post_form(manager, step, "reschedule", due_at=nine_am.strftime("%Y-%m-%dT%H:%M"), reason="Agreed.")

    assert response.status_code == 302
    step.refresh_from_db()
    assert step.due_at == nine_am
    assert step.events.get(action=StepAction.RESCHEDULED).reason == "Agreed."


def test_mark_missed_needs_a_reason_and_a_closed_step_refuses_on_the_form(work: Casework, manager: Client) -> None:
    step = work.overdue_step()

    blank = post_form(manager, step, "missed", reason="  ")
    assert blank.status_code == 400
    assert "reason" in blank.context["forms"]["missed"].errors

    assert post_form(manager, step, "missed", reason="Moved out of state.").status_code == 302
    step.refresh_from_db()
    assert (step.status, step.missed_reason) == (StepStatus.MISSED, "Moved out of state.")

    again = post_form(manager, step, "complete", note="")
    assert again.status_code == 400
    assert again.context["forms"]["complete"].non_field_errors() == ["The step is already missed."]


def test_reassign_offers_only_the_programs_case_managers(work: Casework, manager: Client) -> None:
    step = work.overdue_step()
    colleague = case_manager(work.day.crew, of_program=False).user
    elsewhere = outsider_of(work.day.program)

    refused = post_form(manager, step, "reassign", owner=str(elsewhere.pk))
    assert refused.status_code == 400
    assert "owner" in refused.context["forms"]["reassign"].errors
    step.refresh_from_db()
    assert step.owner == work.day.case_manager

    assert post_form(manager, step, "reassign", owner=str(colleague.pk)).status_code == 302
    step.refresh_from_db()
    assert step.owner == colleague


def test_an_addendum_amends_a_signed_note_which_itself_never_changes(work: Casework, manager: Client) -> None:
    step = work.overdue_step()

    response = post_form(manager, step, "addendum", note=str(work.note_id), body="Correction: agitated at first.")

    assert response.status_code == 302
    note = ClinicalNote.objects.get(pk=work.note_id)
    assert note.body == "Calm on arrival."
    [addendum] = note.addenda.all()
    assert (addendum.body, addendum.created_by, addendum.encounter_id) == (
        "Correction: agitated at first.",
        work.day.case_manager,
        work.encounter_id,
    )
    assert addendum.is_signed
    assert list(admin_writes(work, "care.note").values_list("record_id", "action")) == [(addendum.pk, "create")]
    assert "Correction: agitated at first." in manager.get(timeline_url(step)).content.decode()


def test_note_addendum_add_refuses_a_draft_and_an_empty_text(work: Casework) -> None:
    note = ClinicalNote.objects.get(pk=work.note_id)
    draft = ClinicalNote.objects.create(
        program=note.program, unit=note.unit, encounter=note.encounter, created_by=note.created_by, body="Draft."
    )

    with pytest.raises(DomainError) as not_signed:
        care_services.note_addendum_add(
            note=draft, body="More.", actor=work.day.case_manager, accessor=in_the_admin(work.day.case_manager)
        )
    with pytest.raises(DomainError) as empty:
        care_services.note_addendum_add(
            note=note, body="  ", actor=work.day.case_manager, accessor=in_the_admin(work.day.case_manager)
        )

    assert (not_signed.value.code, empty.value.code) == ("note_not_signed", "required")
    assert not ClinicalNote.objects.filter(amends__isnull=False).exists()


def test_an_outsider_can_neither_open_nor_work_the_timeline(work: Casework) -> None:
    outsider = sign_in_to_admin(Client(), outsider_of(work.day.program))
    step = work.overdue_step()

    assert outsider.get(timeline_url(step)).status_code == 404
    posted = post_form(outsider, step, "missed", reason="Not mine.")

    assert posted.status_code == 404
    step.refresh_from_db()
    assert step.status == StepStatus.PENDING


# --- bulk actions --------------------------------------------------------------------------


def test_bulk_reschedule_goes_through_the_service_and_is_audited(work: Casework, manager: Client) -> None:
    steps = [step for step in work.steps if step.status == StepStatus.PENDING][:2]
    tomorrow = timezone.now().astimezone(ZoneInfo(work.day.program.time_zone)) + dt.timedelta(days=1)
    ten_am = tomorrow.replace(hour=10, minute=0, second=0, microsecond=0)

    manager.post(
        changelist_url(FollowUpStep),
        {
            "action": "reschedule",
            "_selected_action": [str(step.pk) for step in steps],
            "due_at": ten_am.strftime("%Y-%m-%dT%H:%M"),
            "reason": "Clinic closed this week.",
        },
    )

    for step in FollowUpStep.objects.filter(pk__in=[step.pk for step in steps]):
        assert step.due_at == ten_am
        assert step.events.get(action=StepAction.RESCHEDULED, actor=work.day.case_manager).reason == (
            "Clinic closed this week."
        )
    audited = admin_writes(work, "followups.step").filter(action="update")
    assert sorted(audited.values_list("record_id", flat=True)) == sorted(step.pk for step in steps)  # each once
    assert set(audited.values_list("program_id", flat=True)) == {work.day.program.pk}
    logged = LogEntry.objects.filter(user=work.day.case_manager, object_id__in=[str(step.pk) for step in steps])
    assert {entry.change_message for entry in logged} == {
        "Bulk action: rescheduled to " + f"{ten_am:%Y-%m-%d %H:%M} local"
    }


def test_bulk_reschedule_into_the_past_changes_nothing_and_says_why(work: Casework, manager: Client) -> None:
    step = work.overdue_step()
    past = timezone.now().astimezone(ZoneInfo(work.day.program.time_zone)) - dt.timedelta(days=1)

    response = manager.post(
        changelist_url(FollowUpStep),
        {
            "action": "reschedule",
            "_selected_action": [str(step.pk)],
            "due_at": past.strftime("%Y-%m-%dT%H:%M"),
            "reason": "Oops.",
        },
        follow=True,
    )

    assert "The new due time is in the past." in response.content.decode()
    assert not step.events.filter(action=StepAction.RESCHEDULED).exists()
    assert not admin_writes(work, "followups.step").exists()


def test_every_bulk_action_leaves_who_what_when_in_the_audit_trail(work: Casework, manager: Client) -> None:
    step = work.overdue_step()
    colleague = case_manager(work.day.crew, of_program=False).user
    before = timezone.now()

    manager.post(
        changelist_url(FollowUpStep),
        {"action": "reassign", "_selected_action": [str(step.pk)], "owner": str(colleague.pk)},
    )
    manager.post(changelist_url(FollowUpStep), {"action": "mark_completed", "_selected_action": [str(step.pk)]})
    conflict = work.day.conflict
    manager.post(changelist_url(Conflict), {"action": "keep_server_value", "_selected_action": [str(conflict.pk)]})

    writes = AuditEvent.objects.filter(channel="admin", actor_id=work.day.case_manager.pk).exclude(action="read")
    assert list(writes.order_by("id").values_list("record_type", "record_id", "action")) == [
        ("followups.step", step.pk, "update"),
        ("followups.step", step.pk, "update"),
        ("care.encounter", conflict.record_id, "update"),
    ]
    assert all(event.occurred_at >= before for event in writes)
    assert all(event.actor_username == work.day.case_manager.username for event in writes)
    messages = list(
        LogEntry.objects.filter(user=work.day.case_manager).order_by("id").values_list("change_message", flat=True)
    )
    assert messages == [
        f"Bulk action: reassigned to user {colleague.pk}",
        "Bulk action: completed",
        "Bulk action: resolved conflict (server)",
    ]


def test_the_reassign_choices_of_the_bulk_action_are_the_users_programs_case_managers(
    work: Casework, manager: Client
) -> None:
    elsewhere = outsider_of(work.day.program)

    page = manager.get(changelist_url(FollowUpStep))

    choices = set(page.context["action_form"].fields["owner"].queryset)
    assert work.day.case_manager in choices
    assert elsewhere not in choices
    manager.post(
        changelist_url(FollowUpStep),
        {"action": "reassign", "_selected_action": [str(work.overdue_step().pk)], "owner": str(elsewhere.pk)},
    )
    assert work.overdue_step().owner == work.day.case_manager


def test_the_call_shown_on_the_timeline_is_audited_as_read(work: Casework, manager: Client) -> None:
    """The timeline shows the call each encounter answered (the unit's assignment and its
    incident): reading them there is recorded, as opening them in the admin is."""
    day = work.day
    encounter = Encounter.objects.get(pk=work.encounter_id)
    call = dispatch.assignment_offer(
        incident=make_incident(day.program, day.dispatcher), unit=encounter.unit, actor=day.dispatcher.user
    )
    Assignment.objects.filter(pk=call.pk).update(offered_at=encounter.started_at - dt.timedelta(minutes=20))

    page = manager.get(timeline_url(work.overdue_step()))

    assert call.incident.external_call_id in page.content.decode()
    reads = AuditEvent.objects.filter(channel="admin", action="read", actor_id=day.case_manager.pk)
    assert list(reads.filter(record_type="dispatch.incident").values_list("record_id", flat=True)) == [call.incident_id]
    assert list(reads.filter(record_type="dispatch.assignment").values_list("record_id", flat=True)) == [call.pk]


def test_a_timeline_shown_again_with_a_forms_errors_is_audited_as_read(work: Casework, manager: Client) -> None:
    """A refused form answers 400 with the whole timeline again (the person, the notes, the
    referrals): that page is a read of each record it shows, as the page first opened is."""
    step = work.overdue_step()

    refused = post_form(manager, step, "attempt", method="phone", result="no_answer")  # no time given

    assert refused.status_code == 400
    assert "Calm on arrival." in refused.content.decode()
    reads = AuditEvent.objects.filter(channel="admin", action="read", actor_id=work.day.case_manager.pk)
    assert set(reads.values_list("record_type", "record_id")) >= {
        ("care.person", work.person_id),
        ("care.encounter", work.encounter_id),
        ("care.note", work.note_id),
        ("care.referral", work.referral_id),
        ("followups.step", step.pk),
    }


def test_the_people_named_on_the_step_list_are_audited_as_read(work: Casework, manager: Client) -> None:
    """The follow-up step list shows each step's person by name (and finds them by name or
    phone number): listing them reads those people, as the timeline showing them does."""
    listed = manager.get(changelist_url(FollowUpStep), {"q": "Diaz"})

    assert "Rosa Diaz" in listed.content.decode()
    reads = AuditEvent.objects.filter(channel="admin", action="read", actor_id=work.day.case_manager.pk)
    assert list(reads.filter(record_type="care.person").values_list("record_id", flat=True)) == [work.person_id]


def test_a_referrals_task_events_shown_on_the_timeline_and_its_page_are_audited_as_read(
    work: Casework, manager: Client
) -> None:
    """A service's reason for refusing a referral often says why clinically: the timeline and
    the referral's page show it, and each showing is a read of that event, once."""
    referral = Referral.objects.get(pk=work.referral_id)
    event = care_services.referral_task_status_change(
        referral=referral,
        to_status="rejected",
        reason="Beds full; needs detox first.",
        actor=work.day.case_manager,
        accessor=in_the_admin(work.day.case_manager),
    )
    reads = AuditEvent.objects.filter(
        channel="admin", action="read", actor_id=work.day.case_manager.pk, record_type="care.referral_task_event"
    )

    page = manager.get(timeline_url(work.overdue_step()))

    assert "Beds full; needs detox first." in page.content.decode()
    assert list(reads.values_list("record_id", flat=True)) == [event.pk]

    superuser = UserFactory.create(is_staff=True, is_superuser=True)  # sees every inline
    opened = sign_in_to_admin(Client(), superuser).get(reverse("admin:care_referral_change", args=[referral.pk]))

    assert "Beds full; needs detox first." in opened.content.decode()
    assert list(reads.values_list("record_id", flat=True)) == [event.pk]
    assert list(
        AuditEvent.objects.filter(actor_id=superuser.pk, record_type="care.referral_task_event").values_list(
            "action", "record_id"
        )
    ) == [("read", event.pk)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("form", "record_type"),
    [("attempt", "followups.contact_attempt"), ("outcome", "care.referral_outcome"), ("addendum", "care.note")],
)
def test_a_timeline_form_whose_write_cannot_be_audited_writes_nothing(
    program: Program, form: str, record_type: str
) -> None:
    """The form's write and the audit row saying who made it commit together (P8): when the
    trail refuses the row, nothing the form wrote is kept."""
    seed_default_triage_policy()  # seeded by a migration, emptied between transactional tests
    work = casework(workday(program))
    client = sign_in_to_admin(Client(), work.day.case_manager)
    step = work.overdue_step()
    moment = local_input(timezone.now() - dt.timedelta(minutes=10), program)
    fields = {
        "attempt": {"method": "phone", "result": "no_answer", "notes": "Rang twice.", "attempted_at": moment},
        "outcome": {"referral": str(work.referral_id), "outcome": "connected", "observed_at": moment},
        "addendum": {"note": str(work.note_id), "body": "Correction: agitated at first."},
    }[form]

    def state() -> tuple[object, ...]:
        referral = Referral.objects.get(pk=work.referral_id)
        return (
            ContactAttempt.objects.count(),
            ReferralOutcomeEvent.objects.count(),
            ClinicalNote.objects.count(),
            referral.status,
            sorted(FollowUpStep.objects.values_list("pk", "status")),
        )

    before = state()
    with audit_trail_refusing("create", record_type), pytest.raises(DatabaseError, match="audit trail unavailable"):
        post_form(client, step, form, **fields)

    assert state() == before
