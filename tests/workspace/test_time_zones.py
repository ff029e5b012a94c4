"""The workspace shows and reads times on the clock of the program the case manager works in,
and says which clock that is: a call planned for "2 p.m." is 2 p.m. where the person lives."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from apps.accounts.models import Program, Role, User
from apps.care.models import Encounter
from apps.directory.models import Service
from apps.followups.models import FollowUpStep
from tests.accounts.factories import MembershipFactory, ProgramFactory, UserFactory
from tests.care.factories import encounter
from tests.conftest import make_crew_member, sign_in_to_admin
from tests.followups.factories import case_manager, referral, steps_of
from tests.workspace.scenario import staff
from tests.workspace.test_admin import change_url, changelist_url

# 19:00 UTC on a December day: 2 p.m. in New York (EST), noon in Denver (MST).
DUE = dt.datetime(2026, 12, 10, 19, 0, tzinfo=dt.UTC)
SHOWN_IN_NEW_YORK = "Dec. 10, 2026, 2 p.m."
SHOWN_IN_DENVER = "Dec. 10, 2026, noon"
SHOWN_IN_UTC = "Dec. 10, 2026, 7 p.m."


def a_step_due_at(program: Program, due_at: dt.datetime) -> tuple[FollowUpStep, User]:
    crew = make_crew_member(program)
    manager = staff(case_manager(crew).user)
    step = steps_of(referral(crew))[0]
    FollowUpStep.objects.filter(pk=step.pk).update(due_at=due_at)
    return step, manager


def test_a_new_york_case_manager_reads_a_due_time_on_new_yorks_clock_and_is_told_so(program: Program) -> None:
    assert program.time_zone == "America/New_York"
    step, manager = a_step_due_at(program, DUE)
    client = sign_in_to_admin(Client(), manager)

    listed = client.get(changelist_url(FollowUpStep)).content.decode()
    opened = client.get(change_url(FollowUpStep, step.pk)).content.decode()

    for page in (listed, opened):
        assert SHOWN_IN_NEW_YORK in page
        assert SHOWN_IN_UTC not in page
        assert 'id="workspace-time-zone">America/New_York<' in page
        # The admin's own scripts compare the browser's clock with the page's.
        assert 'data-admin-utc-offset="-18000"' in page


def test_a_time_typed_into_an_admin_form_is_read_on_the_programs_clock(program: Program) -> None:
    administrator = staff(make_crew_member(program, role=Role.ADMINISTRATOR).user)
    administrator.user_permissions.add(Permission.objects.get(codename="add_service"))
    client = sign_in_to_admin(Client(), administrator)

    response = client.post(
        reverse("admin:directory_service_add"),
        {
            "program": str(program.pk),
            "name": "Harlem Respite",
            "service_type": "crisis_stabilisation",
            "languages": "",
            "capacity_available": "3",
            "capacity_total": "8",
            "capacity_updated_at_0": "2026-12-10",
            "capacity_updated_at_1": "14:00",
            "is_active": "on",
            "hours-TOTAL_FORMS": "0",
            "hours-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.content.decode()
    assert Service.objects.get(name="Harlem Respite").capacity_updated_at == DUE


def test_a_case_manager_of_programs_on_several_clocks_reads_the_first_programs_by_name_and_is_told_which(
    program: Program,
) -> None:
    step, manager = a_step_due_at(program, DUE)  # B-HEARD Harlem, New York
    denver = ProgramFactory.create(slug="aurora-start", name="Aurora STAR", time_zone="America/Denver")
    MembershipFactory.create(user=manager, program=denver, role=Role.CASE_MANAGER)
    client = sign_in_to_admin(Client(), manager)

    listed = client.get(changelist_url(FollowUpStep)).content.decode()

    assert SHOWN_IN_DENVER in listed
    assert 'id="workspace-time-zone">America/Denver<' in listed
    # The step's timeline keeps the step's own program's clock, and says so.
    timeline = client.get(reverse("admin:followups_followupstep_timeline", args=[step.pk])).content.decode()
    assert SHOWN_IN_NEW_YORK in timeline
    assert 'id="workspace-time-zone">America/New_York<' in timeline


def test_a_user_of_no_program_reads_utc_and_is_told_so(program: Program) -> None:
    a_step_due_at(program, DUE)
    superuser = sign_in_to_admin(Client(), UserFactory.create(is_staff=True, is_superuser=True))

    listed = superuser.get(changelist_url(FollowUpStep)).content.decode()

    assert SHOWN_IN_UTC in listed
    assert 'id="workspace-time-zone">UTC<' in listed


def test_a_refused_move_names_the_encounter_by_its_local_start_time(program: Program) -> None:
    crew = make_crew_member(program)
    record_id = encounter(crew)
    Encounter.objects.filter(pk=record_id).update(started_at=DUE)
    new_unit = make_crew_member(program).unit
    manager = sign_in_to_admin(Client(), staff(make_crew_member(program, role=Role.CASE_MANAGER).user))

    refused = manager.post(
        changelist_url(Encounter),
        {"action": "move_to_unit", "_selected_action": [str(record_id)], "unit": str(new_unit.pk)},
        follow=True,
    ).content.decode()

    assert "2026-12-10 14:00: Only a supervisor" in refused


def test_a_programs_dashboard_names_that_programs_clock(program: Program) -> None:
    """The dashboard's days and hours are its program's: the page's header says so too."""
    supervisor = staff(make_crew_member(program, role=Role.SUPERVISOR).user)
    denver = ProgramFactory.create(slug="aurora-start", name="Aurora STAR", time_zone="America/Denver")
    MembershipFactory.create(user=supervisor, program=denver, role=Role.SUPERVISOR)
    client = sign_in_to_admin(Client(), supervisor)

    page = client.get(reverse("admin:dashboard"), {"program": program.slug})

    assert page.status_code == 200
    assert 'id="workspace-time-zone">America/New_York<' in page.content.decode()
