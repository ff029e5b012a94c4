"""Add and change forms in the admin offer only the staff member's programs' records."""

from __future__ import annotations

from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from apps.accounts.models import Program, Role
from apps.followups.models import CaseManagerAssignment
from tests.accounts.factories import ProgramFactory
from tests.conftest import make_crew_member, sign_in_to_admin
from tests.teams.factories import ZoneFactory
from tests.workspace.scenario import staff

ADD_URL = reverse("admin:followups_casemanagerassignment_add")


def supervisor_who_may_add_assignments(program: Program) -> Client:
    user = staff(make_crew_member(program, role=Role.SUPERVISOR).user)
    user.user_permissions.add(Permission.objects.get(codename="add_casemanagerassignment"))
    return sign_in_to_admin(Client(), user)


def test_the_add_form_offers_only_the_users_programs_records(program: Program) -> None:
    client = supervisor_who_may_add_assignments(program)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user
    ours = ZoneFactory.create(program=program)
    elsewhere = ProgramFactory.create(slug="elsewhere")
    theirs = ZoneFactory.create(program=elsewhere)
    their_manager = make_crew_member(elsewhere, role=Role.CASE_MANAGER).user

    form = client.get(ADD_URL).context["adminform"].form

    assert set(form.fields["program"].queryset) == {program}
    assert ours in form.fields["zone"].queryset and theirs not in form.fields["zone"].queryset
    people = set(form.fields["case_manager"].queryset)
    assert manager in people and their_manager not in people


def test_posting_another_programs_ids_is_a_form_error_and_saves_nothing(program: Program) -> None:
    client = supervisor_who_may_add_assignments(program)
    manager = make_crew_member(program, role=Role.CASE_MANAGER).user
    elsewhere = ProgramFactory.create(slug="elsewhere")
    theirs = ZoneFactory.create(program=elsewhere)
    their_manager = make_crew_member(elsewhere, role=Role.CASE_MANAGER).user

    foreign_program = client.post(ADD_URL, {"program": str(elsewhere.pk), "case_manager": str(manager.pk)})
    foreign_zone = client.post(
        ADD_URL, {"program": str(program.pk), "zone": str(theirs.pk), "case_manager": str(manager.pk)}
    )
    foreign_person = client.post(ADD_URL, {"program": str(program.pk), "case_manager": str(their_manager.pk)})

    assert foreign_program.status_code == 200
    assert "program" in foreign_program.context["adminform"].form.errors
    assert "zone" in foreign_zone.context["adminform"].form.errors
    assert "case_manager" in foreign_person.context["adminform"].form.errors
    assert not CaseManagerAssignment.objects.exists()

    # The same form with the program's own records saves: the errors above are the scoping.
    saved = client.post(ADD_URL, {"program": str(program.pk), "case_manager": str(manager.pk)})
    assert saved.status_code == 302
    assert CaseManagerAssignment.objects.get().case_manager == manager


def test_a_superuser_keeps_every_choice(superuser_client: Client, program: Program) -> None:
    elsewhere = ProgramFactory.create(slug="elsewhere")

    form = superuser_client.get(ADD_URL).context["adminform"].form

    assert {program, elsewhere} <= set(form.fields["program"].queryset)
