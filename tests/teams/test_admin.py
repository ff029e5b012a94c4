from __future__ import annotations

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
