"""Add and change forms in the admin offer only the staff member's programs' records."""

from __future__ import annotations

from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from apps.accounts.models import Membership, Program, Role
from apps.followups.models import CaseManagerAssignment
from tests.accounts.factories import ProgramFactory
from tests.admin_pages import resubmitted
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


def test_an_inlines_choices_are_the_users_programs_too(program: Program) -> None:
    """The inlines of a change page (a user's memberships) are forms too: an administrator of
    the program who may change users cannot give one of them, themselves included, a role in
    another program by posting its id by hand, and so reach its records."""
    user = staff(make_crew_member(program, role=Role.ADMINISTRATOR).user)
    for codename in ("view_user", "change_user", "view_membership", "add_membership", "change_membership"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = sign_in_to_admin(Client(), user)
    elsewhere = ProgramFactory.create(slug="elsewhere")
    url = reverse("admin:accounts_user_change", args=[user.pk])

    page = client.get(url)
    memberships = next(
        inline.formset for inline in page.context["inline_admin_formsets"] if inline.formset.model is Membership
    )
    assert set(memberships.empty_form.fields["program"].queryset) == {program}

    data = resubmitted(page)
    prefix = memberships.prefix
    added = int(data[f"{prefix}-TOTAL_FORMS"])
    data |= {
        f"{prefix}-TOTAL_FORMS": str(added + 1),
        f"{prefix}-{added}-program": str(elsewhere.pk),
        f"{prefix}-{added}-role": Role.CASE_MANAGER,
        f"{prefix}-{added}-user": str(user.pk),
    }
    posted = client.post(url, data)

    assert posted.status_code == 200  # the form again, with the error on the inline
    assert not Membership.objects.filter(user=user, program=elsewhere).exists()


def test_an_inline_shows_only_the_users_programs_rows(program: Program) -> None:
    """A colleague who also works for another program: an administrator of this program sees
    (and may change or delete) only their membership of this program on their page."""
    user = staff(make_crew_member(program, role=Role.ADMINISTRATOR).user)
    for codename in ("view_user", "change_user", "view_membership", "change_membership", "delete_membership"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = sign_in_to_admin(Client(), user)
    colleague = make_crew_member(program, role=Role.CASE_MANAGER).user
    elsewhere = ProgramFactory.create(slug="elsewhere")
    theirs = Membership.objects.create(user=colleague, program=elsewhere, role=Role.SUPERVISOR)
    url = reverse("admin:accounts_user_change", args=[colleague.pk])

    page = client.get(url)
    memberships = next(
        inline.formset for inline in page.context["inline_admin_formsets"] if inline.formset.model is Membership
    )
    assert {form.instance.program for form in memberships.initial_forms} == {program}
    assert "Elsewhere" not in page.content.decode()

    saved = client.post(url, resubmitted(page))  # the page as shown saves, and leaves the other alone
    assert saved.status_code == 302
    assert Membership.objects.filter(pk=theirs.pk, role=Role.SUPERVISOR).exists()
