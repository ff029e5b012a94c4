from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db import DatabaseError
from django.db.models import Model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Program, Role, User
from apps.audit.models import AuditEvent
from apps.care import services as care_services
from apps.care.models import Encounter, Referral
from apps.followups import services as followup_services
from apps.followups.models import FollowUpStep, StepAction, StepStatus
from apps.sync import services as sync_services
from apps.sync.models import Conflict, Mutation, MutationStatus, SyncedRecord
from apps.teams.models import Unit
from apps.workspace.selectors import queue_counts
from tests.accounts.factories import ProgramFactory, UserFactory
from tests.care.factories import encounter, pushed
from tests.conftest import audit_trail_refusing, in_the_admin, make_crew_member, revoke_device, sign_in_to_admin
from tests.dispatch.factories import seed_default_triage_policy
from tests.followups.factories import case_manager
from tests.sync.helpers import SimDevice, encounter_fields, now_iso
from tests.workspace.scenario import casework, staff, workday


def changelist_url(model: type[Model]) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def change_url(model: type[Model], pk: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[quote(pk)])


def outsider_of(program: Program) -> User:
    elsewhere = ProgramFactory.create(slug=f"not-{program.slug}", name="Another program")
    return staff(make_crew_member(elsewhere, role=Role.CASE_MANAGER).user)


def test_an_outsider_sees_nothing_of_the_program_in_any_admin(program: Program) -> None:
    day = workday(program)
    insider = sign_in_to_admin(Client(), day.case_manager)
    outsider = sign_in_to_admin(Client(), outsider_of(program))

    checked = set()
    for model, model_admin in admin.site._registry.items():
        path = getattr(model_admin, "program_path", "unscoped")
        assert path != "unscoped", f"{model._meta.label} is registered without program scoping"
        if path is None:
            # Not tied to a program (schedules of beat, lockouts, OTP devices): superusers only.
            assert outsider.get(changelist_url(model)).status_code == 403, model._meta.label
            assert insider.get(changelist_url(model)).status_code == 403, model._meta.label
            continue
        ours = list(model._default_manager.filter(**{f"{path}__in": [program.pk]}).values_list("pk", flat=True)[:5])
        if not ours:
            continue
        checked.add(model._meta.label_lower)

        response = outsider.get(changelist_url(model))
        assert response.status_code == 200, model._meta.label
        shown = {row.pk for row in response.context["cl"].result_list}
        assert not shown & set(ours), model._meta.label
        page = response.content.decode()
        for pk in ours:
            # A number (a ledger row's id) appears anywhere in a page: look for its link instead.
            assert (change_url(model, pk) if isinstance(pk, int) else str(pk)) not in page, model._meta.label
            assert outsider.get(change_url(model, pk)).status_code == 404, model._meta.label
            # The program's own case manager does see it: the 404 is scoping, not a broken page.
            assert insider.get(change_url(model, pk)).status_code == 200, model._meta.label

    assert checked >= {
        "accounts.program",
        "accounts.user",
        "accounts.device",
        "teams.unit",
        "followups.followupstep",
        "followups.casemanagerassignment",
        "care.referral",
        "care.encounter",
        "dispatch.incident",
        "dispatch.assignment",
        "sync.conflict",
        "sync.mutation",
    }


def test_the_admin_home_shows_each_queue_linking_to_a_list_of_exactly_its_items(program: Program) -> None:
    day = workday(program)
    client = sign_in_to_admin(Client(), day.case_manager)

    home = client.get("/admin/")

    assert home.status_code == 200
    page = home.content.decode()
    queues = queue_counts(user=day.case_manager)
    assert len(queues) == 8
    for queue in queues:
        assert queue.label in page
        assert queue.url.replace("&", "&amp;") in page
        listed = client.get(queue.url)
        assert listed.status_code == 200, queue.key
        assert listed.context["cl"].result_count == queue.count, queue.key
    for _label, count, url in next(queue for queue in queues if queue.key == "eligible_not_served").breakdown:
        assert client.get(url).context["cl"].result_count == count


def test_bulk_mark_completed_goes_through_the_follow_up_service(program: Program) -> None:
    day = workday(program)
    client = sign_in_to_admin(Client(), day.case_manager)
    open_steps = [step for step in day.steps if step.status == StepStatus.PENDING][:2]

    response = client.post(
        changelist_url(FollowUpStep),
        {"action": "mark_completed", "_selected_action": [str(step.pk) for step in open_steps]},
    )

    assert response.status_code == 302
    for step in FollowUpStep.objects.filter(pk__in=[step.pk for step in open_steps]):
        assert (step.status, step.closed_by) == (StepStatus.COMPLETED, day.case_manager)
        assert step.events.filter(action=StepAction.COMPLETED, actor=day.case_manager).count() == 1


def test_bulk_reassign_takes_a_case_manager_of_the_program_and_refuses_anyone_else(program: Program) -> None:
    day = workday(program)
    client = sign_in_to_admin(Client(), day.case_manager)
    step = next(step for step in day.steps if step.status == StepStatus.PENDING)
    colleague = case_manager(day.crew, of_program=False).user

    refused = client.post(
        changelist_url(FollowUpStep),
        {"action": "reassign", "_selected_action": [str(step.pk)], "owner": str(day.crew.user.pk)},
        follow=True,
    )
    step.refresh_from_db()
    assert step.owner == day.case_manager  # a clinician cannot own a follow-up: nothing changed
    assert "case manager" in refused.content.decode()

    client.post(
        changelist_url(FollowUpStep),
        {"action": "reassign", "_selected_action": [str(step.pk)], "owner": str(colleague.pk)},
    )
    step.refresh_from_db()
    assert step.owner == colleague
    assert step.events.filter(action=StepAction.ASSIGNED, actor=day.case_manager).count() == 1


def test_an_outsider_cannot_work_the_programs_steps_through_a_bulk_action(program: Program) -> None:
    day = workday(program)
    outsider = sign_in_to_admin(Client(), outsider_of(program))
    step = next(step for step in day.steps if step.status == StepStatus.PENDING)

    outsider.post(changelist_url(FollowUpStep), {"action": "mark_completed", "_selected_action": [str(step.pk)]})

    step.refresh_from_db()
    assert step.status == StepStatus.PENDING
    assert not step.events.filter(action=StepAction.COMPLETED).exists()


def test_field_staff_without_a_workspace_role_see_no_admin_page(program: Program) -> None:
    workday(program)
    clinician = sign_in_to_admin(Client(), staff(make_crew_member(program).user))

    assert clinician.get(changelist_url(FollowUpStep)).status_code == 403
    assert "Queues" not in clinician.get("/admin/").content.decode()


def test_a_conflict_opened_in_the_admin_is_audited_and_resolved_through_the_sync_service(program: Program) -> None:
    day = workday(program)
    client = sign_in_to_admin(Client(), day.case_manager)

    page = client.get(change_url(Conflict, day.conflict.pk)).content.decode()
    assert "Agitated." in page and "Calm." in page  # both versions, side by side
    reads = AuditEvent.objects.filter(channel="admin", action="read", actor_id=day.case_manager.pk)
    assert list(reads.values_list("record_type", "record_id")) == [("care.encounter", day.conflict.record_id)]
    client.post(changelist_url(Conflict), {"action": "take_device_value", "_selected_action": [str(day.conflict.pk)]})

    conflict = Conflict.objects.get(pk=day.conflict.pk)
    assert (conflict.resolved_by, conflict.resolution) == (day.case_manager, "Take the device's value")
    assert Encounter.objects.get(pk=conflict.record_id).assessment == "Calm."


@pytest.mark.parametrize(("model", "action"), [(Conflict, "take_device_value"), (Mutation, "apply_again")])
def test_a_selection_that_is_not_an_id_is_refused_with_a_400_and_changes_nothing(
    program: Program, model: type[Model], action: str
) -> None:
    """The checkboxes post ids; one edited by hand (not a UUID, not a number) must be refused
    as bad input, not fail the page, and the other ids selected with it stay as they were."""
    day = workday(program)
    client = sign_in_to_admin(Client(), day.case_manager)
    client.raise_request_exception = False
    valid = (
        str(day.conflict.pk)
        if model is Conflict
        else str(Mutation.objects.order_by("pk").values_list("pk", flat=True).first())
    )

    response = client.post(changelist_url(model), {"action": action, "_selected_action": [valid, "7x"]})

    assert response.status_code == 400
    assert Conflict.objects.get(pk=day.conflict.pk).is_open


def test_saving_a_conflicts_read_only_page_does_not_reopen_it_after_a_colleague_resolved_it(
    program: Program, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conflict's page has a Save button, but nothing on it is editable: saving wrote the
    whole row back as it was read, so a resolution committed meanwhile was undone (open
    again, with the device's value already in the record)."""
    day = workday(program)
    client = sign_in_to_admin(Client(), day.case_manager)
    colleague = staff(make_crew_member(program, role=Role.CASE_MANAGER).user)
    conflict_admin = type(admin.site._registry[Conflict])
    read = conflict_admin.get_object

    def read_then_resolved_by_a_colleague(self: Any, request: Any, object_id: str, from_field: Any = None) -> Any:
        found = read(self, request, object_id, from_field)
        if request.method == "POST":
            sync_services.conflict_resolve(
                conflict=day.conflict, choice="device", resolved_by=colleague, accessor=in_the_admin(colleague)
            )
        return found

    monkeypatch.setattr(conflict_admin, "get_object", read_then_resolved_by_a_colleague)

    client.post(change_url(Conflict, day.conflict.pk), {"_save": "Save"})

    conflict = Conflict.objects.get(pk=day.conflict.pk)
    assert (conflict.resolved_by, conflict.resolution) == (colleague, "Take the device's value")
    assert Encounter.objects.get(pk=conflict.record_id).assessment == "Calm."


def test_opening_and_listing_health_records_in_the_admin_is_audited(program: Program) -> None:
    from apps.audit.models import AuditEvent

    day = workday(program)
    client = sign_in_to_admin(Client(), day.case_manager)
    encounter = Encounter.objects.filter(program=program).first()
    assert encounter is not None

    opened = client.get(change_url(Encounter, encounter.pk))
    listed = client.get(changelist_url(FollowUpStep))

    assert (opened.status_code, listed.status_code) == (200, 200)
    admin_reads = AuditEvent.objects.filter(channel="admin", action="read", actor_id=day.case_manager.pk)
    assert admin_reads.filter(record_type="care.encounter", record_id=encounter.pk).count() == 1
    listed_steps = set(admin_reads.filter(record_type="followups.step").values_list("record_id", flat=True))
    assert listed_steps == set(FollowUpStep.objects.filter(program=program).values_list("pk", flat=True))


def test_admin_pages_of_other_records_leave_no_audit_event(program: Program) -> None:
    from apps.audit.models import AuditEvent

    day = workday(program)
    client = sign_in_to_admin(Client(), day.case_manager)

    # Incidents are health information too (callback numbers, addresses); units are not.
    client.get(changelist_url(Unit))

    assert not AuditEvent.objects.filter(channel="admin").exists()


def test_a_supervisor_applies_a_quarantined_change_again_from_the_admin(program: Program) -> None:
    crew = make_crew_member(program)
    record_id = encounter(crew, assessment="as first written")
    device = SimDevice(crew)
    revoke_device(crew)  # the tablet hands over its outbox: kept, not applied
    device.push(device.mutation("update", "care.encounter", record_id, {"assessment": "Written offline."}, 1))
    kept = Mutation.objects.get(record_id=record_id, status=MutationStatus.QUARANTINED)
    supervisor_user = staff(make_crew_member(program, role=Role.SUPERVISOR).user)
    supervisor = sign_in_to_admin(Client(), supervisor_user)
    manager = sign_in_to_admin(Client(), staff(make_crew_member(program, role=Role.CASE_MANAGER).user))
    apply_again = {"action": "apply_again", "_selected_action": [str(kept.pk)]}

    page = supervisor.get(change_url(Mutation, kept.pk))
    manager.post(changelist_url(Mutation), apply_again)  # reads it, may not release it
    still_kept = Mutation.objects.get(pk=kept.pk).status
    supervisor.post(changelist_url(Mutation), apply_again)

    assert page.status_code == 200 and "Written offline." in page.content.decode()
    assert still_kept == MutationStatus.QUARANTINED
    assert Encounter.objects.get(pk=record_id).assessment == "Written offline."
    assert Mutation.objects.get(pk=kept.pk).status == MutationStatus.APPLIED
    assert list(supervisor.get(changelist_url(Mutation)).context["cl"].result_list) == []  # out of the queue
    # Opening it read the encounter's data as the device sent it; applying it wrote the encounter.
    supervisors_access = AuditEvent.objects.filter(actor_id=supervisor_user.pk, record_id=record_id, channel="admin")
    assert set(supervisors_access.values_list("action", flat=True)) == {"read", "update"}


def test_a_supervisor_moves_an_encounter_to_another_unit_and_no_one_else_can(program: Program) -> None:
    crew = make_crew_member(program)
    record_id = encounter(crew)
    new_unit = Unit.objects.create(program=program, call_sign="MC-9")
    foreign_unit = Unit.objects.create(program=ProgramFactory.create(), call_sign="XX-1")
    supervisor_user = staff(make_crew_member(program, role=Role.SUPERVISOR).user)
    supervisor = sign_in_to_admin(Client(), supervisor_user)
    manager = sign_in_to_admin(Client(), staff(make_crew_member(program, role=Role.CASE_MANAGER).user))
    move = {"action": "move_to_unit", "_selected_action": [str(record_id)]}

    by_manager = manager.post(changelist_url(Encounter), {**move, "unit": str(new_unit.pk)}, follow=True)
    unit_after_manager = Encounter.objects.get(pk=record_id).unit_id
    to_foreign = supervisor.post(changelist_url(Encounter), {**move, "unit": str(foreign_unit.pk)}, follow=True)
    to_nothing = supervisor.post(changelist_url(Encounter), {**move, "unit": "not-an-id"}, follow=True)
    unit_after_refusals = Encounter.objects.get(pk=record_id).unit_id
    page = supervisor.get(changelist_url(Encounter))
    supervisor.post(changelist_url(Encounter), {**move, "unit": str(new_unit.pk)})

    assert unit_after_manager == unit_after_refusals == crew.unit.pk
    assert "Only a supervisor" in by_manager.content.decode()
    assert "Choose a unit of your programs" in to_foreign.content.decode()
    assert to_nothing.status_code == 200  # not a unit at all: the admin's own form refuses it
    offered = list(page.context["action_form"].fields["unit"].queryset)
    assert new_unit in offered and foreign_unit not in offered
    assert Encounter.objects.get(pk=record_id).unit_id == new_unit.pk
    written = AuditEvent.objects.filter(record_id=record_id, channel="admin", action="update")
    assert list(written.values_list("actor_id", flat=True)) == [supervisor_user.pk]


def test_a_supervisor_sets_a_quarantined_change_aside_from_the_admin_saying_why(program: Program) -> None:
    crew = make_crew_member(program)
    record_id = encounter(crew, assessment="as first written")
    device = SimDevice(crew)
    revoke_device(crew)
    device.push(device.mutation("update", "care.encounter", record_id, {"assessment": "Written offline."}, 1))
    kept = Mutation.objects.get(record_id=record_id, status=MutationStatus.QUARANTINED)
    supervisor_user = staff(make_crew_member(program, role=Role.SUPERVISOR).user)
    supervisor = sign_in_to_admin(Client(), supervisor_user)
    manager = sign_in_to_admin(Client(), staff(make_crew_member(program, role=Role.CASE_MANAGER).user))
    set_aside = {"action": "set_aside", "_selected_action": [str(kept.pk)], "reason": "Made on the wrong person"}

    manager.post(changelist_url(Mutation), set_aside)  # reads it, may not set it aside
    untouched = Mutation.objects.get(pk=kept.pk).dismissed_at
    without_reason = supervisor.post(changelist_url(Mutation), {**set_aside, "reason": ""}, follow=True)
    still_waiting = Mutation.objects.get(pk=kept.pk).dismissed_at
    supervisor.post(changelist_url(Mutation), set_aside)

    assert untouched is None and still_waiting is None
    assert "Say why" in without_reason.content.decode()
    stored = Mutation.objects.get(pk=kept.pk)
    assert (stored.dismissed_by, stored.dismiss_reason, stored.dismiss_code) == (
        supervisor_user,
        "Made on the wrong person",
        "reviewed",
    )
    assert list(supervisor.get(changelist_url(Mutation)).context["cl"].result_list) == []  # out of the queue
    assert list(supervisor.get(f"{changelist_url(Mutation)}?set_aside=reviewed").context["cl"].result_list) == [stored]
    assert list(supervisor.get(f"{changelist_url(Mutation)}?set_aside=superseded").context["cl"].result_list) == []
    assert "Made on the wrong person" in supervisor.get(change_url(Mutation, kept.pk)).content.decode()
    assert Encounter.objects.get(pk=record_id).assessment == "as first written"


def test_a_supervisor_reads_the_creates_the_server_set_aside_as_superseded(program: Program) -> None:
    """A tablet's refused encounter, and the note kept under it, sent again fixed: the server
    set the kept creates aside as superseded, in that push, before any supervisor read them.
    They leave the queue, and a supervisor reads them, with why, through the filter."""
    crew = make_crew_member(program)
    device = SimDevice(crew)
    encounter_id, note_id = uuid.uuid4(), uuid.uuid4()
    refused = device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew, started_at=12))
    note = device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Calm."})
    device.push(refused, note)
    device.push(
        device.mutation("create", "care.encounter", encounter_id, encounter_fields(crew)),
        device.mutation("create", "care.note", note_id, {"encounter_id": str(encounter_id), "body": "Calm; plan."}),
    )
    kept = list(Mutation.objects.filter(status=MutationStatus.QUARANTINED).order_by("pk"))
    supervisor = sign_in_to_admin(Client(), staff(make_crew_member(program, role=Role.SUPERVISOR).user))

    superseded = supervisor.get(f"{changelist_url(Mutation)}?set_aside=superseded").context["cl"].result_list
    page = supervisor.get(change_url(Mutation, kept[1].pk))

    assert [(row.record_id, row.dismiss_code) for row in kept] == [
        (encounter_id, "superseded"),
        (note_id, "superseded"),
    ]
    assert list(supervisor.get(changelist_url(Mutation)).context["cl"].result_list) == []
    assert sorted(superseded, key=lambda row: row.pk) == kept
    assert page.status_code == 200
    assert "Superseded: this device sent the record&#x27;s create again" in page.content.decode()
    assert f"The same device&#x27;s create #{kept[1].superseded_by_id}, mutation_id" in page.content.decode()


def test_the_audit_trail_is_for_superusers_only_not_the_programs_staff(program: Program) -> None:
    """Who read which health record is itself the superusers' to read: a case manager,
    supervisor or administrator of the program sees no page of the trail, not even the
    events of their own program."""
    day = workday(program)
    manager = sign_in_to_admin(Client(), day.case_manager)
    step = next(step for step in day.steps if step.status == StepStatus.PENDING)
    manager.post(changelist_url(FollowUpStep), {"action": "mark_completed", "_selected_action": [str(step.pk)]})
    own = AuditEvent.objects.filter(program_id=program.pk, record_id=step.pk).first()
    assert own is not None
    administrator = staff(make_crew_member(program, role=Role.ADMINISTRATOR).user)
    superuser = sign_in_to_admin(Client(), UserFactory.create(is_staff=True, is_superuser=True))

    for user in (day.case_manager, day.supervisor, administrator):
        client = sign_in_to_admin(Client(), user)
        assert client.get(changelist_url(AuditEvent)).status_code == 403, user
        # Not theirs to look up at all: answered as for an event that does not exist.
        assert client.get(change_url(AuditEvent, own.pk)).status_code in (403, 404), user
        assert "audit/auditevent" not in client.get("/admin/").content.decode(), user
    assert superuser.get(change_url(AuditEvent, own.pk)).status_code == 200


def test_records_shown_inline_on_a_change_page_are_audited_as_read(program: Program) -> None:
    """An encounter's page shows its notes' text, a referral's its outcomes' details, a step's
    its contact attempts' notes: each shown record is read, not only the page's own."""
    work = casework(workday(program))
    manager = work.day.case_manager
    step = work.overdue_step()
    attempt = followup_services.attempt_record(
        step=step,
        actor=manager,
        method="phone",
        result="no_answer",
        notes="Left a voicemail.",
        attempted_at=timezone.now(),
        accessor=in_the_admin(manager),
    )
    outcome = care_services.referral_outcome_record(
        referral=Referral.objects.get(pk=work.referral_id),
        outcome="scheduled",
        observed_at=timezone.now(),
        details="Intake on Monday.",
        actor=manager,
        accessor=in_the_admin(manager),
    )
    user = UserFactory.create(is_staff=True, is_superuser=True)  # sees every inline
    client = sign_in_to_admin(Client(), user)

    pages = [
        (change_url(Encounter, work.encounter_id), "Calm on arrival.", ("care.note", work.note_id)),
        (change_url(Referral, work.referral_id), "Intake on Monday.", ("care.referral_outcome", outcome.pk)),
        (change_url(FollowUpStep, step.pk), "Left a voicemail.", ("followups.contact_attempt", attempt.pk)),
    ]
    for url, shown, (record_type, record_id) in pages:
        assert shown in client.get(url).content.decode(), url
        reads = AuditEvent.objects.filter(channel="admin", action="read", actor_id=user.pk, record_type=record_type)
        assert list(reads.values_list("record_id", flat=True)) == [record_id], url


def test_records_found_through_the_admins_autocomplete_are_audited_as_read(program: Program) -> None:
    """The autocomplete answers any admin's search (an encounter by the person's name, a
    referral by their phone number) with the records found: finding them is reading them, as
    the same search on the list is."""
    work = casework(workday(program))
    client = sign_in_to_admin(Client(), work.day.case_manager)

    found = client.get(
        "/admin/autocomplete/",
        {"app_label": "care", "model_name": "clinicalnote", "field_name": "encounter", "term": "Rosa"},
    )

    assert found.status_code == 200
    assert [result["id"] for result in found.json()["results"]] == [str(work.encounter_id)]
    reads = AuditEvent.objects.filter(channel="admin", action="read", actor_id=work.day.case_manager.pk)
    assert list(reads.values_list("record_type", "record_id")) == [("care.encounter", work.encounter_id)]


def test_moving_an_encounter_audits_every_record_that_moved_with_it(program: Program) -> None:
    """Its notes and referrals go with the encounter to the new unit (written, and sent to the
    new unit's devices): each is a write of the supervisor's in the audit trail."""
    work = casework(workday(program))
    new_unit = Unit.objects.create(program=program, call_sign="MC-9")
    supervisor = sign_in_to_admin(Client(), work.day.supervisor)

    supervisor.post(
        changelist_url(Encounter),
        {"action": "move_to_unit", "_selected_action": [str(work.encounter_id)], "unit": str(new_unit.pk)},
    )

    assert Encounter.objects.get(pk=work.encounter_id).unit_id == new_unit.pk
    written = AuditEvent.objects.filter(channel="admin", action="update", actor_id=work.day.supervisor.pk)
    assert set(written.values_list("record_type", "record_id")) >= {
        ("care.encounter", work.encounter_id),
        ("care.note", work.note_id),
        ("care.referral", work.referral_id),
    }


def test_moving_an_encounter_to_the_unit_it_is_in_writes_nothing(program: Program) -> None:
    """A selection that takes in encounters already in the chosen unit: those do not move, so
    nothing of theirs is written again, sent again to the unit's devices, or audited as moved."""
    work = casework(workday(program))
    here = Encounter.objects.get(pk=work.encounter_id).unit
    versions = dict(SyncedRecord.objects.values_list("record_id", "version"))
    supervisor = sign_in_to_admin(Client(), work.day.supervisor)

    answer = supervisor.post(
        changelist_url(Encounter),
        {"action": "move_to_unit", "_selected_action": [str(work.encounter_id)], "unit": str(here.pk)},
        follow=True,
    )

    assert "already" in answer.content.decode()
    assert "Moved 1" not in answer.content.decode()
    assert dict(SyncedRecord.objects.values_list("record_id", "version")) == versions
    assert not AuditEvent.objects.filter(channel="admin", action="update").exists()


def test_moving_an_encounter_audits_its_follow_up_steps_that_moved_with_it(program: Program) -> None:
    """The follow-up's steps take the encounter's new unit (the new crew works them): each is
    a health record written by the move, a write of the supervisor's in the audit trail."""
    work = casework(workday(program))
    new_unit = Unit.objects.create(program=program, call_sign="MC-9")
    supervisor = sign_in_to_admin(Client(), work.day.supervisor)

    supervisor.post(
        changelist_url(Encounter),
        {"action": "move_to_unit", "_selected_action": [str(work.encounter_id)], "unit": str(new_unit.pk)},
    )

    steps = FollowUpStep.objects.filter(pk__in=[step.pk for step in work.steps])
    assert set(steps.values_list("unit_id", flat=True)) == {new_unit.pk}
    written = AuditEvent.objects.filter(
        channel="admin", action="update", actor_id=work.day.supervisor.pk, record_type="followups.step"
    )
    assert set(written.values_list("record_id", "program_id")) == {(step.pk, program.pk) for step in work.steps}


def test_taking_a_devices_text_of_a_note_signed_since_in_the_admin_adds_an_addendum_and_audits_it(
    program: Program,
) -> None:
    from apps.care.models import ClinicalNote
    from tests.sync.test_conflict_resolve import conflict_on_note_body

    clinician = make_crew_member(program)
    conflict = conflict_on_note_body(clinician)
    pushed(clinician, "care.note", {"signed_at": now_iso()}, op="update", record_id=conflict.record_id, base_version=2)
    manager = staff(make_crew_member(program, role=Role.CASE_MANAGER).user)
    client = sign_in_to_admin(Client(), manager)

    client.post(changelist_url(Conflict), {"action": "take_device_value", "_selected_action": [str(conflict.pk)]})

    assert Conflict.objects.get(pk=conflict.pk).resolved_by == manager
    addendum = ClinicalNote.objects.get(amends_id=conflict.record_id)
    assert addendum.body == "Seen at home; voices, no plan."
    writes = AuditEvent.objects.filter(channel="admin", actor_id=manager.pk).exclude(action="read")
    assert set(writes.values_list("action", "record_type", "record_id")) == {
        ("update", "care.note", conflict.record_id),
        ("create", "care.note", addendum.pk),
    }


def test_a_delete_that_met_an_edit_is_carried_out_from_the_admin_and_audited_as_a_delete(program: Program) -> None:
    from tests.sync.test_conflict_resolve import conflict_of_a_delete_meeting_an_edit

    conflict = conflict_of_a_delete_meeting_an_edit(make_crew_member(program))
    manager = staff(make_crew_member(program, role=Role.CASE_MANAGER).user)
    client = sign_in_to_admin(Client(), manager)

    client.post(changelist_url(Conflict), {"action": "take_device_value", "_selected_action": [str(conflict.pk)]})

    assert Conflict.objects.get(pk=conflict.pk).resolved_by == manager
    assert Encounter.objects.get(pk=conflict.record_id).is_deleted
    assert SyncedRecord.objects.get(record_id=conflict.record_id).is_deleted
    writes = AuditEvent.objects.filter(channel="admin", actor_id=manager.pk).exclude(action="read")
    assert list(writes.values_list("action", "record_type", "record_id")) == [
        ("delete", "care.encounter", conflict.record_id)
    ]


def test_a_devices_unit_taken_from_the_admin_moves_the_encounter_and_audits_what_moved_with_it(
    program: Program,
) -> None:
    from tests.sync.test_conflict_resolve import conflict_on_a_moved_encounters_unit

    clinician = make_crew_member(program)
    conflict = conflict_on_a_moved_encounters_unit(program, clinician)
    colleague = make_crew_member(program, role=Role.CASE_MANAGER)
    note = pushed(colleague, "care.note", {"encounter_id": str(conflict.record_id), "body": "Called."})
    assert note["status"] == "applied", note
    supervisor = staff(make_crew_member(program, role=Role.SUPERVISOR).user)
    client = sign_in_to_admin(Client(), supervisor)

    client.post(changelist_url(Conflict), {"action": "take_device_value", "_selected_action": [str(conflict.pk)]})

    assert Conflict.objects.get(pk=conflict.pk).resolved_by == supervisor
    assert Encounter.objects.get(pk=conflict.record_id).unit_id == clinician.unit.pk
    writes = AuditEvent.objects.filter(channel="admin", actor_id=supervisor.pk).exclude(action="read")
    assert set(writes.values_list("action", "record_type", "record_id")) == {
        ("update", "care.encounter", conflict.record_id),
        ("update", "care.note", uuid.UUID(note["id"])),
    }


def _updates_by(user: User) -> dict[tuple[str, uuid.UUID], int]:
    """How many update events of the user's each record has in the audit trail."""
    updates: dict[tuple[str, uuid.UUID], int] = {}
    for key in AuditEvent.objects.filter(actor_id=user.pk, action="update").values_list("record_type", "record_id"):
        updates[key] = updates.get(key, 0) + 1
    return updates


def test_moving_an_encounter_from_the_admin_audits_each_record_that_moved_once(program: Program) -> None:
    """The encounter, its note, referral and outcome, its follow-up's plan, steps and contact attempt:
    each moved is one write of the supervisor's in the audit trail, with the program's id."""
    work = casework(workday(program))
    outcome = pushed(
        work.day.crew,
        "care.referral_outcome",
        {"referral_id": str(work.referral_id), "outcome": "scheduled", "observed_at": now_iso()},
    )
    assert outcome["status"] == "applied", outcome
    attempt = {"step_id": str(work.steps[0].pk), "method": "phone", "result": "reached", "attempted_at": now_iso()}
    contact = pushed(work.day.crew, "followups.contact_attempt", attempt)
    assert contact["status"] == "applied", contact
    new_unit = Unit.objects.create(program=program, call_sign="MC-9")
    supervisor = sign_in_to_admin(Client(), work.day.supervisor)

    supervisor.post(
        changelist_url(Encounter),
        {"action": "move_to_unit", "_selected_action": [str(work.encounter_id)], "unit": str(new_unit.pk)},
    )

    assert Encounter.objects.get(pk=work.encounter_id).unit_id == new_unit.pk
    assert _updates_by(work.day.supervisor) == {
        ("care.encounter", work.encounter_id): 1,
        ("care.note", work.note_id): 1,
        ("care.referral", work.referral_id): 1,
        ("care.referral_outcome", uuid.UUID(outcome["id"])): 1,
        ("followups.contact_attempt", uuid.UUID(contact["id"])): 1,
        ("followups.plan", work.steps[0].plan_id): 1,
        **{("followups.step", step.pk): 1 for step in work.steps},
    }
    written = AuditEvent.objects.filter(actor_id=work.day.supervisor.pk, action="update")
    assert set(written.values_list("channel", "program_id")) == {("admin", program.pk)}


def test_a_devices_unit_taken_from_the_admin_audits_each_record_that_moved_once_its_steps_too(
    program: Program,
) -> None:
    """Taking a device's unit of an encounter moves it back with everything under it, as the
    move action does: its follow-up's steps too, each one write of the resolver's."""
    from tests.followups.factories import referral, steps_of

    clinician = make_crew_member(program)
    referral_id = referral(clinician)
    encounter_id = Referral.objects.get(pk=referral_id).encounter_id
    mover = make_crew_member(program, role=Role.SUPERVISOR).user
    care_services.encounter_reassign(
        encounter=Encounter.objects.get(pk=encounter_id),
        unit=Unit.objects.create(program=program, call_sign="MC-9"),
        actor=mover,
        accessor=in_the_admin(mover),
    )
    tablet = make_crew_member(program, role=Role.CASE_MANAGER)
    sent = pushed(tablet, "care.encounter", {"unit_id": str(clinician.unit.pk)}, op="update", record_id=encounter_id)
    assert sent["status"] == "conflict", sent
    conflict = Conflict.objects.get(record_id=encounter_id, field="unit_id")
    supervisor = staff(make_crew_member(program, role=Role.SUPERVISOR).user)
    client = sign_in_to_admin(Client(), supervisor)

    client.post(changelist_url(Conflict), {"action": "take_device_value", "_selected_action": [str(conflict.pk)]})

    steps = steps_of(referral_id)
    assert {step.unit_id for step in steps} == {clinician.unit.pk}
    assert _updates_by(supervisor) == {
        ("care.encounter", encounter_id): 1,
        ("care.referral", referral_id): 1,
        ("followups.plan", steps[0].plan_id): 1,
        **{("followups.step", step.pk): 1 for step in steps},
    }


def test_a_delete_that_met_an_edit_shows_the_edit_and_links_the_record_on_the_conflicts_page(program: Program) -> None:
    """The case manager decides whether the delete stands over an edit its device had not
    seen: the page shows that edit and leads to the record; opening it reads the record once.
    The list shows no value, as for every conflict."""
    from tests.sync.test_conflict_resolve import conflict_of_a_delete_meeting_an_edit

    conflict = conflict_of_a_delete_meeting_an_edit(make_crew_member(program))
    manager = staff(make_crew_member(program, role=Role.CASE_MANAGER).user)
    client = sign_in_to_admin(Client(), manager)

    page = client.get(change_url(Conflict, conflict.pk)).content.decode()
    listed = client.get(changelist_url(Conflict)).content.decode()

    assert (conflict.kind, conflict.field) == ("delete_vs_edit", "")
    assert "Calm; lives alone." in page
    assert f'href="{change_url(Encounter, conflict.record_id)}"' in page
    assert "Calm; lives alone." not in listed
    reads = AuditEvent.objects.filter(actor_id=manager.pk, action="read").order_by("occurred_at")
    assert list(reads.values_list("record_type", "record_id")) == [("care.encounter", conflict.record_id)] * 2


def test_an_edit_that_met_a_delete_shows_the_devices_whole_edit_and_links_the_record(program: Program) -> None:
    """Each field the device changed is a conflict of its own; each page shows the whole edit
    the device sent, what the case manager weighs against the deletion."""
    clinician = make_crew_member(program)
    teammate = make_crew_member(program, unit=clinician.unit)
    record_id = encounter(clinician, assessment="Calm.")
    pushed(teammate, "care.encounter", {}, op="delete", record_id=record_id, base_version=1)
    edit = {"assessment": "Calm; safety plan made.", "disposition": "referred"}
    sent = pushed(clinician, "care.encounter", edit, op="update", record_id=record_id, base_version=1)
    assert sent["status"] == "conflict", sent
    conflict = Conflict.objects.get(record_id=record_id, field="disposition")
    manager = staff(make_crew_member(program, role=Role.CASE_MANAGER).user)
    client = sign_in_to_admin(Client(), manager)

    page = client.get(change_url(Conflict, conflict.pk)).content.decode()

    assert conflict.kind == "edit_vs_delete"
    assert "Calm; safety plan made." in page
    assert f'href="{change_url(Encounter, record_id)}"' in page
    reads = AuditEvent.objects.filter(actor_id=manager.pk, action="read")
    assert list(reads.values_list("record_type", "record_id")) == [("care.encounter", record_id)]


def test_a_conflict_on_a_note_links_the_page_that_shows_it_its_encounters(program: Program) -> None:
    """A note has no page of its own: it is shown on its encounter's, where the link leads."""
    from apps.care.models import ClinicalNote
    from tests.sync.test_conflict_resolve import second_device_of

    clinician = make_crew_member(program)
    encounter_id = encounter(clinician)
    note_id = uuid.uuid4()
    pushed(clinician, "care.note", {"encounter_id": str(encounter_id), "body": "Draft."}, record_id=note_id)
    pushed(clinician, "care.note", {"body": "Seen at home."}, op="update", record_id=note_id, base_version=1)
    deleted = pushed(second_device_of(clinician), "care.note", {}, op="delete", record_id=note_id, base_version=1)
    assert deleted["status"] == "conflict", deleted
    conflict = Conflict.objects.get(record_id=note_id)
    client = sign_in_to_admin(Client(), staff(make_crew_member(program, role=Role.CASE_MANAGER).user))

    page = client.get(change_url(Conflict, conflict.pk)).content.decode()

    assert ClinicalNote.objects.get(pk=note_id).encounter_id == encounter_id
    assert "Seen at home." in page
    assert f'href="{change_url(Encounter, encounter_id)}"' in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["mark_completed", "reassign", "reschedule"])
def test_a_bulk_step_action_whose_write_cannot_be_audited_writes_nothing(program: Program, action: str) -> None:
    """The step's write and its audit row commit together: when the audit trail refuses the
    row, the step is as it was (P8: no write of health information without who wrote it)."""
    seed_default_triage_policy()  # seeded by a migration, emptied between transactional tests
    day = workday(program)
    client = sign_in_to_admin(Client(), day.case_manager)
    step = next(step for step in day.steps if step.status == StepStatus.PENDING)
    colleague = case_manager(day.crew, of_program=False).user
    later = timezone.localtime(timezone.now() + dt.timedelta(days=2))
    form = {
        "mark_completed": {},
        "reassign": {"owner": str(colleague.pk)},
        "reschedule": {"due_at": later.strftime("%Y-%m-%dT%H:%M"), "reason": "Asked for a later call."},
    }[action]
    before = FollowUpStep.objects.get(pk=step.pk)
    events_before = before.events.count()
    with (
        audit_trail_refusing("update", "followups.step"),
        pytest.raises(DatabaseError, match="audit trail unavailable"),
    ):
        client.post(changelist_url(FollowUpStep), {"action": action, "_selected_action": [str(step.pk)], **form})

    after = FollowUpStep.objects.get(pk=step.pk)
    assert (after.status, after.owner_id, after.due_at) == (before.status, before.owner_id, before.due_at)
    assert after.events.count() == events_before


def test_moving_an_encounter_audits_its_referrals_task_events_and_its_follow_up_plan(program: Program) -> None:
    """A referral's task events (a service's reason, often clinical) and the follow-up plan
    (whose follow-up, after which encounter) take the encounter's new unit too: each is a
    write of the mover's in the audit trail, once."""
    from apps.care.models import ReferralTaskEvent
    from apps.followups.models import FollowUpPlan

    work = casework(workday(program))
    event = care_services.referral_task_status_change(
        referral=Referral.objects.get(pk=work.referral_id),
        to_status="rejected",
        reason="Beds full.",
        actor=work.day.case_manager,
        accessor=in_the_admin(work.day.case_manager),
    )
    plan = FollowUpPlan.objects.get(encounter_id=work.encounter_id)
    new_unit = Unit.objects.create(program=program, call_sign="MC-9")
    supervisor = sign_in_to_admin(Client(), work.day.supervisor)

    supervisor.post(
        changelist_url(Encounter),
        {"action": "move_to_unit", "_selected_action": [str(work.encounter_id)], "unit": str(new_unit.pk)},
    )

    assert ReferralTaskEvent.objects.get(pk=event.pk).unit_id == new_unit.pk
    assert FollowUpPlan.objects.get(pk=plan.pk).unit_id == new_unit.pk
    written = AuditEvent.objects.filter(channel="admin", action="update", actor_id=work.day.supervisor.pk)
    assert sorted(written.filter(record_type="care.referral_task_event").values_list("record_id", "program_id")) == [
        (event.pk, program.pk)
    ]
    assert sorted(written.filter(record_type="followups.plan").values_list("record_id", "program_id")) == [
        (plan.pk, program.pk)
    ]
