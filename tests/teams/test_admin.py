from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.test import Client

from apps.accounts.models import Program
from apps.teams.models import Unit
from tests.accounts.factories import ProgramFactory
from tests.admin_pages import resubmitted
from tests.conftest import CrewMember


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
