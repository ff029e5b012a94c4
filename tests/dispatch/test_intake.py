from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import Program
from apps.dispatch.models import Incident
from apps.sync.models import ChangeEntry
from tests.conftest import CrewMember
from tests.dispatch.factories import intake_body, make_incident
from tests.teams.factories import ZoneFactory

URL = "/api/v1/dispatch/incidents/"


def test_intake_creates_a_triaged_incident(program: Program, dispatcher: CrewMember) -> None:
    ZoneFactory.create(program=program, code="PCT-28")
    body = intake_body(
        program,
        location={
            "address": "2 W 125th St",
            "zone": "PCT-28",
            "latitude": "40.8",
            "longitude": "-73.95",
            "accuracy_m": 12,
        },
    )
    body["safety_screen"]["hazards"] = ["dogs"]

    response = dispatcher.client().post(URL, body, format="json")

    assert response.status_code == 201, response.json()
    incident = Incident.objects.get(pk=response.json()["id"])
    assert incident.zone is not None
    assert (incident.external_call_id, incident.zone.code, incident.location_accuracy_m) == (
        body["external_call_id"],
        "PCT-28",
        12,
    )
    assert incident.hazards == ["dogs"] and incident.created_by == dispatcher.user
    assert response.json()["triage"]["recommended_response"] == "emt_clinician"
    assert list(incident.timeline.values_list("kind", flat=True)) == ["received"]
    # Dispatchers' and supervisors' feeds learn of it, in the same transaction.
    assert sorted(ChangeEntry.objects.filter(record_id=incident.pk).values_list("scope", flat=True)) == [
        f"program.{program.pk}.dispatcher",
        f"program.{program.pk}.supervisor",
    ]


def test_a_retried_post_returns_the_same_incident(program: Program, dispatcher: CrewMember) -> None:
    body = intake_body(program)

    first = dispatcher.client().post(URL, body, format="json")
    retry = dispatcher.client().post(URL, body, format="json")

    assert (first.status_code, retry.status_code) == (201, 200)
    assert first.json() == retry.json()
    assert Incident.objects.filter(external_call_id=body["external_call_id"]).count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_create_one_incident(program: Program, dispatcher: CrewMember) -> None:
    body = intake_body(program)
    barrier = threading.Barrier(6)
    answers: list[tuple[int, str]] = []

    def post() -> None:
        try:
            barrier.wait()
            response = dispatcher.client().post(URL, body, format="json")
            answers.append((response.status_code, response.json()["id"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(code for code, _id in answers) == [200, 200, 200, 200, 200, 201]
    assert len({incident_id for _code, incident_id in answers}) == 1
    assert Incident.objects.filter(external_call_id=body["external_call_id"]).count() == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"source": "carrier-pigeon"}, "source"),
        ({"external_call_id": ""}, "external_call_id"),
        ({"safety_screen": {"weapon": False}}, "safety_screen.mental_health_nexus"),
        (
            {
                "safety_screen": {
                    "mental_health_nexus": True,
                    "weapon": False,
                    "violence_in_progress": False,
                    "imminent_self_harm": False,
                    "medical_emergency": False,
                    "mood": "bad",
                }
            },
            "safety_screen.mood",
        ),
        ({"location": {"latitude": "95.0", "longitude": "0"}}, "location.latitude"),
        ({"location": {"latitude": "40.0"}}, "location.longitude"),
        ({"location": {"zone": "NOPE"}}, "location.zone"),
        ({"received_at": "yesterday"}, "received_at"),
        (
            {"received_at": (timezone.localtime() - timedelta(minutes=1)).replace(tzinfo=None).isoformat()},
            "received_at",
        ),
        ({"priority": "whenever"}, "priority"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_intake_is_a_400_naming_the_field(
    program: Program, dispatcher: CrewMember, change: dict[str, Any], field: str
) -> None:
    response = dispatcher.client().post(URL, intake_body(program) | change, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["errors"][0]["field"] == field
    assert Incident.objects.count() == 0


@pytest.mark.parametrize(
    ("place", "value", "detail"),
    [
        (("external_call_id",), 4711, "Send a string."),
        (("safety_screen", "weapon"), "false", "Send true or false."),
        (("safety_screen", "weapon"), 0, "Send true or false."),
        (("location", "accuracy_m"), "12", "Send a whole number."),
        (("location", "accuracy_m"), True, "Send a whole number."),
    ],
)
def test_a_value_of_the_wrong_json_type_is_a_400_naming_the_field_not_converted(
    program: Program, dispatcher: CrewMember, place: tuple[str, ...], value: Any, detail: str
) -> None:
    body = intake_body(program, location={"address": "2 W 125th St"})
    *parents, name = place
    target = body
    for parent in parents:
        target = target[parent]
    target[name] = value

    response = dispatcher.client().post(URL, body, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["errors"][0] == {"field": ".".join(place), "code": "invalid", "detail": detail}
    assert Incident.objects.count() == 0


def test_a_call_time_in_the_future_is_refused(program: Program, dispatcher: CrewMember) -> None:
    future = (timezone.now() + timedelta(hours=1)).isoformat()

    response = dispatcher.client().post(URL, intake_body(program, received_at=future), format="json")

    assert response.status_code == 400
    assert (response.json()["errors"][0]["field"], response.json()["code"]) == ("received_at", "time_in_future")
    assert Incident.objects.count() == 0


@pytest.mark.parametrize("who", ["crew_member", "foreign_dispatcher"])
def test_only_the_programs_dispatchers_take_in_calls(
    program: Program, who: str, request: pytest.FixtureRequest
) -> None:
    member: CrewMember = request.getfixturevalue(who)

    response = member.client().post(URL, intake_body(program), format="json")

    assert response.status_code == 404
    assert Incident.objects.count() == 0


def test_unauthenticated_intake_is_401(program: Program) -> None:
    assert APIClient().post(URL, intake_body(program), format="json").status_code == 401


def test_dispatchers_list_only_their_programs_incidents(
    program: Program, dispatcher: CrewMember, foreign_dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    incident = make_incident(program, dispatcher)

    mine = dispatcher.client().get(URL).json()["results"]
    foreign = foreign_dispatcher.client().get(URL).json()["results"]
    crew = crew_member.client().get(URL).json()["results"]

    assert [row["id"] for row in mine] == [str(incident.pk)]
    assert foreign == [] and crew == []
    assert foreign_dispatcher.client().get(f"{URL}{incident.pk}/").status_code == 404
    assert crew_member.client().get(f"{URL}{incident.pk}/").status_code == 404


def test_incidents_received_the_same_second_are_each_listed_once_across_pages(
    program: Program, dispatcher: CrewMember
) -> None:
    received_at = timezone.now().replace(microsecond=0)
    incidents = {str(make_incident(program, dispatcher, received_at=received_at).pk) for _ in range(30)}
    client = dispatcher.client()

    listed = [
        incident["id"]
        for page in range(1, 6)
        for incident in client.get(URL, {"page": page, "page_size": 7}).json()["results"]
    ]

    assert sorted(listed) == sorted(incidents)
