"""The service directory: search by type, zone and open-now (on the program's clock), capacity."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from apps.accounts.models import Program, Role
from apps.directory.models import OpeningHours, Service
from apps.teams.models import Zone
from tests.conftest import CrewMember, make_crew_member
from tests.teams.factories import ZoneFactory

pytestmark = pytest.mark.django_db


def _service(program: Program, name: str, service_type: str, zone: Zone | None = None, **fields: object) -> Service:
    service = Service.objects.create(program=program, name=name, service_type=service_type, **fields)
    if zone is not None:
        service.zones.add(zone)
    return service


def test_open_now_is_decided_on_the_programs_wall_clock_including_overnight_hours() -> None:
    service = Service(name="Detox", service_type="detox")
    overnight = [OpeningHours(weekday=6, opens_at=dt.time(20), closes_at=dt.time(6))]  # Sunday 20:00-Mon 06:00
    daytime = [OpeningHours(weekday=0, opens_at=dt.time(9), closes_at=dt.time(17))]  # Monday 09-17
    zone = "America/New_York"

    # 2026-11-02 is a Monday. 05:30 EST = 10:30 UTC: still Sunday night's opening.
    assert service.is_open_at(dt.datetime(2026, 11, 2, 10, 30, tzinfo=dt.UTC), overnight, zone)
    assert not service.is_open_at(dt.datetime(2026, 11, 2, 11, 30, tzinfo=dt.UTC), overnight, zone)
    # 08:30 EST = 13:30 UTC is closed; 09:30 EST = 14:30 UTC is open (in UTC both are "open").
    assert not service.is_open_at(dt.datetime(2026, 11, 2, 13, 30, tzinfo=dt.UTC), daytime, zone)
    assert service.is_open_at(dt.datetime(2026, 11, 2, 14, 30, tzinfo=dt.UTC), daytime, zone)


def test_search_by_type_zone_and_open_now(crew_member: CrewMember) -> None:
    program = crew_member.unit.program
    harlem, bronx = ZoneFactory.create(program=program), ZoneFactory.create(program=program)
    always = _service(program, "Crisis centre", "crisis_stabilisation", harlem, is_open_all_hours=True)
    _service(program, "Clinic", "outpatient_mental_health", harlem)  # no hours: never open
    _service(program, "Shelter", "housing", bronx, is_open_all_hours=True, languages=["en", "es"])
    client = crew_member.client()

    by_type = client.get("/api/v1/directory/services/?type=crisis_stabilisation").json()
    by_zone = client.get(f"/api/v1/directory/services/?zone={harlem.pk}").json()
    open_in_harlem = client.get(f"/api/v1/directory/services/?zone={harlem.pk}&open_now=true").json()
    bad = client.get("/api/v1/directory/services/?type=spa")

    assert [s["name"] for s in by_type["results"]] == ["Crisis centre"]
    assert [s["name"] for s in by_zone["results"]] == ["Clinic", "Crisis centre"]
    assert [s["id"] for s in open_in_harlem["results"]] == [str(always.pk)]
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "type"


def test_a_case_manager_reports_capacity_and_bad_figures_are_refused(crew_member: CrewMember) -> None:
    program = crew_member.unit.program
    shelter = _service(program, "Shelter", "housing")
    manager = make_crew_member(program, role=Role.CASE_MANAGER)

    reported = manager.client().post(
        f"/api/v1/directory/services/{shelter.pk}/capacity/", {"available": 3, "total": 20}, format="json"
    )
    too_many = manager.client().post(
        f"/api/v1/directory/services/{shelter.pk}/capacity/", {"available": 30, "total": 20}, format="json"
    )
    by_crew = crew_member.client().post(
        f"/api/v1/directory/services/{shelter.pk}/capacity/", {"available": 1}, format="json"
    )

    assert reported.status_code == 200 and (
        reported.json()["capacity_available"],
        reported.json()["capacity_total"],
    ) == (3, 20)
    assert too_many.status_code == 400 and too_many.json()["errors"][0]["field"] == "available"
    assert by_crew.status_code == 403
    shelter.refresh_from_db()
    assert shelter.capacity_available == 3
    assert shelter.capacity_updated_at is not None and shelter.capacity_updated_at <= timezone.now()


def test_another_programs_directory_is_not_found(crew_member: CrewMember, foreign_dispatcher: CrewMember) -> None:
    shelter = _service(crew_member.unit.program, "Shelter", "housing")
    client = foreign_dispatcher.client()

    assert client.get("/api/v1/directory/services/").json()["count"] == 0
    assert client.get(f"/api/v1/directory/services/{shelter.pk}/").status_code == 404
    assert (
        client.post(f"/api/v1/directory/services/{shelter.pk}/capacity/", {"available": 1}, format="json").status_code
        == 404
    )
