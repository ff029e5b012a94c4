"""The unit board (the feed of the units' statuses) ends on each unit's true status when two
transactions write one unit at once.

The feed serves a transaction's entries in the order of its transaction id, which it takes
at its first write (a row lock counts), not at commit. A writer that took its id first and
wrote the unit's board last would have its entry served before the other's, and the board
would end on a status the unit no longer has.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from apps.accounts.models import Program
from apps.common.api.errors import DomainError
from apps.dispatch import selectors, services
from apps.dispatch.models import AlertKind, Assignment, AssignmentStatus, SupervisorAlert
from apps.sync import push
from apps.sync.models import ChangeEntry, Mutation, MutationStatus
from apps.sync.selectors import feed_page
from apps.sync.services import lock_records
from apps.teams.models import Unit, UnitStatus
from tests.accounts.factories import ProgramFactory
from tests.admin_pages import resubmitted
from tests.conftest import CrewMember, make_crew_member
from tests.dispatch.concurrency import (
    board_held_elsewhere,
    board_key,
    held_elsewhere,
    holders_of_advisory_lock,
    record_key,
    run_until_done_or_blocked,
)
from tests.dispatch.factories import make_incident
from tests.dispatch.test_assignments import offer, post
from tests.dispatch.test_status_times_sync import _acknowledged, _status_time
from tests.sync.helpers import SimDevice, stored_unapplied, sync_client
from tests.teams.factories import UnitFactory


def board_status(program: Program, unit: Unit) -> str:
    """The unit's status as a dispatcher's device ends with it, reading the whole feed."""
    page = feed_page(scopes=services.staff_scopes(program.pk), cursor=None, limit=1000)
    assert not page.has_more and not page.held_back
    statuses = [
        entry.data["status"]
        for entry in page.entries
        if entry.record_type == services.UNIT_RECORD and entry.record_id == unit.pk
    ]
    assert statuses, "the unit never reached the board"
    return statuses[-1]


@pytest.mark.django_db(transaction=True)
def test_a_unit_put_out_of_service_while_offered_a_call_ends_on_the_board_as_it_stands(
    monkeypatch: pytest.MonkeyPatch, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The crew puts its unit out of service while a dispatcher's offer to it is under way,
    the offer having locked the incident (and so taken its transaction id) first. Whatever
    the outcome, a dispatcher's board must end showing the unit's status as stored: here the
    unit holds the call, so the crew's change waits for the offer and is refused, and the
    board shows the unit assigned, not out of service."""
    unit = crew_member.unit
    incident = make_incident(program, dispatcher)
    offer = services._offer
    crew: dict[str, Any] = {}

    def offer_once_the_crew_had_its_go(**kwargs: Any) -> Any:
        crew["running"] = run_until_done_or_blocked(
            lambda: services.unit_set_availability(
                unit=unit, actor=crew_member.user, device=crew_member.device, status=UnitStatus.OUT_OF_SERVICE
            ),
            blocked_on=board_key(unit),
        )
        return offer(**kwargs)

    monkeypatch.setattr(services, "_offer", offer_once_the_crew_had_its_go)
    services.assignment_offer(incident=incident, unit=unit, actor=dispatcher.user)
    refusal = crew["running"].error()

    assert crew["running"].waited, "the crew's change never waited for the offer's lock of the board"
    unit.refresh_from_db()
    assert board_status(program, unit) == unit.status
    # The offer came first: the unit holds the call, and the crew is told to clear it first.
    assert unit.status == UnitStatus.ASSIGNED
    assert isinstance(refusal, DomainError) and refusal.code == "unit_busy", refusal


@pytest.mark.django_db(transaction=True)
def test_a_unit_put_out_of_service_as_the_sweep_offers_it_a_call_ends_on_the_board_as_it_stands(
    monkeypatch: pytest.MonkeyPatch, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The sweep escalates a silent offer and looks for the next free unit: it finds one only
    after its first write, so it cannot have locked that unit's board before. The unit's crew
    puts it out of service meanwhile, in a younger transaction that commits first. The sweep
    must not then offer the call to the unit (its entry, served before the crew's, would
    leave the board showing the unit out of service while it holds the call): it passes the
    unit over, and the call waits for a unit."""
    other = make_crew_member(program, unit=UnitFactory.create(program=program))
    incident = make_incident(program, dispatcher)
    silent = services.assignment_offer(incident=incident, unit=crew_member.unit, actor=dispatcher.user)
    recommended_units = selectors.recommended_units
    crew: dict[str, Any] = {}

    def recommended_once_the_crew_had_its_go(**kwargs: Any) -> Any:
        recommended = list(recommended_units(**kwargs))
        if not crew:
            assert [recommendation.unit.pk for recommendation in recommended] == [other.unit.pk]
            crew["running"] = run_until_done_or_blocked(
                lambda: services.unit_set_availability(
                    unit=other.unit, actor=other.user, device=other.device, status=UnitStatus.OUT_OF_SERVICE
                )
            )
        return recommended

    monkeypatch.setattr(selectors, "recommended_units", recommended_once_the_crew_had_its_go)
    result = services.sweep_deadlines(now=timezone.now() + timedelta(hours=1))
    crew["running"].result()  # ended, without an error

    assert result.escalated == 1 and result.failed == 0
    unit = Unit.objects.get(pk=other.unit.pk)
    assert board_status(program, unit) == unit.status == UnitStatus.OUT_OF_SERVICE
    assert not unit.assignments.exists()
    silent.refresh_from_db()
    assert silent.status == AssignmentStatus.OFFERED and silent.awaiting_unit_since is not None
    assert SupervisorAlert.objects.filter(incident=incident, kind=AlertKind.NO_UNIT_AVAILABLE).exists()


def _set(member: CrewMember, status: UnitStatus) -> None:
    services.unit_set_availability(unit=member.unit, actor=member.user, device=member.device, status=status)


def _while_the_sweep_recommends(
    monkeypatch: pytest.MonkeyPatch, member: CrewMember, statuses: tuple[UnitStatus, ...], *, first: bool = False
) -> dict[str, Any]:
    """Have the crew set these availabilities, each committed by a transaction younger than
    the sweep's, as the sweep looks for a unit to offer its call to (``first``: before it
    reads the free units)."""
    recommended_units = selectors.recommended_units
    crew: dict[str, Any] = {}

    def recommended_then_changed(**kwargs: Any) -> Any:
        recommended = None if first else list(recommended_units(**kwargs))
        if not crew:
            for status in statuses:
                run_until_done_or_blocked(lambda status=status: _set(member, status)).result()
            crew["done"] = True
        return list(recommended_units(**kwargs)) if recommended is None else recommended

    monkeypatch.setattr(selectors, "recommended_units", recommended_then_changed)
    return crew


@pytest.mark.django_db(transaction=True)  # the board is read from the feed: committed entries only
def test_a_unit_changed_and_changed_back_as_the_sweep_offers_it_a_call_ends_on_the_board_as_it_stands(
    monkeypatch: pytest.MonkeyPatch, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Out of service and back in service, each committed by a transaction younger than the
    sweep's: the unit is available when the sweep reads it, and only the check for younger
    writers of its board keeps the sweep's 'assigned' from being served before both."""
    other = make_crew_member(program, unit=UnitFactory.create(program=program))
    _set(other, UnitStatus.AVAILABLE)
    incident = make_incident(program, dispatcher)
    services.assignment_offer(incident=incident, unit=crew_member.unit, actor=dispatcher.user)
    _while_the_sweep_recommends(monkeypatch, other, (UnitStatus.OUT_OF_SERVICE, UnitStatus.AVAILABLE))

    services.sweep_deadlines(now=timezone.now() + timedelta(hours=1))

    unit = Unit.objects.get(pk=other.unit.pk)
    assert board_status(program, unit) == unit.status


@pytest.mark.django_db(transaction=True)
def test_a_unit_put_back_in_service_as_the_sweep_escalates_gets_the_call(
    monkeypatch: pytest.MonkeyPatch, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The sweep's own transaction cannot tell the unit freed by a younger one from a busy
    one: it is undone and tried again in a new one, rather than telling the supervisors no
    unit is free and leaving the call to wait for the next search."""
    other = make_crew_member(program, unit=UnitFactory.create(program=program))
    _set(other, UnitStatus.OUT_OF_SERVICE)
    incident = make_incident(program, dispatcher)
    services.assignment_offer(incident=incident, unit=crew_member.unit, actor=dispatcher.user)
    _while_the_sweep_recommends(monkeypatch, other, (UnitStatus.AVAILABLE,), first=True)

    swept = services.sweep_deadlines(now=timezone.now() + timedelta(hours=1))

    alerts = set(SupervisorAlert.objects.filter(incident=incident).values_list("kind", flat=True))
    assert (swept.escalated, swept.failed, AlertKind.NO_UNIT_AVAILABLE in alerts) == (1, 0, False)
    assert incident.assignments.get(unit=other.unit).status == AssignmentStatus.OFFERED
    assert board_status(program, other.unit) == Unit.objects.get(pk=other.unit.pk).status == UnitStatus.ASSIGNED


@pytest.mark.django_db(transaction=True)
def test_a_unit_saved_in_the_admin_keeps_the_status_its_calls_gave_it(
    superuser_client: Client, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The unit's page was opened while it was available, a call was offered to it, and the
    page was saved to fix the call sign: the save wrote back 'available' over 'assigned',
    unpublished, and once the call was cancelled the board kept showing the unit assigned."""
    unit = crew_member.unit
    _set(crew_member, UnitStatus.AVAILABLE)
    change_url = f"/admin/teams/unit/{unit.pk}/change/"
    data = resubmitted(superuser_client.get(change_url))
    assignment = services.assignment_offer(
        incident=make_incident(program, dispatcher), unit=unit, actor=dispatcher.user
    )

    saved = superuser_client.post(change_url, {**data, "call_sign": "BH-RENAMED"})
    after_the_save = Unit.objects.get(pk=unit.pk)
    services.assignment_cancel(
        assignment_id=assignment.pk, actor=dispatcher.user, device=None, reason="Duplicate call."
    )

    assert saved.status_code == 302
    assert (after_the_save.call_sign, after_the_save.status) == ("BH-RENAMED", UnitStatus.ASSIGNED)
    unit.refresh_from_db()
    assert board_status(program, unit) == unit.status == UnitStatus.AVAILABLE


@pytest.mark.django_db(transaction=True)
def test_a_unit_put_back_in_service_as_the_sweep_looks_goes_to_the_call_waiting_longest(
    monkeypatch: pytest.MonkeyPatch, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """A call waits for a unit; one is put back in service as the sweep looks again for it,
    by a transaction younger than the sweep's. The undone search is tried again at once, not
    at the next beat: else a call escalated only later in the same beat took the unit."""
    freed = make_crew_member(program, unit=UnitFactory.create(program=program))
    _set(freed, UnitStatus.OUT_OF_SERVICE)
    other = make_crew_member(program, unit=UnitFactory.create(program=program))
    _set(other, UnitStatus.OUT_OF_SERVICE)
    start = timezone.now()
    waiting = make_incident(program, dispatcher)
    services.assignment_offer(incident=waiting, unit=crew_member.unit, actor=dispatcher.user)
    assert services.sweep_deadlines(now=start + timedelta(hours=1)).escalated == 1  # no unit free: it waits
    _set(other, UnitStatus.AVAILABLE)
    later = make_incident(program, dispatcher)
    services.assignment_offer(incident=later, unit=other.unit, actor=dispatcher.user)
    _while_the_sweep_recommends(monkeypatch, freed, (UnitStatus.AVAILABLE,), first=True)

    services.sweep_deadlines(now=start + timedelta(hours=2))

    assert Unit.objects.get(pk=freed.unit.pk).assignments.get().incident_id == waiting.pk


def test_a_unit_made_in_the_admin_starts_out_of_service_whatever_status_is_posted(
    superuser_client: Client, program: Program
) -> None:
    """Made 'on scene' or 'available', it held a status no call gave it and no board showed:
    its crew or a dispatcher puts it in service through dispatch, which publishes it."""
    add_url = "/admin/teams/unit/add/"
    data = resubmitted(superuser_client.get(add_url))
    data.update({"call_sign": "BH-NEW", "program": str(program.pk), "response_model": "emt_clinician"})

    saved = superuser_client.post(add_url, {**data, "status": UnitStatus.ON_SCENE})

    assert saved.status_code == 302
    assert Unit.objects.get(call_sign="BH-NEW").status == UnitStatus.OUT_OF_SERVICE


@pytest.mark.django_db(transaction=True)  # two transactions, each on its own connection
def test_a_status_time_pushed_while_its_units_board_is_held_waits_for_it_and_applies_in_the_push(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The push locked its device's row (its transaction's first write) before it reached the
    board, so it could only try it: busy, the usual one-transaction push was undone, and the
    batch stored, committed and applied again. The push takes the board before it writes,
    waits for it, and applies the batch as it stores it."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    mutation = _status_time(device, assignment_id, "en_route", timezone.now())

    with board_held_elsewhere(crew_member.unit):
        pushing = run_until_done_or_blocked(
            lambda: device.client().post("/api/v1/sync/push/", {"mutations": [mutation]}, format="json"),
            blocked_on=board_key(crew_member.unit),
        )
        stored_while_waiting = Mutation.objects.filter(device=crew_member.device).exists()
    response = pushing.result()

    assert (pushing.waited, stored_while_waiting) == (True, False)
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    assert (result["status"], result["data"]["applied"]) == ("applied", True)
    assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.EN_ROUTE


@pytest.mark.django_db(transaction=True)  # two transactions, each on its own connection
def test_a_status_time_applied_after_review_while_its_units_board_is_held_waits_for_it_and_applies(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, supervisor: CrewMember
) -> None:
    """The review marked the mutation received (its transaction's first write) before it
    reached the board, so it could only try it: busy, the review was answered 409
    concurrent_change. It takes the board before it writes, and waits for it."""
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    device = SimDevice(crew_member)
    # Pushed before the acknowledgement reached the server: refused, kept for review.
    [refused] = device.push(_status_time(device, uuid.UUID(body["id"]), "en_route", timezone.now()))
    assert post(crew_member, body["id"], "acknowledge").status_code == 200
    kept = Mutation.objects.get(status=MutationStatus.QUARANTINED)

    with board_held_elsewhere(crew_member.unit):
        reviewing = run_until_done_or_blocked(
            lambda: sync_client(supervisor).post("/api/v1/sync/quarantine/apply/", {"ids": [kept.pk]}, format="json"),
            blocked_on=board_key(crew_member.unit),
        )
    response = reviewing.result()

    assert (refused["error"]["code"], reviewing.waited) == ("not_acknowledged", True)
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    assert (result["status"], result["quarantine_id"], result["data"]["applied"]) == ("applied", kept.pk, True)
    assert Assignment.objects.get(pk=body["id"]).status == AssignmentStatus.EN_ROUTE


@pytest.mark.django_db(transaction=True)  # two transactions, each on its own connection
def test_status_times_left_stored_and_unapplied_are_applied_by_the_sweep_together_once_the_board_is_free(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The server died between storing a dispatcher's push and applying it: two status
    times, of two units' calls. The sweep of stranded mutations applies them in a
    transaction of its own, which takes both boards before its first write: the second
    unit's board, busy, delays the batch and does not undo it after the first status time
    has written (it would then go one mutation at a time, a transaction each)."""
    other = make_crew_member(program, unit=UnitFactory.create(program=program))
    first, second = _acknowledged(program, dispatcher, other), _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(dispatcher)
    mutations = [_status_time(device, assignment_id, "en_route", timezone.now()) for assignment_id in (first, second)]
    stored_unapplied(dispatcher, mutations)

    with board_held_elsewhere(crew_member.unit):
        sweeping = run_until_done_or_blocked(
            lambda: push.apply_stranded(older_than=timedelta(0)), blocked_on=board_key(crew_member.unit)
        )
    swept = sweeping.result()

    assert (sweeping.waited, swept) == (True, 1)
    statuses = set(Mutation.objects.filter(device=dispatcher.device).values_list("status", flat=True))
    assert statuses == {MutationStatus.APPLIED}
    assert {Assignment.objects.get(pk=pk).status for pk in (first, second)} == {AssignmentStatus.EN_ROUTE}
    transactions = ChangeEntry.objects.filter(
        record_type="dispatch.status_time", record_id__in=[uuid.UUID(mutation["id"]) for mutation in mutations]
    ).values_list("transaction_id", flat=True)
    assert len(set(transactions)) == 1, "applied one at a time"


@pytest.mark.django_db(transaction=True)  # two transactions, each on its own connection
@pytest.mark.parametrize(
    ("writer", "takes_the_board"),
    [
        ("crew_member", True),  # the unit's crew
        ("dispatcher", True),  # relaying a radio report
        ("outsider", False),  # a crew member of another unit of the program
        ("crew_of_another_program", False),
        ("foreign_dispatcher", False),  # a dispatcher of another program
    ],
)
def test_a_push_takes_the_board_of_a_status_times_unit_only_for_a_writer_who_may_report_it(
    request: pytest.FixtureRequest,
    program: Program,
    dispatcher: CrewMember,
    crew_member: CrewMember,
    writer: str,
    takes_the_board: bool,
) -> None:
    """Any device that named an assignment took its unit's board for as long as its push
    took, and was only then refused: the unit's crew's own report waited for it, and the
    dispatch sweep passed the unit over. The push takes the board only where its writer may
    report the assignment, as the apply decides: a crew member of its unit or a dispatcher
    of its program. Seen while the push waits for its status time's record lock, after the
    boards' and before its apply."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    member = (
        make_crew_member(ProgramFactory.create(slug="boston-pilot"))
        if writer == "crew_of_another_program"
        else request.getfixturevalue(writer)
    )
    device = SimDevice(member)
    mutation = _status_time(device, assignment_id, "en_route", timezone.now())
    board = board_key(crew_member.unit)

    with held_elsewhere(lambda: lock_records([uuid.UUID(mutation["id"])])):
        pushing = run_until_done_or_blocked(
            lambda: device.client().post("/api/v1/sync/push/", {"mutations": [mutation]}, format="json"),
            blocked_on=record_key(uuid.UUID(mutation["id"])),
        )
        board_held_by_the_push = pushing.outcome["pid"] in holders_of_advisory_lock(board)
    response = pushing.result()

    assert (pushing.waited, board_held_by_the_push) == (True, takes_the_board)
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    if takes_the_board:
        assert result["status"] == "applied", result
        assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.EN_ROUTE
    else:
        assert (result["status"], result["error"]["code"]) == ("quarantined", "not_permitted"), result
        assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.ACKNOWLEDGED


@pytest.mark.django_db
def test_the_boards_of_several_writers_status_times_are_read_in_one_query(
    django_assert_num_queries: Any,
    program: Program,
    dispatcher: CrewMember,
    crew_member: CrewMember,
    outsider: CrewMember,
    foreign_dispatcher: CrewMember,
) -> None:
    """A batch of several writers' status times (a review, the sweep of stranded pushes)
    reads the units of their boards at once, each writer's by what they may report: the
    crew, their own unit's; a dispatcher, their program's."""
    ours, theirs = _acknowledged(program, dispatcher, crew_member), _acknowledged(program, dispatcher, outsider)
    third_crew = make_crew_member(program)
    third = _acknowledged(program, dispatcher, third_crew)
    reports = {
        crew_member.user.pk: [ours, third],  # the third unit's, not theirs to report
        dispatcher.user.pk: [theirs],  # relaying a radio report
        foreign_dispatcher.user.pk: [third],
    }

    with django_assert_num_queries(1):
        units = set(selectors.units_of_assignments_reported(reports=reports))

    assert units == {crew_member.unit.pk, outsider.unit.pk}


@pytest.mark.django_db
def test_a_review_and_a_push_each_take_the_boards_of_their_status_times_once(
    monkeypatch: pytest.MonkeyPatch,
    program: Program,
    dispatcher: CrewMember,
    crew_member: CrewMember,
    supervisor: CrewMember,
) -> None:
    """The usual push took them before its first write, and its apply asked for them again
    (a read of the units and a try of each board, held already); so did a review's apply.
    Each transaction takes them once, before its first write."""
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    assignment_id = uuid.UUID(body["id"])
    device = SimDevice(crew_member)
    # Pushed before the acknowledgement reached the server: refused, kept for review.
    [refused] = device.push(_status_time(device, assignment_id, "en_route", timezone.now()))
    assert post(crew_member, body["id"], "acknowledge").status_code == 200
    taken: list[dict[uuid.UUID, set[uuid.UUID]]] = []
    lock_boards_of_assignments = services.lock_boards_of_assignments

    def counted(reports: Any) -> None:
        taken.append({user_id: set(ids) for user_id, ids in reports.items()})
        lock_boards_of_assignments(reports)

    monkeypatch.setattr(services, "lock_boards_of_assignments", counted)

    reviewed = sync_client(supervisor).post(
        "/api/v1/sync/quarantine/apply/",
        {"ids": [Mutation.objects.get(status=MutationStatus.QUARANTINED).pk]},
        format="json",
    )
    taken_by_the_review = list(taken)
    taken.clear()
    [pushed] = device.push(_status_time(device, assignment_id, "on_scene", timezone.now()))

    assert refused["error"]["code"] == "not_acknowledged"
    assert reviewed.status_code == 200, reviewed.content
    assert (reviewed.json()["results"][0]["status"], pushed["status"]) == ("applied", "applied")
    assert taken_by_the_review == taken == [{crew_member.user.pk: {assignment_id}}]
    assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.ON_SCENE


def _locked_alone(record_id: uuid.UUID) -> Any:
    def lock() -> None:
        with transaction.atomic():
            lock_records([record_id])

    return lock


@pytest.mark.django_db(transaction=True)  # two transactions, each on its own connection
def test_a_record_id_aimed_at_a_units_board_does_not_wait_for_the_board(program: Program) -> None:
    """Clients choose record ids. Keys made of an id's high half, salted per kind, let an id
    be chosen whose record lock was a unit's board: its push would wait for every action on
    the unit, or deadlock with one. Keys hashed with their kind cannot be aimed."""
    unit = UnitFactory.create(program=program)
    record_salt, board_salt = 0x5EC0_0000_0000_0001, 0x0B0A_2D00_0000_0003
    aimed = uuid.UUID(int=((unit.pk.int >> 64) ^ board_salt ^ record_salt) << 64 | uuid.uuid4().int >> 64)

    with board_held_elsewhere(unit):
        locking = run_until_done_or_blocked(_locked_alone(aimed), blocked_on=board_key(unit))
    locking.result()

    assert not locking.waited


@pytest.mark.django_db(transaction=True)  # two transactions, each on its own connection
def test_records_whose_ids_share_their_first_half_lock_apart() -> None:
    """A record's lock is its whole id's: a writer of one record never waits for a writer of
    another, however alike the ids."""
    held = uuid.uuid4()
    alike = uuid.UUID(int=held.int ^ 1)

    with held_elsewhere(lambda: lock_records([held])):
        locking = run_until_done_or_blocked(_locked_alone(alike), blocked_on=record_key(held))
    locking.result()

    assert not locking.waited
