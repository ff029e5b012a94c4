from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import Program, Role
from tests.conftest import CrewMember, make_crew_member
from tests.teams.factories import ZoneFactory

pytestmark = pytest.mark.django_db


def test_crew_member_sees_only_their_own_unit(
    api_client: APIClient, crew_member: CrewMember, outsider: CrewMember
) -> None:
    response = crew_member.client().get("/api/v1/units/")

    assert response.status_code == 200
    assert [unit["id"] for unit in response.json()["results"]] == [str(crew_member.unit.pk)]


def test_outsider_gets_404_for_another_units_detail(
    api_client: APIClient, crew_member: CrewMember, outsider: CrewMember
) -> None:
    response = outsider.client().get(f"/api/v1/units/{crew_member.unit.pk}/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_dispatcher_sees_every_unit_of_their_program_only(
    api_client: APIClient,
    program: Program,
    crew_member: CrewMember,
    outsider: CrewMember,
    foreign_dispatcher: CrewMember,
) -> None:
    dispatcher = make_crew_member(program, role=Role.DISPATCHER)

    response = dispatcher.client().get("/api/v1/units/")

    listed = {unit["id"] for unit in response.json()["results"]}
    assert listed == {str(crew_member.unit.pk), str(outsider.unit.pk), str(dispatcher.unit.pk)}
    assert str(foreign_dispatcher.unit.pk) not in listed


def test_foreign_dispatcher_sees_nothing_of_this_program(
    api_client: APIClient, program: Program, crew_member: CrewMember, foreign_dispatcher: CrewMember
) -> None:
    ZoneFactory.create(program=program, code="PCT-025")

    units = foreign_dispatcher.client().get("/api/v1/units/").json()["results"]
    zones = foreign_dispatcher.client().get("/api/v1/zones/").json()["results"]
    detail = foreign_dispatcher.client().get(f"/api/v1/units/{crew_member.unit.pk}/")

    assert [unit["id"] for unit in units] == [str(foreign_dispatcher.unit.pk)]
    assert zones == []
    assert detail.status_code == 404


def test_unit_list_is_paginated(api_client: APIClient, program: Program) -> None:
    dispatcher = make_crew_member(program, role=Role.DISPATCHER)
    for _ in range(3):
        make_crew_member(program)

    response = dispatcher.client().get("/api/v1/units/?page_size=2")

    body = response.json()
    assert body["count"] == 4
    assert len(body["results"]) == 2
    assert body["next"] is not None


def test_malformed_unit_id_is_404(api_client: APIClient, crew_member: CrewMember) -> None:
    response = crew_member.client().get("/api/v1/units/not-a-uuid/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
