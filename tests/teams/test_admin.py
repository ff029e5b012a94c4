from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.test import Client

from apps.accounts.models import Program
from apps.teams.models import PastUnitMember, Unit, UnitMember
from tests.accounts.factories import ProgramFactory, UserFactory
from tests.admin_pages import resubmitted
from tests.conftest import CrewMember, make_crew_member


def test_a_units_program_is_not_changed_in_the_admin(
    superuser_client: Client, program: Program, crew_member: CrewMember
) -> None:
    """The unit's records stay its program's, and its scope tells who sees them: moved to
    another program, the unit served the first program's records to the new program's crews,
    and its former crew's open sockets went on receiving them."""
    other = ProgramFactory.create(slug="other", name="Other")
    change_url = f"/admin/teams/unit/{crew_member.unit.pk}/change/"

    response = superuser_client.post(change_url, {**resubmitted(superuser_client.get(change_url)), "program": other.pk})

    assert response.status_code == 302
    assert Unit.objects.get(pk=crew_member.unit.pk).program_id == program.pk


@pytest.mark.parametrize("how", ["save", "queryset update"])
def test_the_database_refuses_to_move_a_unit_to_another_program(
    program: Program, crew_member: CrewMember, how: str
) -> None:
    """Not only the admin: a shell, a script or a bulk update cannot move a unit either."""
    other = ProgramFactory.create(slug="other", name="Other")
    unit = Unit.objects.get(pk=crew_member.unit.pk)

    with pytest.raises(IntegrityError, match="stays in the program"), transaction.atomic():
        if how == "save":
            unit.program = other
            unit.save()
        else:
            Unit.objects.filter(pk=unit.pk).update(program=other)

    assert Unit.objects.get(pk=unit.pk).program_id == program.pk
    Unit.objects.filter(pk=unit.pk).update(call_sign="B-2")  # the unit's other columns still change
    assert Unit.objects.get(pk=unit.pk).call_sign == "B-2"


def test_who_leaves_a_crew_in_the_admin_keeps_their_spell_on_it(
    superuser_client: Client, program: Program, crew_member: CrewMember
) -> None:
    """A place deleted, or given to someone else: the spell of whoever held it is kept (what
    they recorded on the crew, offline, is still the crew's), and the new holder's starts now."""
    unit = crew_member.unit
    partner = make_crew_member(program, unit=unit)
    newcomer = UserFactory.create()
    joined = dict(UnitMember.objects.filter(unit=unit).values_list("user_id", "created_at"))
    change_url = f"/admin/teams/unit/{unit.pk}/change/"
    data = resubmitted(superuser_client.get(change_url))
    place = {data[f"memberships-{i}-user"][0]: i for i in range(2)}  # an autocomplete: a list
    data[f"memberships-{place[str(crew_member.user.pk)]}-DELETE"] = "on"
    data[f"memberships-{place[str(partner.user.pk)]}-user"] = [str(newcomer.pk)]

    response = superuser_client.post(change_url, data)

    assert response.status_code == 302
    assert set(PastUnitMember.objects.filter(unit=unit).values_list("user_id", "joined_at")) == {
        (crew_member.user.pk, joined[crew_member.user.pk]),
        (partner.user.pk, joined[partner.user.pk]),
    }
    assert UnitMember.objects.get(unit=unit, user=newcomer).created_at > joined[partner.user.pk]
