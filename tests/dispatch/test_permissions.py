"""Outsiders — another unit's crew, another program's dispatcher — get 404 and change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Program
from apps.dispatch import services
from apps.dispatch.models import Assignment, Incident, TimelineEvent
from apps.sync.models import ChangeEntry
from apps.teams.models import Unit
from tests.conftest import CrewMember
from tests.dispatch.factories import make_incident

INCIDENT_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("get", "/api/v1/dispatch/incidents/{incident}/", None),
    ("post", "/api/v1/dispatch/incidents/{incident}/override/", {"response": "police", "reason": "x"}),
    ("post", "/api/v1/dispatch/incidents/{incident}/close/", {"unserved_reason": "duplicate"}),
    ("get", "/api/v1/dispatch/incidents/{incident}/recommended-units/", None),
    ("post", "/api/v1/dispatch/incidents/{incident}/assignments/", {"unit": "{unit}", "additional": True}),
]
ASSIGNMENT_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("get", "/api/v1/dispatch/assignments/{assignment}/", None),
    ("post", "/api/v1/dispatch/assignments/{assignment}/acknowledge/", {}),
    ("post", "/api/v1/dispatch/assignments/{assignment}/status/", {"status": "en_route"}),
    ("post", "/api/v1/dispatch/assignments/{assignment}/decline/", {"reason": "busy"}),
    ("post", "/api/v1/dispatch/assignments/{assignment}/check-in/", {}),
    ("post", "/api/v1/dispatch/assignments/{assignment}/cancel/", {"reason": "x"}),
]
UNIT_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("post", "/api/v1/dispatch/units/{unit}/availability/", {"status": "out_of_service"}),
    ("get", "/api/v1/dispatch/board/?program={program}", None),
]


@pytest.fixture
def scene(program: Program, dispatcher: CrewMember, crew_member: CrewMember) -> dict[str, Any]:
    incident = make_incident(program, dispatcher)
    assignment = services.assignment_offer(incident=incident, unit=crew_member.unit, actor=dispatcher.user)
    return {"incident": incident.pk, "assignment": assignment.pk, "unit": crew_member.unit.pk, "program": program.slug}


def snapshot() -> list[Any]:
    return [
        list(Incident.objects.order_by("pk").values()),
        list(Assignment.objects.order_by("pk").values()),
        list(Unit.objects.order_by("pk").values("pk", "status", "status_changed_at")),
        TimelineEvent.objects.count(),
        ChangeEntry.objects.count(),
    ]


def call(member: CrewMember, method: str, url: str, body: dict[str, Any] | None, scene: dict[str, Any]) -> Any:
    url = url.format(**scene)
    if body is not None:
        body = {key: value.format(**scene) if isinstance(value, str) else value for key, value in body.items()}
    client = member.client()
    return client.get(url) if method == "get" else client.post(url, body, format="json")


@pytest.mark.parametrize("who", ["outsider", "foreign_dispatcher"])
@pytest.mark.parametrize(("method", "url", "body"), INCIDENT_ENDPOINTS + ASSIGNMENT_ENDPOINTS + UNIT_ENDPOINTS)
def test_outsiders_get_404_and_nothing_changes(
    scene: dict[str, Any],
    who: str,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    request: pytest.FixtureRequest,
) -> None:
    stranger: CrewMember = request.getfixturevalue(who)
    before = snapshot()

    response = call(stranger, method, url, body, scene)

    assert response.status_code == 404, response.json()
    assert snapshot() == before


@pytest.mark.parametrize(("method", "url", "body"), INCIDENT_ENDPOINTS + UNIT_ENDPOINTS[1:])
def test_crew_cannot_see_or_work_incidents(
    scene: dict[str, Any], crew_member: CrewMember, method: str, url: str, body: dict[str, Any] | None
) -> None:
    before = snapshot()

    response = call(crew_member, method, url, body, scene)

    assert response.status_code == 404
    assert snapshot() == before


def test_crew_cannot_cancel_and_dispatch_cannot_answer_for_the_crew(
    scene: dict[str, Any], crew_member: CrewMember, dispatcher: CrewMember
) -> None:
    before = snapshot()

    cancel = call(crew_member, "post", "/api/v1/dispatch/assignments/{assignment}/cancel/", {"reason": "x"}, scene)
    answers = [
        call(dispatcher, "post", f"/api/v1/dispatch/assignments/{{assignment}}/{action}/", body, scene)
        for action, body in (("acknowledge", {}), ("decline", {"reason": "x"}), ("check-in", {}))
    ]

    assert cancel.status_code == 403
    assert [answer.status_code for answer in answers] == [403, 403, 403]
    assert snapshot() == before


def test_crews_list_only_their_own_units_assignments(
    scene: dict[str, Any], crew_member: CrewMember, outsider: CrewMember, dispatcher: CrewMember
) -> None:
    def ids(member: CrewMember) -> list[str]:
        return [row["id"] for row in member.client().get("/api/v1/dispatch/assignments/").json()["results"]]

    assert ids(crew_member) == ids(dispatcher) == [str(scene["assignment"])]
    assert ids(outsider) == []


@pytest.mark.parametrize("ended_by", ["cancel", "decline", "close"])
def test_a_crew_is_not_handed_the_details_of_a_call_that_was_taken_from_it(
    scene: dict[str, Any], crew_member: CrewMember, dispatcher: CrewMember, ended_by: str
) -> None:
    """The feed tells the crew's devices to drop a call withdrawn, declined or closed before
    they served it (P5), and gives a crew member who joins later none of it: REST must not
    hand the call's address, caller's number and nature back to the same crew."""
    url = "/api/v1/dispatch/assignments/{assignment}/".format(**scene)
    if ended_by == "cancel":
        ended = call(dispatcher, "post", url + "cancel/", {"reason": "sent another unit"}, scene)
    elif ended_by == "decline":
        ended = call(crew_member, "post", url + "decline/", {"reason": "already on a call"}, scene)
    else:
        close_url = "/api/v1/dispatch/incidents/{incident}/close/"
        ended = call(dispatcher, "post", close_url, {"unserved_reason": "cancelled_by_caller"}, scene)
    assert ended.status_code == 200, ended.json()

    detail = crew_member.client().get(url)
    (listed,) = crew_member.client().get("/api/v1/dispatch/assignments/").json()["results"]
    dispatch_view = dispatcher.client().get(url)

    assert detail.status_code == 200
    assert "incident" not in detail.json() and "incident" not in listed
    assert (detail.json()["id"], listed["id"]) == (str(scene["assignment"]),) * 2
    assert detail.json()["status"] == listed["status"] != "offered"
    assert dispatch_view.json()["incident"]["location"]["address"]  # dispatch still sees the call


def test_a_crew_keeps_the_details_of_a_call_it_is_answering(scene: dict[str, Any], crew_member: CrewMember) -> None:
    detail = crew_member.client().get("/api/v1/dispatch/assignments/{assignment}/".format(**scene))

    assert detail.json()["incident"]["location"]["address"]
