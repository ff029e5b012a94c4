"""Dispatch's records in the feed when a user's access changes (P5): they have no head, so
the change's catch-up reads them from the feed itself."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import Membership, Program, Role
from apps.teams import services as teams_services
from tests.conftest import CrewMember, make_crew_member
from tests.dispatch.factories import make_incident, make_staff
from tests.dispatch.test_assignments import offer, post
from tests.sync.helpers import SimDevice, younger_writes_before_the_catch_up

pytestmark = pytest.mark.django_db(transaction=True)


def test_leaving_a_crew_removes_its_assignment_from_the_device(
    program: Program, crew_member: CrewMember, dispatcher: CrewMember
) -> None:
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    assignment = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    served, cursor = device.pull(cursor)

    teams_services.unit_member_remove(unit=crew_member.unit, user=crew_member.user)
    later, _ = device.pull(cursor)

    assert [(e["id"], e["op"]) for e in served] == [(assignment["id"], "upsert")]
    assert [(e["id"], e["op"], e["reason"]) for e in later] == [(assignment["id"], "remove", "out_of_scope")]


def test_joining_a_crew_brings_its_open_assignment_not_its_ended_ones(
    program: Program, crew_member: CrewMember, dispatcher: CrewMember
) -> None:
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    crew = make_crew_member(program)
    declined = offer(dispatcher, make_incident(program, dispatcher), crew.unit)
    assert post(crew, declined["id"], "decline", {"reason": "already on a call"}).status_code == 200
    open_one = offer(dispatcher, make_incident(program, dispatcher), crew.unit)

    teams_services.unit_member_add(unit=crew.unit, user=crew_member.user)
    later, _ = device.pull(cursor)

    # The declined call may be offered to the joiner's own crew next: a new assignment.
    of_the_crew = [e for e in later if e["id"] in (declined["id"], open_one["id"])]
    assert [(e["id"], e["op"], e["data"]["status"]) for e in of_the_crew] == [
        (open_one["id"], "upsert", open_one["status"])
    ]


def test_a_dispatcher_who_loses_the_role_has_the_calls_removed(program: Program, dispatcher: CrewMember) -> None:
    device = SimDevice(dispatcher)
    incident = make_incident(program, make_staff(program, Role.DISPATCHER))
    served, cursor = device.pull()

    Membership.objects.filter(user=dispatcher.user, program=program).update(role=Role.CLINICIAN)
    later, _ = device.pull(cursor)

    assert (str(incident.pk), "upsert") in [(e["id"], e["op"]) for e in served]
    assert (str(incident.pk), "remove") in [(e["id"], e["op"]) for e in later]


def test_a_dispatcher_who_leaves_a_crew_keeps_its_assignments(program: Program, dispatcher: CrewMember) -> None:
    crew = make_crew_member(program)
    teams_services.unit_member_add(unit=crew.unit, user=dispatcher.user)
    device = SimDevice(dispatcher)
    _, cursor = device.pull()
    colleague = make_staff(program, Role.DISPATCHER)
    assignment = offer(colleague, make_incident(program, colleague), crew.unit)

    teams_services.unit_member_remove(unit=crew.unit, user=dispatcher.user)
    later, _ = device.pull(cursor)

    # An entry for the crew and one for the dispatchers; no removal.
    assert {e["op"] for e in later if e["id"] == assignment["id"]} == {"upsert"}


def _held(entries: list[dict[str, Any]], held: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a device holds after these entries, by id: each record's status."""
    held = dict(held or {})
    for entry in entries:
        if entry["op"] == "upsert":
            held[entry["id"]] = entry["data"].get("status")
        else:
            held.pop(entry["id"], None)
    return held


def test_a_dispatcher_on_a_crew_who_loses_the_role_drops_a_call_the_crew_dropped(
    program: Program, dispatcher: CrewMember
) -> None:
    crew = make_crew_member(program)
    teams_services.unit_member_add(unit=crew.unit, user=dispatcher.user)
    device = SimDevice(dispatcher)
    _, cursor = device.pull()
    colleague = make_staff(program, Role.DISPATCHER)
    declined = offer(colleague, make_incident(program, colleague), crew.unit)
    assert post(crew, declined["id"], "decline", {"reason": "already on a call"}).status_code == 200
    served, cursor = device.pull(cursor)

    Membership.objects.filter(user=dispatcher.user, program=program).update(role=Role.CLINICIAN)
    later, _ = device.pull(cursor)

    assert _held(served)[declined["id"]] == "declined"  # a dispatcher sees it
    assert declined["id"] not in _held(later, _held(served))


def test_leaving_a_crew_while_its_call_is_cancelled_removes_the_call(
    program: Program, crew_member: CrewMember, dispatcher: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    assignment = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    served, cursor = device.pull(cursor)
    answers: list[int] = []

    def cancel() -> None:
        answers.append(post(dispatcher, assignment["id"], "cancel", {"reason": "resolved"}).status_code)

    with younger_writes_before_the_catch_up(monkeypatch, cancel):
        teams_services.unit_member_remove(unit=crew_member.unit, user=crew_member.user)
    later, _ = device.pull(cursor)

    assert answers == [200]
    assert assignment["id"] in _held(served)
    assert assignment["id"] not in _held(later, _held(served))


def test_joining_a_crew_while_a_call_is_offered_to_it_brings_the_call(
    program: Program, crew_member: CrewMember, dispatcher: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P6: an offer to the crew committed while the join waited for its older writers is seen
    by the join's catch-up, so the new member's feed does not serve the offer's own entry:
    the catch-up must carry it."""
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    crew = make_crew_member(program)
    incident = make_incident(program, dispatcher)
    offered: list[dict[str, Any]] = []

    def offer_to_the_crew() -> None:
        offered.append(offer(dispatcher, incident, crew.unit))

    with younger_writes_before_the_catch_up(monkeypatch, offer_to_the_crew):
        teams_services.unit_member_add(unit=crew.unit, user=crew_member.user)
    later, _ = device.pull(cursor)

    [assignment] = offered
    assert _held(later).get(assignment["id"]) == assignment["status"], later


def test_joining_a_crew_while_its_call_is_cancelled_does_not_bring_the_call(
    program: Program, crew_member: CrewMember, dispatcher: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    crew = make_crew_member(program)
    assignment = offer(dispatcher, make_incident(program, dispatcher), crew.unit)
    answers: list[int] = []

    def cancel() -> None:
        answers.append(post(dispatcher, assignment["id"], "cancel", {"reason": "resolved"}).status_code)

    with younger_writes_before_the_catch_up(monkeypatch, cancel):
        teams_services.unit_member_add(unit=crew.unit, user=crew_member.user)
    later, _ = device.pull(cursor)

    assert answers == [200]
    assert assignment["id"] not in _held(later), later
