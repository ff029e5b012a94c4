"""A crew's status times recorded offline, pushed with the tablet's outbox (dispatch.status_time)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import Program, Role
from apps.audit.models import AccessChannel, AuditEvent
from apps.audit.services import Accessor
from apps.dispatch.models import Assignment, AssignmentStatus, TimelineEvent
from apps.sync import review
from apps.sync.models import ChangeEntry, Conflict, Mutation, MutationStatus, RecordVersion, SyncedRecord
from apps.sync.services import lock_records
from tests.conftest import CrewMember, make_crew_member
from tests.dispatch.concurrency import (
    advisory_locks,
    board_held_elsewhere,
    board_key,
    record_key,
    run_until_done_or_blocked,
)
from tests.dispatch.factories import make_incident
from tests.dispatch.test_assignments import offer, post
from tests.sync.helpers import SimDevice, respelt
from tests.teams.factories import UnitFactory


def _acknowledged(program: Program, dispatcher: CrewMember, crew: CrewMember) -> uuid.UUID:
    body = offer(dispatcher, make_incident(program, dispatcher), crew.unit)
    assert post(crew, body["id"], "acknowledge").status_code == 200
    return uuid.UUID(body["id"])


def _status_time(device: SimDevice, assignment_id: uuid.UUID, status: str, observed_at: datetime) -> dict[str, Any]:
    fields = {"assignment_id": str(assignment_id), "status": status, "observed_at": observed_at.isoformat()}
    return device.mutation("create", "dispatch.status_time", uuid.uuid4(), fields)


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_status_times_recorded_offline_push_with_the_outbox_and_keep_the_crews_times(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    offered_at = Assignment.objects.get(pk=assignment_id).offered_at
    en_route_at, on_scene_at = offered_at + timedelta(milliseconds=300), offered_at + timedelta(milliseconds=600)
    outbox = [
        _status_time(device, assignment_id, "en_route", en_route_at),
        _status_time(device, assignment_id, "on_scene", on_scene_at),
    ]

    results = device.push(*outbox)
    replayed = device.push(*outbox)
    partner_sees, _ = SimDevice(make_crew_member(program, unit=crew_member.unit)).pull()
    dispatch_sees, _ = SimDevice(dispatcher).pull()

    assert [(r["status"], r["version"], r["data"]["applied"]) for r in results] == [("applied", 1, True)] * 2
    assert [r["status"] for r in replayed] == ["duplicate"] * 2
    assignment = Assignment.objects.get(pk=assignment_id)
    assert assignment.status == AssignmentStatus.ON_SCENE
    assert assignment.checkin_due_at is not None  # the check-in clock runs from the report
    events = TimelineEvent.objects.filter(pk__in=[m["id"] for m in outbox]).order_by("at")
    assert [(e.kind, e.observed_at, e.device_id) for e in events] == [
        ("en_route", en_route_at, crew_member.device.pk),
        ("on_scene", on_scene_at, crew_member.device.pk),
    ]
    # Each moved the assignment, and each is in the audit trail as that device's update of it.
    updates = AuditEvent.objects.filter(record_id=assignment_id, action="update", channel="sync")
    assert list(updates.values_list("device_id", "record_type")) == [(crew_member.device.pk, "dispatch.assignment")] * 2
    status_times = {m["id"] for m in outbox}
    for entries in (partner_sees, dispatch_sees):
        assert {e["id"] for e in entries if e["type"] == "dispatch.status_time"} == status_times
        latest = [e for e in entries if e["type"] == "dispatch.assignment"][-1]
        assert latest["data"]["status"] == "on_scene"


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_the_device_that_pushed_a_status_time_gets_the_assignment_it_moved_in_its_feed(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Over REST the answer carries the moved assignment; a push answers with the status time
    alone, so the pushing tablet learns the assignment's new status (and its check-in clock)
    only from its feed, as its partners do."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    offered_at = Assignment.objects.get(pk=assignment_id).offered_at

    [result] = device.push(_status_time(device, assignment_id, "on_scene", offered_at + timedelta(milliseconds=300)))
    entries, _ = device.pull(cursor)

    assert (result["status"], result["data"]["applied"]) == ("applied", True)
    assert {e["id"] for e in entries if e["type"] == "dispatch.status_time"} == set()  # its own write
    [moved] = [e for e in entries if e["type"] == "dispatch.assignment"]
    assert (moved["id"], moved["data"]["status"]) == (str(assignment_id), "on_scene")
    assert moved["data"]["checkin_due_at"] is not None


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_the_device_that_reported_a_status_over_rest_does_not_get_the_assignment_it_moved_back(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Over REST the answer carries the moved assignment, so its entry in the feed skips the
    reporting tablet (its own write), where a push's does not; the crew's other tablets get it."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    reporter, partner = SimDevice(crew_member), SimDevice(make_crew_member(program, unit=crew_member.unit))
    _, reporter_cursor = reporter.pull()
    _, partner_cursor = partner.pull()

    reported = post(crew_member, assignment_id, "status", {"status": "on_scene", "event_id": str(uuid.uuid4())})
    reporter_sees, _ = reporter.pull(reporter_cursor)
    partner_sees, _ = partner.pull(partner_cursor)

    assert (reported.status_code, reported.json()["status"]) == (200, "on_scene")
    assert [e["id"] for e in reporter_sees if e["type"] == "dispatch.assignment"] == []
    [moved] = [e for e in partner_sees if e["type"] == "dispatch.assignment"]
    assert (moved["id"], moved["data"]["status"]) == (str(assignment_id), "on_scene")


def test_a_status_time_arriving_after_a_later_one_is_kept_and_moves_nothing_back(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    on_scene = post(crew_member, assignment_id, "status", {"status": "on_scene"})
    assert on_scene.status_code == 200
    basement_phone = SimDevice(make_crew_member(program, unit=crew_member.unit))

    offered_at = Assignment.objects.get(pk=assignment_id).offered_at
    [late] = basement_phone.push(_status_time(basement_phone, assignment_id, "en_route", offered_at))

    assert (late["status"], late["data"]["applied"]) == ("applied", False)
    assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.ON_SCENE
    assert TimelineEvent.objects.get(pk=late["id"]).kind == "en_route"


def test_a_status_time_the_dispatch_rules_refuse_is_kept_for_a_supervisor(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    device = SimDevice(crew_member)
    too_old = _status_time(device, assignment_id, "en_route", timezone.now() - timedelta(hours=30))
    fine = _status_time(device, assignment_id, "on_scene", timezone.now())

    refused, applied = device.push(too_old, fine)

    assert (refused["status"], refused["error"]["code"], refused["error"]["field"]) == (
        "quarantined",
        "time_too_old",
        "fields.observed_at",
    )
    assert applied["status"] == "applied"  # the queue goes on behind it
    assert not TimelineEvent.objects.filter(pk=too_old["id"]).exists()
    kept = supervisor.client().get("/api/v1/sync/quarantine/").json()["results"]
    assert [(m["mutation_id"], m["program"]) for m in kept] == [(too_old["mutation_id"], str(program.pk))]


def test_status_times_are_append_only_and_only_the_crew_or_dispatch_reports_them(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    [created] = device.push(_status_time(device, assignment_id, "en_route", timezone.now()))
    other_crew = SimDevice(make_crew_member(program, unit=UnitFactory.create(program=program)))
    relayed_by_dispatch = SimDevice(dispatcher)

    [changed] = device.push(device.mutation("update", "dispatch.status_time", created["id"], {"status": "cleared"}, 1))
    [outsider] = other_crew.push(_status_time(other_crew, assignment_id, "on_scene", timezone.now()))
    [relayed] = relayed_by_dispatch.push(_status_time(relayed_by_dispatch, assignment_id, "on_scene", timezone.now()))
    [unknown] = device.push(_status_time(device, uuid.uuid4(), "cleared", timezone.now()))

    assert (changed["status"], changed["error"]["code"]) == ("quarantined", "append_only")
    assert (outsider["status"], outsider["error"]["code"]) == ("quarantined", "not_permitted")
    assert relayed["status"] == "applied"
    assert (unknown["error"]["code"], unknown["error"]["field"]) == ("parent_not_found", "fields.assignment_id")
    assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.ON_SCENE
    assert Mutation.objects.filter(status=MutationStatus.QUARANTINED).count() == 3


def test_a_change_of_a_status_time_without_a_base_is_refused_not_kept_as_a_conflict(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Status times are append-only whatever the change's base: a colleague's change of one
    with no base (or a delete) is refused as append_only, not held as a conflict."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    [created] = device.push(_status_time(device, assignment_id, "en_route", timezone.now()))
    relayer = SimDevice(dispatcher)

    [changed] = relayer.push(relayer.mutation("update", "dispatch.status_time", created["id"], {"status": "cleared"}))
    [deleted] = relayer.push(relayer.mutation("delete", "dispatch.status_time", created["id"]))

    assert [(r["status"], r["error"]["code"]) for r in (changed, deleted)] == [("quarantined", "append_only")] * 2
    assert not Conflict.objects.exists()
    assert TimelineEvent.objects.get(pk=created["id"]).kind == "en_route"


def _status_times(entries: list[dict[str, Any]]) -> list[tuple[str, int, str, str, str | None, bool]]:
    return [
        (
            entry["id"],
            entry["version"],
            entry["data"]["assignment_id"],
            entry["data"]["status"],
            entry["data"]["observed_at"],
            entry["data"]["applied"],
        )
        for entry in entries
        if entry["type"] == "dispatch.status_time"
    ]


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_a_status_reported_over_rest_is_a_status_time_in_the_crews_and_the_dispatchers_feeds(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """A tablet that keeps its unit's timeline from the feed missed every time a colleague
    reported online. The reporting device does not get back the time it gave an id; one it
    sent without an id it cannot hold under any, so that one comes back to it."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    reporter, partner, console = (
        SimDevice(crew_member),
        SimDevice(make_crew_member(program, unit=crew_member.unit)),
        SimDevice(dispatcher),
    )
    _, reporter_cursor = reporter.pull()
    _, partner_cursor = partner.pull()
    _, console_cursor = console.pull()
    event_id = uuid.uuid4()
    en_route_at = Assignment.objects.get(pk=assignment_id).offered_at + timedelta(milliseconds=300)

    en_route = post(
        crew_member,
        assignment_id,
        "status",
        {"status": "en_route", "observed_at": en_route_at.isoformat(), "event_id": str(event_id)},
    )
    on_scene = post(crew_member, assignment_id, "status", {"status": "on_scene"})
    reporter_sees, _ = reporter.pull(reporter_cursor)
    partner_sees, _ = partner.pull(partner_cursor)
    console_sees, _ = console.pull(console_cursor)

    assert (en_route.status_code, on_scene.status_code) == (200, 200)
    on_scene = TimelineEvent.objects.get(assignment_id=assignment_id, kind="on_scene")
    expected = [
        (str(event_id), 1, str(assignment_id), "en_route", _utc(en_route_at), True),
        (str(on_scene.pk), 1, str(assignment_id), "on_scene", _utc(on_scene.at), True),  # sent without a time
    ]
    assert _status_times(partner_sees) == expected
    assert _status_times(console_sees) == expected
    assert _status_times(reporter_sees) == expected[1:]


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_a_status_reported_over_rest_the_assignment_had_moved_past_is_in_the_feed_too(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    basement_phone = make_crew_member(program, unit=crew_member.unit)
    offered_at = Assignment.objects.get(pk=assignment_id).offered_at
    assert post(crew_member, assignment_id, "status", {"status": "on_scene"}).status_code == 200
    console = SimDevice(dispatcher)
    _, cursor = console.pull()
    event_id = uuid.uuid4()

    late = post(
        basement_phone,
        assignment_id,
        "status",
        {"status": "en_route", "observed_at": offered_at.isoformat(), "event_id": str(event_id)},
    )
    console_sees, _ = console.pull(cursor)

    assert (late.status_code, late.json()["applied"]) == (200, False)
    assert _status_times(console_sees) == [(str(event_id), 1, str(assignment_id), "en_route", _utc(offered_at), False)]
    assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.ON_SCENE


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_a_status_time_sent_over_rest_and_with_the_outbox_applies_once_in_either_order(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Published when it was reported over REST, the status time has a version when the
    outbox's create of it arrives: that create is the same report, answered applied at that
    version, never quarantined as a change of an append-only record, never a second event."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    partner = SimDevice(make_crew_member(program, unit=crew_member.unit))
    _, partner_cursor = partner.pull()
    mutation = _status_time(device, assignment_id, "en_route", timezone.now())
    over_rest = post(
        crew_member,
        assignment_id,
        "status",
        {"status": "en_route", "observed_at": mutation["fields"]["observed_at"], "event_id": mutation["id"]},
    )
    after_rest, partner_cursor = partner.pull(partner_cursor)

    [synced] = device.push(mutation)
    after_push, _ = partner.pull(partner_cursor)

    assert over_rest.status_code == 200
    assert [(entry[0], entry[1]) for entry in _status_times(after_rest)] == [(mutation["id"], 1)]
    assert (synced["status"], synced["version"], synced["data"]["applied"]) == ("applied", 1, True)
    assert _status_times(after_push) == []  # nothing new
    assert TimelineEvent.objects.filter(assignment_id=assignment_id, kind="en_route").count() == 1
    assert not Mutation.objects.filter(status=MutationStatus.QUARANTINED).exists()
    assert not Conflict.objects.exists()

    # The other order, which held before status times were published over REST too: pushed
    # first, then sent over REST (a retry) under the same id.
    _, partner_cursor = partner.pull()
    on_scene = _status_time(device, assignment_id, "on_scene", timezone.now())
    [pushed] = device.push(on_scene)
    retried = post(
        crew_member,
        assignment_id,
        "status",
        {"status": "on_scene", "observed_at": on_scene["fields"]["observed_at"], "event_id": on_scene["id"]},
    )
    partner_sees, _ = partner.pull(partner_cursor)

    assert (pushed["status"], pushed["version"]) == ("applied", 1)
    assert (retried.status_code, retried.json()["status"], retried.json()["applied"]) == (200, "on_scene", True)
    assert [(entry[0], entry[1]) for entry in _status_times(partner_sees)] == [(on_scene["id"], 1)]
    assert TimelineEvent.objects.filter(assignment_id=assignment_id, kind="on_scene").count() == 1


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_a_status_sent_over_rest_without_a_time_then_with_the_outbox_with_one_is_the_same_report(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Over REST a report without observed_at is the same report as one under its id with a
    time (the stored None matches any). The outbox's create of it met the status time as a
    conflict on observed_at and was quarantined event_id_reused; it is the same report, and
    answered applied at REST's version, writing nothing."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    partner = SimDevice(make_crew_member(program, unit=crew_member.unit))
    mutation = _status_time(device, assignment_id, "en_route", timezone.now())
    over_rest = post(crew_member, assignment_id, "status", {"status": "en_route", "event_id": mutation["id"]})
    _, partner_cursor = partner.pull()
    versions_before, entries_before = RecordVersion.objects.count(), ChangeEntry.objects.count()

    [synced] = device.push(mutation)
    after_push, _ = partner.pull(partner_cursor)

    assert over_rest.status_code == 200, over_rest.content
    assert (synced["status"], synced["version"]) == ("applied", 1)
    assert synced["data"] == over_rest.json()["status_time"]["data"]
    event = TimelineEvent.objects.get(assignment_id=assignment_id, kind="en_route")
    assert (str(event.pk), event.observed_at) == (mutation["id"], None)  # kept as reported
    assert not Mutation.objects.filter(status=MutationStatus.QUARANTINED).exists()
    assert not Conflict.objects.exists()
    assert RecordVersion.objects.count() == versions_before
    # Only the record as it stands, sent back to the device whose time it does not keep.
    assert ChangeEntry.objects.count() == entries_before + 1
    assert after_push == []


def _audited_status_times(events: list[AuditEvent]) -> list[tuple[str, str, Any, Any, str]]:
    return [
        (str(event.record_id), event.action, event.actor_id, event.device_id, event.channel)
        for event in events
        if event.record_type == "dispatch.status_time"
    ]


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_a_status_reported_over_rest_is_audited_as_the_status_time_it_creates(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The REST update audited the assignment's update, not the status time it created and
    published; sent again, its answer shows that status time: a read of it."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    event_id = str(uuid.uuid4())
    report = {"status": "en_route", "observed_at": timezone.now().isoformat(), "event_id": event_id}
    before = AuditEvent.objects.count()

    reported = post(crew_member, assignment_id, "status", report)
    middle = AuditEvent.objects.count()
    retried = post(crew_member, assignment_id, "status", report)

    assert (reported.status_code, retried.status_code) == (200, 200)
    member = (crew_member.user.pk, crew_member.device.pk)
    by_report = list(AuditEvent.objects.order_by("id")[before:middle])
    assert _audited_status_times(by_report) == [(event_id, "create", *member, AccessChannel.API)]
    assert [event.program_id for event in by_report if event.record_type == "dispatch.status_time"] == [program.pk]
    by_retry = list(AuditEvent.objects.order_by("id")[middle:])
    assert _audited_status_times(by_retry) == [(event_id, "read", *member, AccessChannel.API)]


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_after_its_repeat_the_device_pulls_the_status_time_at_the_servers_time_not_its_own(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Reported over REST without a time, the status time is served at the time the server took
    it, and does not come back to its device (its own write). The outbox's create of it, with
    the device's time, is answered with the server's record and writes nothing: a client that
    ignores push results (WatermelonDB) kept its own time forever, while every other device
    had the server's. Its next pull brings the record as it stands."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    mutation = _status_time(device, assignment_id, "en_route", timezone.now() - timedelta(minutes=3))
    over_rest = post(crew_member, assignment_id, "status", {"status": "en_route", "event_id": mutation["id"]})
    after_rest, cursor = device.pull(cursor)
    versions_before = RecordVersion.objects.count()

    [synced] = device.push(mutation)
    after_push, _ = device.pull(cursor)

    assert over_rest.status_code == 200, over_rest.content
    event = TimelineEvent.objects.get(assignment_id=assignment_id, kind="en_route")
    served = _utc(event.at)
    assert _status_times(after_rest) == []  # its own write
    assert (synced["status"], synced["version"], synced["repeated"]) == ("applied", 1, True)
    assert synced["data"]["observed_at"] == served != mutation["fields"]["observed_at"]
    assert _status_times(after_push) == [(mutation["id"], 1, str(assignment_id), "en_route", served, True)]
    assert RecordVersion.objects.count() == versions_before


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_the_outbox_create_that_repeats_a_status_time_is_audited_as_a_read_not_a_create(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Reported over REST, then pushed with the outbox under its event_id: the push writes
    nothing, and was audited as a create it never made. Its answer shows the record: a read."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    mutation = _status_time(device, assignment_id, "en_route", timezone.now())
    over_rest = post(
        crew_member,
        assignment_id,
        "status",
        {"status": "en_route", "observed_at": mutation["fields"]["observed_at"], "event_id": mutation["id"]},
    )
    before = AuditEvent.objects.count()

    [synced] = device.push(mutation)

    assert (over_rest.status_code, synced["status"], synced["repeated"]) == (200, "applied", True)
    by_push = list(AuditEvent.objects.order_by("id")[before:])
    member = (crew_member.user.pk, crew_member.device.pk)
    assert _audited_status_times(by_push) == [(mutation["id"], "read", *member, AccessChannel.SYNC)]


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_a_status_reported_over_rest_without_a_time_is_served_at_the_time_the_server_took_it(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Published with observed_at null, where the record type holds a time for every status
    time: a device's timeline had nothing to place it at."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    partner = SimDevice(make_crew_member(program, unit=crew_member.unit))
    _, cursor = partner.pull()

    response = post(crew_member, assignment_id, "status", {"status": "on_scene"})
    partner_sees, _ = partner.pull(cursor)
    snapshot = partner.client().get("/api/v1/sync/snapshot/").json()["records"]

    assert response.status_code == 200, response.content
    event = TimelineEvent.objects.get(assignment_id=assignment_id, kind="on_scene")
    assert event.observed_at is None  # the crew gave none
    served = _utc(event.at)
    assert _status_times(partner_sees) == [(str(event.pk), 1, str(assignment_id), "on_scene", served, True)]
    [in_snapshot] = [record for record in snapshot if record["type"] == "dispatch.status_time"]
    assert (in_snapshot["id"], in_snapshot["data"]["observed_at"]) == (str(event.pk), served)
    assert response.json()["status_time"]["data"]["observed_at"] == served


@pytest.mark.django_db(transaction=True)  # the feed serves only what has committed
def test_the_rest_answer_carries_the_status_time_the_report_is_in_the_feeds_as(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """A report sent with an event_id does not come back to its device through the feed (its
    own write), and the answer held the assignment alone: a client that keeps its timeline
    never got its own report's version. The answer carries the status time as the feed
    serves it, on a retry too, and for a report sent without an event_id (under the id the
    server gave it)."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    partner = SimDevice(make_crew_member(program, unit=crew_member.unit))
    _, cursor = partner.pull()
    event_id = uuid.uuid4()
    en_route = {"status": "en_route", "observed_at": timezone.now().isoformat(), "event_id": str(event_id)}

    reported = post(crew_member, assignment_id, "status", en_route)
    retried = post(crew_member, assignment_id, "status", en_route)
    without_id = post(crew_member, assignment_id, "status", {"status": "on_scene"})
    partner_sees, _ = partner.pull(cursor)

    served = {
        entry["id"]: {"type": entry["type"], "id": entry["id"], "version": entry["version"], "data": entry["data"]}
        for entry in partner_sees
        if entry["type"] == "dispatch.status_time"
    }
    on_scene_id = str(TimelineEvent.objects.get(assignment_id=assignment_id, kind="on_scene").pk)
    assert [response.status_code for response in (reported, retried, without_id)] == [200] * 3
    assert reported.json()["status_time"] == served[str(event_id)]
    assert reported.json()["status_time"]["version"] == 1
    assert retried.json()["status_time"] == served[str(event_id)]
    assert without_id.json()["status_time"] == served[on_scene_id]
    assert (reported.json()["status"], without_id.json()["status"]) == ("en_route", "on_scene")  # the assignment


@pytest.mark.django_db(transaction=True)  # a second request waits on the first's lock
def test_a_status_reported_over_rest_takes_the_units_board_before_its_record_lock(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """A push of a status time takes the unit's board before its records' locks (the type's
    lock_before_writing). Over REST the report took the event's record lock first, then the
    board: with a push of the same id each could hold what the other waits for. It takes
    the board first, and waits for the record holding it."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    event_id = uuid.uuid4()
    report = {"status": "en_route", "observed_at": timezone.now().isoformat(), "event_id": str(event_id)}

    with transaction.atomic():
        lock_records([event_id])  # another writer of the status time
        reporting = run_until_done_or_blocked(
            lambda: post(crew_member, assignment_id, "status", report), blocked_on=record_key(event_id)
        )
        holds = advisory_locks(reporting.outcome["pid"], granted=True)
        waits_for = advisory_locks(reporting.outcome["pid"], granted=False)
    answer = reporting.result()

    assert reporting.waited
    assert board_key(crew_member.unit) in holds
    assert waits_for == {record_key(event_id)}
    assert answer.status_code == 200, answer.content
    assert TimelineEvent.objects.filter(pk=event_id).count() == 1


@pytest.mark.django_db(transaction=True)  # three transactions, each on its own connection
def test_a_status_sent_over_rest_and_pushed_at_once_under_one_id_is_applied_once_without_a_deadlock(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The push waits for the unit's board, then the same time is reported over REST: the REST
    report took the event's record lock, then waited for the board behind the push, which got
    the board and waited for the record: a deadlock, one of them failed. Both now queue on
    the board, and the second is the same report as the first."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    mutation = _status_time(device, assignment_id, "en_route", timezone.now())
    report = {"status": "en_route", "observed_at": mutation["fields"]["observed_at"], "event_id": mutation["id"]}

    with board_held_elsewhere(crew_member.unit):
        pushing = run_until_done_or_blocked(
            lambda: device.client().post("/api/v1/sync/push/", {"mutations": [mutation]}, format="json"),
            blocked_on=board_key(crew_member.unit),
        )
        reporting = run_until_done_or_blocked(
            lambda: post(crew_member, assignment_id, "status", report), blocked_on=board_key(crew_member.unit)
        )
    pushed, answer = pushing.result(), reporting.result()  # neither failed (a deadlock would)

    assert pushing.waited and reporting.waited
    [result] = pushed.json()["results"]
    assert (result["status"], result["version"], result["data"]["applied"]) == ("applied", 1, True)
    assert (answer.status_code, answer.json()["applied"]) == (200, True)
    assert TimelineEvent.objects.filter(pk=mutation["id"]).count() == 1
    assert TimelineEvent.objects.filter(assignment_id=assignment_id, kind="en_route").count() == 1
    assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.EN_ROUTE


@respelt
def test_an_event_id_spelt_otherwise_than_sync_writes_ids_is_refused_over_rest(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, respell: Callable[[uuid.UUID], str]
) -> None:
    """The event is the status time synced to the crew's devices under its id: a device that
    sent it uppercase would get it back under an id it does not hold."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    event_id = uuid.uuid4()

    response = post(crew_member, assignment_id, "status", {"status": "en_route", "event_id": respell(event_id)})

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "field": "event_id",
            "code": "invalid",
            "detail": "Must be a UUID written in lowercase, 8-4-4-4-12 hex digits.",
        }
    ]
    assert not TimelineEvent.objects.filter(pk=event_id).exists()
    assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.ACKNOWLEDGED


def test_an_event_id_that_names_another_timeline_event_is_refused_not_a_fault(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    offered = TimelineEvent.objects.get(assignment_id=assignment_id, kind="offered")
    device = SimDevice(crew_member)
    mutation = _status_time(device, assignment_id, "en_route", timezone.now())
    mutation["id"] = str(offered.pk)

    over_rest = post(crew_member, assignment_id, "status", {"status": "en_route", "event_id": str(offered.pk)})
    [synced] = device.push(mutation)

    assert (over_rest.status_code, over_rest.json()["code"]) == (400, "event_id_reused")
    assert (synced["status"], synced["error"]["code"]) == ("quarantined", "event_id_reused")
    assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.ACKNOWLEDGED


def test_an_event_id_that_names_another_synced_record_is_refused_and_that_record_stays(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """A status under the id of a person a device had created was published over the person's
    head: the person became a status time in every feed, left the snapshot, and its author's
    edits were refused as not_permitted."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    person_id = uuid.uuid4()
    [person] = device.push(
        device.mutation("create", "care.person", person_id, {"unit_id": str(crew_member.unit.pk), "given_name": "Ana"})
    )

    response = post(crew_member, assignment_id, "status", {"status": "en_route", "event_id": str(person_id)})
    [edited] = device.push(device.mutation("update", "care.person", person_id, {"given_name": "Ana Maria"}, 1))

    assert person["status"] == "applied"
    assert (response.status_code, response.json()["code"], response.json()["errors"][0]["field"]) == (
        400,
        "event_id_reused",
        "event_id",
    )
    assert not TimelineEvent.objects.filter(pk=person_id).exists()
    assert (edited["status"], edited["version"]) == ("applied", 2)
    assert SyncedRecord.objects.filter(record_id=person_id).values_list("record_type", "version").get() == (
        "care.person",
        2,
    )
    assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.ACKNOWLEDGED


def test_another_report_under_the_event_id_of_an_earlier_one_is_refused_not_dropped(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Taken for a retry of the first, on scene under the id of an en route was answered
    applied (over REST, and in the push's result naming en route) and never recorded."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    on_scene = _status_time(device, assignment_id, "on_scene", timezone.now())
    first_time = timezone.now()
    en_route = {"status": "en_route", "event_id": on_scene["id"], "observed_at": first_time.isoformat()}
    assert post(crew_member, assignment_id, "status", en_route).status_code == 200

    over_rest = post(crew_member, assignment_id, "status", {**en_route, "status": "on_scene"})
    retimed = post(crew_member, assignment_id, "status", {**en_route, "observed_at": timezone.now().isoformat()})
    [synced] = device.push(on_scene)
    retried = post(crew_member, assignment_id, "status", en_route)

    assert (over_rest.status_code, over_rest.json()["code"]) == (400, "event_id_reused")
    assert (retimed.status_code, retimed.json()["code"]) == (400, "event_id_reused")
    assert (synced["status"], synced["error"]["code"]) == ("quarantined", "event_id_reused")
    assert (retried.status_code, retried.json()["status"]) == (200, "en_route")  # the same report again
    assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.EN_ROUTE


def test_a_crew_clock_a_little_behind_does_not_date_the_call_served_before_its_offer(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Within the clocks' tolerance, an on scene observed before the offer was taken as the
    time the call was served: before it was received, and the dashboard's call-to-scene
    time went negative."""
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    assignment = Assignment.objects.get(pk=assignment_id)
    device = SimDevice(crew_member)
    observed = assignment.offered_at - timedelta(seconds=100)

    [result] = device.push(_status_time(device, assignment_id, "on_scene", observed))

    assert result["status"] == "applied"
    assert TimelineEvent.objects.get(pk=result["id"]).observed_at == observed  # kept as observed
    assignment.incident.refresh_from_db()
    assert assignment.incident.served_at == assignment.offered_at


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"status": "acknowledged"}, "invalid_fields", "fields.status"),
        ({"status": 3}, "invalid_fields", "fields.status"),
        ({"observed_at": "yesterday"}, "invalid_fields", "fields.observed_at"),
        ({"assignment_id": "not-a-uuid"}, "invalid_fields", "fields.assignment_id"),
        ({"speed_kmh": 40}, "invalid_fields", "fields.speed_kmh"),
    ],
)
def test_a_malformed_status_time_is_kept_naming_its_field(
    program: Program,
    dispatcher: CrewMember,
    crew_member: CrewMember,
    fields: dict[str, Any],
    code: str,
    field: str,
) -> None:
    assignment_id = _acknowledged(program, dispatcher, crew_member)
    device = SimDevice(crew_member)
    mutation = _status_time(device, assignment_id, "en_route", timezone.now())
    mutation["fields"].update(fields)

    [result] = device.push(mutation)

    assert (result["status"], result["error"]["code"], result["error"]["field"]) == ("quarantined", code, field)
    assert Assignment.objects.get(pk=assignment_id).status == AssignmentStatus.ACKNOWLEDGED


def test_a_status_time_applied_after_review_audits_the_assignments_update_as_the_reviewers(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, supervisor: CrewMember
) -> None:
    """The assignment it moves was audited as written by the crew's device, at a moment that
    device wrote nothing (it may be lost, revoked): a reviewed change is the reviewer's."""
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    assignment_id = uuid.UUID(body["id"])
    device = SimDevice(crew_member)
    # Pushed before the acknowledgement reached the server: refused, kept for review.
    [refused] = device.push(_status_time(device, assignment_id, "en_route", timezone.now()))
    assert post(crew_member, body["id"], "acknowledge").status_code == 200
    reviewed_from = Accessor(user=supervisor.user, device_id=supervisor.device.pk, channel=AccessChannel.SYNC)
    before = AuditEvent.objects.count()

    [result] = review.apply_after_review(
        mutation_ids=[Mutation.objects.get(status=MutationStatus.QUARANTINED).pk],
        reviewer=supervisor.user,
        accessor=reviewed_from,
    )

    assert (refused["error"]["code"], result["status"]) == ("not_acknowledged", "applied")
    written = AuditEvent.objects.order_by("id")[before:]
    assert {(event.record_type, event.action, event.actor_id, event.device_id) for event in written} >= {
        ("dispatch.assignment", "update", supervisor.user.pk, supervisor.device.pk)
    }
    assert not [event for event in written if event.device_id == crew_member.device.pk]
