"""Pull: the bootstrap snapshot, tombstones, retention (410) and scope changes (P5)."""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.accounts.models import Program, Role
from apps.care.models import Encounter
from apps.care.services import encounter_reassign
from apps.sync import selectors, services
from apps.sync.models import Audience, ChangeEntry, Mutation, MutationStatus, UserScopeState
from apps.sync.scopes import audience_of, program_role_scope, scopes_for_user, unit_scope, user_scope
from apps.teams import services as teams_services
from apps.teams.models import UnitMember
from tests.accounts.factories import MembershipFactory, UserFactory, device_with_token
from tests.care.factories import encounter, pushed
from tests.conftest import CrewMember, in_the_admin, make_crew_member
from tests.sync.helpers import SimDevice, encounter_fields, sync_client, younger_writes_before_the_catch_up
from tests.teams.factories import UnitFactory, UnitMemberFactory

pytestmark = pytest.mark.django_db(transaction=True)


def held_after(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a device holds once it applied these feed entries in order, by record id."""
    held: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry["op"] == "upsert":
            held[entry["id"]] = entry
        else:
            held.pop(entry["id"], None)
    return held


def snapshot(member: CrewMember, limit: int = 1000) -> tuple[list[list[dict[str, Any]]], str]:
    pages: list[list[dict[str, Any]]] = []
    cursor = ""
    while True:
        params: dict[str, str | int] = {"cursor": cursor, "limit": limit}
        response = sync_client(member).get("/api/v1/sync/snapshot/", params)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append(body["records"])
        if not body["has_more"]:
            assert body["cursor"] is None
            return pages, body["feed_cursor"]
        assert body["feed_cursor"] is None
        cursor = body["cursor"]


def test_snapshot_pages_through_every_live_record_in_scope_once(
    program: Program, crew_member: CrewMember, outsider: CrewMember
) -> None:
    ours = sorted(str(encounter(crew_member)) for _ in range(5))
    encounter(outsider)
    case_manager = make_crew_member(program, role=Role.CASE_MANAGER, unit=crew_member.unit)

    pages, feed_cursor = snapshot(crew_member, limit=2)
    manager_pages, _ = snapshot(case_manager, limit=3)

    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(record["id"] for page in pages for record in page) == ours
    assert pages[0][0]["version"] == 1 and pages[0][0]["data"]["unit_id"] == str(crew_member.unit.pk)
    # Seen through two scopes (the unit and the program's case managers), sent once.
    manager_ids = [record["id"] for page in manager_pages for record in page]
    assert len(manager_ids) == len(set(manager_ids)) == 6
    assert feed_cursor


def test_a_snapshot_cursor_continues_only_on_the_device_it_was_issued_to(crew_member: CrewMember) -> None:
    ours = sorted(str(encounter(crew_member)) for _ in range(3))
    first = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"limit": 1}).json()
    # The tablet signed in again (a new device), resuming the snapshot its last sign-in began:
    # a snapshot follows its reader's audiences, so it could end "complete" without them.
    device, token = device_with_token(crew_member.user, name="Tablet, signed in again")
    signed_in_again = dataclasses.replace(crew_member, device=device, token=token)

    refused = sync_client(signed_in_again).get("/api/v1/sync/snapshot/", {"cursor": first["cursor"]})
    rest = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"cursor": first["cursor"]}).json()
    anew = sync_client(signed_in_again).get("/api/v1/sync/snapshot/").json()

    assert refused.status_code == 400
    assert (refused.json()["code"], refused.json()["errors"][0]["field"]) == ("invalid_cursor", "cursor")
    assert sorted(record["id"] for record in first["records"] + rest["records"]) == ours
    assert sorted(record["id"] for record in anew["records"]) == ours


def test_a_snapshot_cursor_issued_before_cursors_named_their_device_still_continues(
    crew_member: CrewMember,
) -> None:
    ours = sorted(str(encounter(crew_member)) for _ in range(3))
    first = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"limit": 1}).json()
    position = selectors.SnapshotPosition.decode(first["cursor"])
    raw = json.dumps(
        [position.feed.transaction_id, position.feed.entry_id, position.audience, str(position.after)]
    ).encode()
    earlier_format = base64.urlsafe_b64encode(raw).decode().rstrip("=")

    rest = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"cursor": earlier_format})

    assert rest.status_code == 200, rest.content
    assert sorted(record["id"] for record in first["records"] + rest.json()["records"]) == ours


def test_a_feed_cursor_continues_only_on_the_device_it_was_issued_to(crew_member: CrewMember) -> None:
    encounter(crew_member)
    _, feed_cursor = snapshot(crew_member)
    after = encounter(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    page = sync_client(crew_member).get("/api/v1/sync/feed/", {"cursor": feed_cursor}).json()
    device, token = device_with_token(crew_member.user, name="Tablet, signed in again")
    signed_in_again = dataclasses.replace(crew_member, device=device, token=token)
    issued = [feed_cursor, page["cursor"], page["entries"][0]["cursor"]]

    refused = [sync_client(signed_in_again).get("/api/v1/sync/feed/", {"cursor": cursor}) for cursor in issued]
    own = [sync_client(crew_member).get("/api/v1/sync/feed/", {"cursor": cursor}) for cursor in issued]
    position = selectors.FeedPosition.decode(page["cursor"])
    earlier_format = base64.urlsafe_b64encode(f"{position.transaction_id}.{position.entry_id}".encode()).decode()
    from_earlier = sync_client(signed_in_again).get("/api/v1/sync/feed/", {"cursor": earlier_format.rstrip("=")})

    assert [(r.status_code, r.json()["code"], r.json()["errors"][0]["field"]) for r in refused] == [
        (400, "invalid_cursor", "cursor")
    ] * 3
    assert [response.status_code for response in own] == [200, 200, 200]
    # A cursor issued before cursors named their device continues, on any device.
    assert (from_earlier.status_code, from_earlier.json()["entries"]) == (200, [])
    assert [entry["id"] for entry in page["entries"]] == [str(after)]


def test_what_changes_while_a_snapshot_is_read_is_in_the_feed_after_it(crew_member: CrewMember) -> None:
    first = encounter(crew_member)
    response = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"limit": 1})
    cursor = response.json()["cursor"]
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    during = encounter(teammate, location="during the snapshot")
    device = SimDevice(teammate)
    device.push(device.mutation("update", "care.encounter", first, {"location": "moved"}, base_version=1))

    rest = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"cursor": cursor}).json()
    entries, _ = SimDevice(crew_member).pull(rest["feed_cursor"])

    fed = {(entry["id"], entry["version"]) for entry in entries}
    assert (str(during), 1) in fed and (str(first), 2) in fed


@pytest.mark.parametrize("change", ["leaves", "joins"])
def test_a_change_of_crew_committed_as_the_snapshot_begins_is_in_it_or_in_the_feed_after_it(
    program: Program, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    other_unit = UnitFactory.create(program=program)
    theirs = encounter(make_crew_member(program, unit=other_unit))
    if change == "leaves":
        teams_services.unit_member_add(unit=other_unit, user=crew_member.user)
    change_of_crew = teams_services.unit_member_remove if change == "leaves" else teams_services.unit_member_add
    begin = selectors.snapshot_start

    def begin_once_an_admin_has_changed_the_crew(*args: Any) -> Any:
        # After the request read the user's scopes, before the snapshot's position is taken.
        admin = threading.Thread(target=_in_own_connection(change_of_crew), args=(other_unit, crew_member.user))
        admin.start()
        admin.join(timeout=30)
        assert not admin.is_alive()
        return begin(*args)

    monkeypatch.setattr(selectors, "snapshot_start", begin_once_an_admin_has_changed_the_crew)
    pages, feed_cursor = snapshot(crew_member)
    monkeypatch.setattr(selectors, "snapshot_start", begin)
    entries, _ = SimDevice(crew_member).pull(feed_cursor)

    on_device = {record["id"] for page in pages for record in page}
    for entry in entries:
        (on_device.add if entry["op"] == "upsert" else on_device.discard)(entry["id"])
    assert (str(theirs) in on_device) is (change == "joins")


def _in_own_connection(change_of_crew: Any) -> Any:
    def run(unit: Any, user: Any) -> None:
        try:
            change_of_crew(unit=unit, user=user)
        finally:
            connection.close()

    return run


def test_a_cursor_older_than_the_retention_gets_410_and_the_snapshot_recovers(crew_member: CrewMember) -> None:
    record_id = encounter(crew_member)
    old_cursor = SimDevice(crew_member).pull()[1]
    encounter(crew_member)

    services.feed_prune(older_than=timedelta(0))
    expired = sync_client(crew_member).get("/api/v1/sync/feed/", {"cursor": old_cursor})
    pages, feed_cursor = snapshot(crew_member)

    assert expired.status_code == 410 and expired.json()["code"] == "cursor_expired"
    assert expired.json()["database_restored"] is False
    assert str(record_id) in [record["id"] for record in pages[0]]
    assert sync_client(crew_member).get("/api/v1/sync/feed/", {"cursor": feed_cursor}).status_code == 200


def test_a_snapshot_resumed_after_the_retention_passed_its_start_gets_410_at_once(crew_member: CrewMember) -> None:
    """Its pages would end in a feed cursor already expired, and the device, after paging
    through every record, would start the snapshot over: it is told so before it does."""
    for _ in range(2):
        encounter(crew_member)
    first = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"limit": 1}).json()
    assert first["has_more"]
    encounter(crew_member)  # a change after the snapshot's start, pruned below
    services.feed_prune(older_than=timedelta(0))

    resumed = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"cursor": first["cursor"], "limit": 1})

    assert resumed.status_code == 410, resumed.content
    assert (resumed.json()["code"], resumed.json()["errors"][0]["field"]) == ("cursor_expired", "cursor")


def test_a_cursor_within_a_pruned_transaction_gets_410_not_the_rest_of_it_skipped(crew_member: CrewMember) -> None:
    """The pruning deletes whole transactions, so a cursor is either served in full or
    expired. A device whose last page ended part-way through a transaction (a colleague's
    batch of records, paged with a small limit) has not had the rest of it: once that
    transaction is pruned, continuing would skip those records, so it must get 410."""
    teammate = SimDevice(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    teammate.push(  # one push, one transaction, two entries the device reads
        *(
            teammate.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(teammate.member))
            for _ in range(2)
        )
    )
    first = sync_client(crew_member).get("/api/v1/sync/feed/", {"limit": 1}).json()
    assert len(first["entries"]) == 1 and first["has_more"]
    ChangeEntry.objects.update(created_at=timezone.now() - timedelta(days=40))

    services.feed_prune(older_than=timedelta(days=30))
    rest = sync_client(crew_member).get("/api/v1/sync/feed/", {"cursor": first["cursor"], "limit": 1})

    assert (rest.status_code, rest.json().get("code")) == (410, "cursor_expired"), rest.json()


def test_a_cursor_of_a_device_whose_scopes_are_quiet_outlives_the_pruning_of_others_entries(
    program: Program, crew_member: CrewMember
) -> None:
    ours = encounter(make_crew_member(program, unit=crew_member.unit))
    busy_crew = make_crew_member(program)
    theirs = encounter(busy_crew)
    encounter(busy_crew)
    # Our unit's last change was 40 days ago; the other crew's first 31 days ago.
    ChangeEntry.objects.filter(record_id=ours).update(created_at=timezone.now() - timedelta(days=40))
    ChangeEntry.objects.filter(record_id=theirs).update(created_at=timezone.now() - timedelta(days=31))
    first = sync_client(crew_member).get("/api/v1/sync/feed/").json()
    again = sync_client(crew_member).get("/api/v1/sync/feed/", {"cursor": first["cursor"]}).json()

    services.feed_prune(older_than=timedelta(days=30))
    tomorrow = sync_client(crew_member).get("/api/v1/sync/feed/", {"cursor": again["cursor"]})

    assert [e["id"] for e in first["entries"]] == [str(ours)] and again["entries"] == []
    assert tomorrow.status_code == 200, tomorrow.json()
    assert tomorrow.json()["entries"] == []


def test_a_cursor_from_a_database_since_restored_gets_410_not_an_empty_feed(crew_member: CrewMember) -> None:
    """Restored from a backup, the database hands out transaction ids the devices' cursors
    have passed already: continuing from such a cursor would skip every change until the
    ids caught up. The device re-bootstraps instead."""
    _, cursor = SimDevice(crew_member).pull()
    served = selectors.FeedPosition.decode(cursor)
    # The database restored to before the device's last pull: its cursor is a thousand
    # transactions ahead of anything this one has assigned.
    with connection.cursor() as sql:
        sql.execute("SELECT pg_current_xact_id()::text::bigint")
        (now,) = sql.fetchone()
    ahead = selectors.FeedPosition(now + 1000, served.entry_id).encode()
    record_id = encounter(crew_member)

    refused = sync_client(crew_member).get("/api/v1/sync/feed/", {"cursor": ahead})
    pages, feed_cursor = snapshot(crew_member)

    assert refused.status_code == 410
    assert (refused.json()["code"], refused.json()["errors"][0]["field"]) == ("cursor_expired", "cursor")
    assert refused.json()["database_restored"] is True  # the outbox's base versions may be another timeline's
    assert str(record_id) in [record["id"] for page in pages for record in page]
    assert sync_client(crew_member).get("/api/v1/sync/feed/", {"cursor": feed_cursor}).status_code == 200


def test_a_cursor_is_ahead_from_the_first_transaction_id_not_yet_assigned() -> None:
    """A served position is below the oldest running transaction, so at most one below the
    next id to be assigned: that one is the first a restored database's cursor can name."""
    selectors._check_not_ahead(selectors.FeedPosition(99, 1), next_transaction_id=100)
    with pytest.raises(selectors.CursorAhead):
        selectors._check_not_ahead(selectors.FeedPosition(100, 1), next_transaction_id=100)


def test_a_snapshot_cursor_from_a_database_since_restored_gets_410_at_once(crew_member: CrewMember) -> None:
    """Its pages would end in a feed cursor the feed refuses: the device paged through every
    record only to be sent back to the start."""
    for _ in range(2):
        encounter(crew_member)
    first = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"limit": 1}).json()
    issued = selectors.SnapshotPosition.decode(first["cursor"])
    with connection.cursor() as sql:
        sql.execute("SELECT pg_current_xact_id()::text::bigint")
        (now,) = sql.fetchone()
    ahead = selectors.SnapshotPosition(
        selectors.FeedPosition(now + 1000, issued.feed.entry_id), issued.audience, issued.after, issued.device_tag
    ).encode()

    refused = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"cursor": ahead})

    assert first["has_more"] is True
    assert refused.status_code == 410
    assert (refused.json()["code"], refused.json()["errors"][0]["field"]) == ("cursor_expired", "cursor")
    assert refused.json()["database_restored"] is True


def test_reassigned_encounter_is_removed_from_the_old_units_devices_and_their_edits_are_quarantined(
    program: Program, crew_member: CrewMember
) -> None:
    record_id = encounter(crew_member, location="before")
    old_crew = SimDevice(crew_member)
    _, cursor = old_crew.pull()
    new_unit = UnitFactory.create(program=program)
    new_crew = SimDevice(make_crew_member(program, unit=new_unit))
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)

    encounter_reassign(
        encounter=Encounter.objects.get(pk=record_id),
        unit=new_unit,
        actor=supervisor.user,
        accessor=in_the_admin(supervisor.user),
    )
    removed, _ = old_crew.pull(cursor)
    gained, _ = new_crew.pull()
    [pending] = old_crew.push(old_crew.mutation("update", "care.encounter", record_id, {"location": "offline"}, 1))

    assert [(e["id"], e["op"], e.get("reason")) for e in removed] == [(str(record_id), "remove", "out_of_scope")]
    assert [(e["id"], e["op"]) for e in gained] == [(str(record_id), "upsert")]
    assert (pending["status"], pending["error"]["code"]) == ("quarantined", "not_permitted")
    assert Encounter.objects.get(pk=record_id).location == "before"
    kept = supervisor.client().get("/api/v1/sync/quarantine/").json()["results"]
    assert [m["payload"]["fields"] for m in kept] == [{"location": "offline"}]


def test_leaving_a_unit_removes_its_records_and_joining_one_brings_them(
    program: Program, crew_member: CrewMember
) -> None:
    stays_visible = make_crew_member(program, unit=crew_member.unit)
    record_id = encounter(stays_visible)
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    other_unit = UnitFactory.create(program=program)
    elsewhere = encounter(make_crew_member(program, unit=other_unit))

    UnitMember.objects.filter(user=crew_member.user, unit=crew_member.unit).delete()
    UnitMemberFactory.create(user=crew_member.user, unit=other_unit)
    entries, _ = device.pull(cursor)

    assert {(e["id"], e["op"]) for e in entries} == {(str(record_id), "remove"), (str(elsewhere), "upsert")}
    [late] = device.push(device.mutation("update", "care.encounter", record_id, {"location": "x"}, 1))
    assert late["status"] == "quarantined"
    assert Mutation.objects.filter(status=MutationStatus.QUARANTINED, user=crew_member.user).count() == 1


def test_a_record_moved_out_of_a_unit_before_its_member_left_is_removed_from_their_device(
    program: Program, crew_member: CrewMember
) -> None:
    moved = encounter(make_crew_member(program, unit=crew_member.unit))
    device = SimDevice(crew_member)
    first, cursor = device.pull()
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)

    # While the tablet is offline: the encounter goes to another crew, then its member leaves.
    encounter_reassign(
        encounter=Encounter.objects.get(pk=moved),
        unit=UnitFactory.create(program=program),
        actor=supervisor.user,
        accessor=in_the_admin(supervisor.user),
    )
    teams_services.unit_member_remove(unit=crew_member.unit, user=crew_member.user)
    later, _ = device.pull(cursor)

    assert [e["id"] for e in first] == [str(moved)]
    assert [(e["id"], e["op"]) for e in later] == [(str(moved), "remove")]


def test_leaving_a_unit_removes_no_record_deleted_before_the_change(program: Program, crew_member: CrewMember) -> None:
    """A record deleted while the member held the unit's scope has its tombstone in their feed
    already, and one deleted before their first sync was never on their device: removed again
    when they left, WatermelonDB made a row of what it never held."""
    colleague = make_crew_member(program, unit=crew_member.unit)
    live = encounter(colleague)
    deleted_before = encounter(colleague)
    assert pushed(colleague, "care.encounter", {}, op="delete", record_id=deleted_before, base_version=1)["status"] == (
        "applied"
    )
    device = SimDevice(crew_member)
    first, cursor = device.pull()
    deleted_since = encounter(colleague)
    assert pushed(colleague, "care.encounter", {}, op="delete", record_id=deleted_since, base_version=1)["status"] == (
        "applied"
    )

    teams_services.unit_member_remove(unit=crew_member.unit, user=crew_member.user)
    later, _ = device.pull(cursor)

    assert str(live) in [e["id"] for e in first]
    assert sorted((e["id"], e.get("reason")) for e in later if e["op"] == "remove") == sorted(
        [(str(deleted_since), "deleted"), (str(live), "out_of_scope")]
    )


def test_joining_a_unit_serves_nothing_of_what_left_it_before_the_join(
    program: Program, crew_member: CrewMember
) -> None:
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    joined, elsewhere = UnitFactory.create(program=program), UnitFactory.create(program=program)
    member_there = make_crew_member(program, unit=joined)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    stays = encounter(member_there, assessment="the crew's to see")
    gone = encounter(member_there, assessment="never the new member's to see")
    encounter_reassign(
        encounter=Encounter.objects.get(pk=gone),
        unit=elsewhere,
        actor=supervisor.user,
        accessor=in_the_admin(supervisor.user),
    )

    teams_services.unit_member_add(unit=joined, user=crew_member.user)
    later, _ = device.pull(cursor)

    assert [(e["id"], e["op"], e["data"].get("assessment")) for e in later] == [
        (str(stays), "upsert", "the crew's to see")
    ]


def test_a_new_hires_first_unit_serves_nothing_of_what_left_it_before_they_joined(
    program: Program, crew_member: CrewMember
) -> None:
    """A member who never synced before the join, pulling the feed from its start instead of
    taking a snapshot: the unit's past is not theirs any more than a transferred member's."""
    elsewhere = UnitFactory.create(program=program)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    stays = encounter(crew_member, assessment="the crew's to see")
    gone = encounter(crew_member, assessment="never the new member's to see")
    encounter_reassign(
        encounter=Encounter.objects.get(pk=gone),
        unit=elsewhere,
        actor=supervisor.user,
        accessor=in_the_admin(supervisor.user),
    )
    new_hire = UserFactory.create()
    MembershipFactory.create(user=new_hire, program=program, role=Role.CLINICIAN)
    device, token = device_with_token(new_hire)

    teams_services.unit_member_add(unit=crew_member.unit, user=new_hire)
    first, _ = SimDevice(CrewMember(new_hire, crew_member.unit, device, token)).pull()

    assert [(e["id"], e["op"], e["data"].get("assessment")) for e in first] == [
        (str(stays), "upsert", "the crew's to see")
    ]


def test_joining_a_unit_brings_its_live_records_not_its_deleted_ones(program: Program, crew_member: CrewMember) -> None:
    """A new member's device takes the join's catch-up upserts as the unit's records. A
    record deleted before the join is not one: served as an upsert, it would appear on the
    tablet as a live encounter (its tombstone came before the join and is never sent)."""
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    joined = UnitFactory.create(program=program)
    member_there = make_crew_member(program, unit=joined)
    live = encounter(member_there)
    deleted = encounter(member_there)
    result = pushed(member_there, "care.encounter", {}, op="delete", record_id=deleted, base_version=1)
    assert result["status"] == "applied"

    teams_services.unit_member_add(unit=joined, user=crew_member.user)
    later, _ = device.pull(cursor)

    assert [(e["id"], e["op"]) for e in later if e["op"] == "upsert"] == [(str(live), "upsert")]


def test_joining_a_unit_serves_nothing_that_passed_through_it_while_the_join_committed(
    program: Program, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    joined, elsewhere = UnitFactory.create(program=program), UnitFactory.create(program=program)
    member_there = make_crew_member(program, unit=joined)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    written: dict[str, uuid.UUID] = {}

    def others_write() -> None:
        written["stays"] = encounter(member_there, assessment="the crew's to see")
        written["gone"] = encounter(member_there, assessment="never the new member's to see")
        encounter_reassign(
            encounter=Encounter.objects.get(pk=written["gone"]),
            unit=elsewhere,
            actor=supervisor.user,
            accessor=in_the_admin(supervisor.user),
        )

    with younger_writes_before_the_catch_up(monkeypatch, others_write):
        teams_services.unit_member_add(unit=joined, user=crew_member.user)
    later, _ = device.pull(cursor)

    assert [(e["id"], e["op"], e["data"].get("assessment")) for e in later] == [
        (str(written["stays"]), "upsert", "the crew's to see")
    ]


def test_joining_a_unit_serves_what_its_crew_was_still_writing_when_the_join_committed(
    program: Program, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P4/P5: the join's catch-up reads the unit's records before it commits, so a write to
    the unit that is still running then (younger than the join, so the join does not wait
    for it) is not in the catch-up. Its entry is the only way the new member's device gets
    that record: a device pulling from a cursor from before the join must be served it,
    whether the write took its id while the join was reading (a running transaction the
    join's snapshot lists) or right after (the first id the join's snapshot did not reach).
    Otherwise the new member never has the record on their tablet."""
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    joined = UnitFactory.create(program=program)
    # Two of its crew, each pushing from their own tablet.
    crew_there = [make_crew_member(program, unit=joined) for _ in range(2)]
    # The unit has records already (the writes below name its audience, which then exists).
    caught_up = encounter(crew_there[0])
    release = threading.Event()
    writers: list[threading.Thread] = []
    written: list[uuid.UUID] = []
    faults: list[BaseException] = []

    def write_and_hold(member: CrewMember, wrote: threading.Event) -> None:
        try:
            with transaction.atomic():
                written.append(encounter(member))
                wrote.set()
                release.wait(30)
        except BaseException as fault:  # noqa: BLE001 - re-raised in the test's own thread
            faults.append(fault)
            wrote.set()
        finally:
            connection.close()

    def start_writer(member: CrewMember) -> None:
        wrote = threading.Event()
        writer = threading.Thread(target=write_and_hold, args=(member, wrote))
        writer.start()
        writers.append(writer)
        assert wrote.wait(30), "the crew's write never happened"

    not_yet_seen = services._transactions_not_yet_seen

    def another_crew_writes() -> None:
        try:
            encounter(crew_member)
        finally:
            connection.close()

    def with_writes_under_way() -> tuple[int, list[int]]:
        start_writer(crew_there[0])  # still running while the join reads what it has not seen,
        # older than a write that has ended by then (so it is among those the join lists)
        elsewhere = threading.Thread(target=another_crew_writes)
        elsewhere.start()
        elsewhere.join(timeout=30)
        seen = not_yet_seen()
        start_writer(crew_there[1])  # takes the first id the join's reading did not reach
        return seen

    monkeypatch.setattr(services, "_transactions_not_yet_seen", with_writes_under_way)
    try:
        teams_services.unit_member_add(unit=joined, user=crew_member.user)
    finally:
        monkeypatch.setattr(services, "_transactions_not_yet_seen", not_yet_seen)
        release.set()
        for writer in writers:
            writer.join(timeout=30)
    if faults:
        raise faults[0]
    entries, _ = device.pull(cursor)

    assert len(written) == 2
    upserted = {entry["id"] for entry in entries if entry["op"] == "upsert"}
    assert {str(record_id) for record_id in (caught_up, *written)} <= upserted, entries


def test_a_member_who_left_and_rejoined_a_unit_reads_it_only_while_a_member(
    program: Program, crew_member: CrewMember
) -> None:
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    colleague = make_crew_member(program, unit=crew_member.unit)
    before = encounter(colleague)
    teams_services.unit_member_remove(unit=crew_member.unit, user=crew_member.user)
    while_away = encounter(colleague, assessment="written while the member was away")
    teams_services.unit_member_add(unit=crew_member.unit, user=crew_member.user)
    after = encounter(colleague)

    later, _ = device.pull(cursor)
    on_device = held_after(later)

    # Each is served once: the first while a member, the others by the return's catch-up and after.
    assert sorted(on_device) == sorted(str(record) for record in (before, while_away, after))
    assert [e["id"] for e in later if e["op"] == "upsert"].count(str(while_away)) == 1


def test_a_change_seen_through_three_scopes_is_one_feed_entry_each_reader_gets(
    program: Program, crew_member: CrewMember
) -> None:
    """The unit's crew and the program's case managers and supervisors, and its administrators
    through the case managers' scope: all who may read and write the record (an
    administrator's device was told to drop records its user still worked on, and its edits
    of them applied)."""
    overseers = [make_crew_member(program, role=role) for role in (Role.CASE_MANAGER, Role.SUPERVISOR)]
    administrator = make_crew_member(program, role=Role.ADMINISTRATOR)
    record_id = encounter(crew_member)

    [entry] = ChangeEntry.objects.filter(record_id=record_id)
    readers = (make_crew_member(program, unit=crew_member.unit), *overseers, administrator)
    received = [[e["id"] for e in SimDevice(reader).pull()[0]] for reader in readers]

    scopes = [
        unit_scope(crew_member.unit.pk),
        program_role_scope(program.pk, Role.CASE_MANAGER),
        program_role_scope(program.pk, Role.SUPERVISOR),
    ]
    assert entry.scope == audience_of(scopes)
    assert Audience.objects.get(key=entry.scope).scopes == sorted(scopes)
    assert received == [[str(record_id)]] * 4


def test_an_administrators_device_synced_before_it_read_care_records_gets_them_at_its_next_pull(
    program: Program, crew_member: CrewMember
) -> None:
    """Administrators read what the program's case managers read. A device that synced when
    they did not holds scopes without it: its next pull brings the records written before."""
    record_id = encounter(crew_member)
    administrator = make_crew_member(program, role=Role.ADMINISTRATOR)
    device = SimDevice(administrator)
    _, cursor = device.pull()
    # As stored before administrators read the case managers' scope.
    before = [scope for scope in scopes_for_user(administrator.user) if not scope.endswith(".case_manager")]
    UserScopeState.objects.filter(user=administrator.user).update(scopes=before)
    ChangeEntry.objects.filter(scope=user_scope(administrator.user.pk)).delete()

    entries, _ = device.pull(cursor)

    assert [(e["id"], e["op"]) for e in entries] == [(str(record_id), "upsert")]


@pytest.mark.parametrize("role", [Role.CASE_MANAGER, Role.ADMINISTRATOR])
def test_leaving_a_unit_keeps_what_a_program_role_still_shows(
    program: Program, crew_member: CrewMember, role: Role
) -> None:
    manager = make_crew_member(program, role=role, unit=crew_member.unit)
    record_id = encounter(crew_member)
    device = SimDevice(manager)
    _, cursor = device.pull()

    UnitMember.objects.filter(user=manager.user, unit=crew_member.unit).delete()
    entries, _ = device.pull(cursor)
    pages, _ = snapshot(manager)

    assert entries == []
    assert [record["id"] for page in pages for record in page] == [str(record_id)]


def test_heads_stored_before_audiences_get_the_audience_of_their_scopes() -> None:
    migration = importlib.import_module("apps.sync.migrations.0005_feed_audiences")
    unit, staff = f"unit.{uuid.uuid4()}", f"program.{uuid.uuid4()}.case_manager"

    assert migration._audience_key([staff, unit, staff]) == audience_of([unit, staff])
    assert migration._audience_key([unit]) == audience_of([unit]) == unit
    assert migration._audience_key([]) == audience_of([]) == ""


def test_user_scope_refresh_is_idempotent(program: Program, crew_member: CrewMember) -> None:
    encounter(crew_member)
    services.user_scopes_refresh(user=crew_member.user)
    UnitMember.objects.filter(user=crew_member.user).delete()

    services.user_scopes_refresh(user=crew_member.user)
    entries, cursor = SimDevice(crew_member).pull()
    services.user_scopes_refresh(user=crew_member.user)

    assert [e["op"] for e in entries].count("remove") == 1
    assert SimDevice(crew_member).pull(cursor)[0] == []


def test_a_refresh_that_read_the_crew_before_a_move_committed_does_not_undo_the_move(
    program: Program, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_unit_record = encounter(crew_member)
    new_crew = make_crew_member(program)
    services.user_scopes_refresh(user=crew_member.user)
    scopes_of = services.scopes_for_user
    raced: list[bool] = []

    def read_then_moved(user: Any) -> list[str]:
        scopes = scopes_of(user)
        if threading.current_thread() is threading.main_thread() and not raced:
            raced.append(True)  # a pull read the crew; the admin's move commits right after
            mover = threading.Thread(target=_move_with_its_refresh, args=(crew_member, new_crew.unit))
            mover.start()
            mover.join()
        return scopes

    monkeypatch.setattr(services, "scopes_for_user", read_then_moved)
    services.user_scopes_refresh(user=crew_member.user)

    assert raced
    state = UserScopeState.objects.get(user=crew_member.user)
    assert sorted(state.scopes) == scopes_of(crew_member.user)
    upserts_of_the_old_unit = ChangeEntry.objects.filter(
        scope=user_scope(crew_member.user.pk), record_id=old_unit_record, operation="upsert"
    )
    assert not upserts_of_the_old_unit.exists()


def _move_with_its_refresh(member: CrewMember, unit: Any) -> None:
    try:
        with transaction.atomic():
            UnitMember.objects.filter(user=member.user).update(unit=unit)
            services.user_scopes_refresh(user=member.user)
    finally:
        connection.close()


@pytest.mark.parametrize("change", ["leaves", "joins"])
def test_a_change_of_crew_catches_up_with_a_record_moved_into_the_unit_while_it_ran(
    program: Program, crew_member: CrewMember, change: str
) -> None:
    """A dispatcher moves a record into a unit while a member leaves (or joins) it: the move
    is still running when the change of crew begins, and commits before it does. A device
    pulling in between reads under the scopes the member had, so the move's entries are
    either served (the member leaves: the catch-up must remove the record) or passed over
    (the member joins, and a colleague's later entry moves the cursor past the move: the
    catch-up must bring it)."""
    colleague = make_crew_member(program, unit=crew_member.unit)
    elsewhere = make_crew_member(program)
    supervisor = MembershipFactory.create(program=program, role=Role.SUPERVISOR).user
    moved = Encounter.objects.get(pk=encounter(elsewhere))
    unit = UnitFactory.create(program=program)
    if change == "leaves":
        UnitMemberFactory.create(unit=unit, user=crew_member.user)
    device = SimDevice(crew_member)
    held: dict[str, Any] = {}
    _, held["cursor"] = device.pull()
    written, release = threading.Event(), threading.Event()

    def move() -> None:
        try:
            with transaction.atomic():
                encounter_reassign(encounter=moved, unit=unit, actor=supervisor, accessor=in_the_admin(supervisor))
                written.set()
                release.wait(timeout=10)
        finally:
            connection.close()

    def pull_meanwhile() -> None:
        try:
            held["entries"], held["cursor"] = device.pull(held["cursor"])
        finally:
            connection.close()

    mover = threading.Thread(target=move)
    mover.start()
    assert written.wait(timeout=10)
    encounter(colleague)  # committed after the move began, before the change of crew
    threading.Timer(1.0, release.set).start()  # the move commits while the change of crew runs
    with transaction.atomic():
        if change == "leaves":
            teams_services.unit_member_remove(unit=unit, user=crew_member.user)
        else:
            teams_services.unit_member_add(unit=unit, user=crew_member.user)
        mover.join()
        reader = threading.Thread(target=pull_meanwhile)
        reader.start()
        reader.join()
    later, _ = device.pull(held["cursor"])

    on_device: set[str] = set()
    for entry in held["entries"] + later:
        if entry["type"] == "care.encounter":
            (on_device.add if entry["op"] == "upsert" else on_device.discard)(entry["id"])
    assert (str(moved.pk) in on_device) is (change == "joins")


def test_a_change_of_crew_does_not_wait_for_an_older_writer_that_waits_for_it(
    program: Program, crew_member: CrewMember, caplog: pytest.LogCaptureFixture
) -> None:
    """Two admins change the same member's crew at once. The change that began first needs
    the member's scope row, which the other holds while it waits for older writers: it must
    not wait for the first one, which would then wait for it for ever."""
    other_unit = UnitFactory.create(program=program)
    services.user_scopes_refresh(user=crew_member.user)
    began = threading.Event()

    def older_change() -> None:
        try:
            with transaction.atomic():
                UnitMember.objects.create(unit=other_unit, user=crew_member.user)  # takes its id first
                began.set()
                time.sleep(1.0)  # meanwhile the change below takes the member's scope row
                services.user_scopes_refresh(user=crew_member.user)
        finally:
            connection.close()

    older = threading.Thread(target=older_change)
    older.start()
    assert began.wait(timeout=10)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="apps.sync.services"):
        teams_services.unit_member_remove(unit=crew_member.unit, user=crew_member.user)
    took = time.monotonic() - started
    older.join(timeout=30)

    assert "waiting for a lock it holds" in caplog.text
    assert took < services._OLDER_WRITERS_WAIT_SECONDS / 2
    stored = UserScopeState.objects.get(user=crew_member.user).scopes
    assert (
        sorted(stored)
        == services.scopes_for_user(crew_member.user)
        == sorted([user_scope(crew_member.user.pk), unit_scope(other_unit.pk)])
    )


def test_a_record_a_younger_writer_moves_out_of_the_unit_left_is_removed_by_the_catch_up(
    program: Program, crew_member: CrewMember
) -> None:
    """While the change of crew waits for an older, unrelated writer, a dispatcher moves a
    record out of the unit being left and commits. Its removal is addressed to that unit,
    which the member no longer reads once the change commits: the catch-up removes it."""
    moved = Encounter.objects.get(pk=encounter(make_crew_member(program, unit=crew_member.unit)))
    elsewhere = make_crew_member(program)
    supervisor = MembershipFactory.create(program=program, role=Role.SUPERVISOR).user
    device = SimDevice(crew_member)
    entries, cursor = device.pull()
    older_began = threading.Event()

    def older_writer() -> None:
        try:
            with transaction.atomic():
                UnitFactory.create(program=program)
                older_began.set()
                time.sleep(1.5)
        finally:
            connection.close()

    def younger_move() -> None:
        time.sleep(0.5)  # once the change of crew is waiting
        try:
            encounter_reassign(
                encounter=moved, unit=elsewhere.unit, actor=supervisor, accessor=in_the_admin(supervisor)
            )
        finally:
            connection.close()

    older = threading.Thread(target=older_writer)
    older.start()
    assert older_began.wait(timeout=10)
    mover = threading.Thread(target=younger_move)
    with transaction.atomic():
        UnitMember.objects.filter(user=crew_member.user).delete()  # this change takes its id first
        mover.start()
        services.user_scopes_refresh(user=crew_member.user)
    mover.join()
    older.join()
    later, _ = device.pull(cursor)

    on_device = {e["id"] for e in entries if e["op"] == "upsert"}
    on_device -= {e["id"] for e in later if e["op"] == "remove"}
    assert str(moved.pk) not in on_device


def test_a_writer_waiting_for_the_change_of_crew_does_not_end_the_wait_for_the_others(
    program: Program, crew_member: CrewMember
) -> None:
    """An older writer moves a record into the unit joined; another older one waits for the
    unit row the admin's change holds. The change stops waiting for the second only."""
    elsewhere = make_crew_member(program)
    supervisor = MembershipFactory.create(program=program, role=Role.SUPERVISOR).user
    moved = Encounter.objects.get(pk=encounter(elsewhere))
    unit = UnitFactory.create(program=program)
    colleague = make_crew_member(program, unit=crew_member.unit)
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    written, second_began = threading.Event(), threading.Event()
    held: dict[str, Any] = {}

    def move() -> None:
        try:
            with transaction.atomic():
                encounter_reassign(encounter=moved, unit=unit, actor=supervisor, accessor=in_the_admin(supervisor))
                written.set()
                time.sleep(2.0)
        finally:
            connection.close()

    def wait_for_the_unit() -> None:
        try:
            with transaction.atomic():
                UnitFactory.create(program=program)  # takes its id before the change of crew
                second_began.set()
                time.sleep(0.5)
                type(unit).objects.select_for_update().get(pk=unit.pk)
        finally:
            connection.close()

    def pull_meanwhile() -> None:
        try:
            held["entries"], held["cursor"] = device.pull(cursor)
        finally:
            connection.close()

    mover = threading.Thread(target=move)
    mover.start()
    assert written.wait(timeout=10)
    encounter(colleague)  # moves the device's cursor past the move, once served
    blocked = threading.Thread(target=wait_for_the_unit)
    blocked.start()
    assert second_began.wait(timeout=10)
    with transaction.atomic():
        type(unit).objects.filter(pk=unit.pk).update(call_sign=unit.call_sign)  # the admin saves the unit
        teams_services.unit_member_add(unit=unit, user=crew_member.user)
        mover.join()
        reader = threading.Thread(target=pull_meanwhile)
        reader.start()
        reader.join()
    blocked.join()
    later, _ = device.pull(held["cursor"])

    on_device = {e["id"] for e in held["entries"] + later if e["type"] == "care.encounter" and e["op"] == "upsert"}
    assert str(moved.pk) in on_device


def test_snapshot_needs_protocol_2_and_refuses_a_foreign_cursor(crew_member: CrewMember) -> None:
    no_header = crew_member.client().get("/api/v1/sync/snapshot/")
    bad = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"cursor": uuid.uuid4().hex})
    nested = base64.urlsafe_b64encode(("[" * 5_000 + "]" * 5_000).encode()).decode()  # deeper than JSON reads
    too_deep = sync_client(crew_member).get("/api/v1/sync/snapshot/", {"cursor": nested})

    assert no_header.status_code == 426
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "cursor"
    assert too_deep.status_code == 400 and too_deep.json()["errors"][0]["field"] == "cursor"


def test_a_record_whose_id_is_the_nil_uuid_is_in_the_snapshot(crew_member: CrewMember) -> None:
    """The nil UUID is an id in the server's own form, taken by push like any other (a
    client whose id generator failed may well send it). The snapshot must serve every live
    record: one it skipped would be missing on every device bootstrapped since, as the feed
    after the snapshot holds only what changed while it was read."""
    nil = uuid.UUID(int=0)
    device = SimDevice(crew_member)
    [result] = device.push(device.mutation("create", "care.encounter", nil, encounter_fields(crew_member)))
    assert result["status"] == "applied", result
    other = encounter(crew_member)

    pages, _ = snapshot(crew_member)

    assert sorted(record["id"] for page in pages for record in page) == sorted([str(nil), str(other)])


def test_a_deleted_record_is_not_in_the_snapshot(program: Program, crew_member: CrewMember) -> None:
    """A device bootstrapping (a first sync, or after a 410) keeps what the snapshot serves
    as live, and the feed it then pulls from the snapshot's cursor holds only what changed
    since: a tombstone from before is never sent again. A deleted record served in the
    snapshot would stay on the tablet as a live record its crew works from, for good."""
    kept = encounter(crew_member)
    deleted = encounter(crew_member)
    result = pushed(crew_member, "care.encounter", {}, op="delete", record_id=deleted, base_version=1)
    assert result["status"] == "applied" and result["data"]["deleted"] is True
    newcomer = make_crew_member(program, unit=crew_member.unit)

    pages, feed_cursor = snapshot(newcomer)
    entries, _ = SimDevice(newcomer).pull(feed_cursor)

    on_device = {record["id"] for page in pages for record in page}
    for entry in entries:
        (on_device.add if entry["op"] == "upsert" else on_device.discard)(entry["id"])
    assert on_device == {str(kept)}


def test_a_cursor_the_pruning_expires_while_its_page_is_read_gets_410_not_a_page_with_a_gap(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device back from a long absence pulls as the daily pruning runs. Its cursor was
    within the retention when the page began, but the entries after it are deleted before
    they are read: served the rest, the device would move past changes it never got (an
    edit, a removal) and never learn of them. It must get 410 and re-bootstrap instead."""
    record_id = encounter(crew_member, location="before")
    _, cursor = SimDevice(crew_member).pull()
    teammate = SimDevice(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    teammate.push(teammate.mutation("update", "care.encounter", record_id, {"location": "edited"}, base_version=1))
    ChangeEntry.objects.update(created_at=timezone.now() - timedelta(days=40))
    later = encounter(teammate.member)
    read = selectors._reading_position

    def read_once_the_pruning_has_run(*args: Any) -> Any:
        # After the request checked the cursor against the retention, before it reads entries.
        pruning = threading.Thread(target=_pruned_in_own_connection)
        pruning.start()
        pruning.join(timeout=30)
        assert not pruning.is_alive()
        return read(*args)

    monkeypatch.setattr(selectors, "_reading_position", read_once_the_pruning_has_run)
    response = sync_client(crew_member).get("/api/v1/sync/feed/", {"cursor": cursor})
    monkeypatch.setattr(selectors, "_reading_position", read)

    # Not the later encounter alone, with a cursor past the edit it never got.
    served = [(entry["id"], entry["version"]) for entry in response.json().get("entries", [])]
    assert (response.status_code, response.json().get("code")) == (410, "cursor_expired"), served
    assert (str(later), 1) not in served


def _pruned_in_own_connection() -> None:
    try:
        services.feed_prune(older_than=timedelta(days=30))
    finally:
        connection.close()


@pytest.mark.parametrize("page", ["first", "later"])
def test_a_record_moved_into_a_unit_after_its_member_left_is_not_in_the_snapshot(
    program: Program, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    """A page is read for the scopes the user had (where the snapshot begins, or as the
    request found them), and the feed after the snapshot reads a scope the user lost only up
    to the loss. If the member leaves a unit and then a record is moved into it, both
    committing after those scopes were read but before the page is, the page must not serve
    that record: the feed never removes it (the leave's removal did not name it, and the
    move's entry comes after the leave), so the device would keep a record its user may never
    see (P5)."""
    left = UnitFactory.create(program=program)
    teams_services.unit_member_add(unit=left, user=crew_member.user)
    for _ in range(3):  # the first page (of two records) ends among them
        encounter(make_crew_member(program, unit=left))
    elsewhere = make_crew_member(program)
    # Last in the unit's order: a page that reads the unit after the move reaches it.
    moved = uuid.UUID("ffffffff-ffff-4fff-bfff-ffffffffffff")
    created = pushed(elsewhere, "care.encounter", encounter_fields(elsewhere), record_id=moved)
    assert created["status"] == "applied", created
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)

    def leave_then_move() -> None:
        try:
            teams_services.unit_member_remove(unit=left, user=crew_member.user)
            encounter_reassign(
                encounter=Encounter.objects.get(pk=moved),
                unit=left,
                actor=supervisor.user,
                accessor=in_the_admin(supervisor.user),
            )
        finally:
            connection.close()

    def then_leave_and_move(read: Any, *, on_call: int) -> Any:
        calls = iter(range(1, 100))

        def read_then_leave_and_move(*args: Any, **kwargs: Any) -> Any:
            result = read(*args, **kwargs)
            if next(calls) == on_call:  # the page itself is not read yet
                admin = threading.Thread(target=leave_then_move)
                admin.start()
                admin.join(timeout=30)
                assert not admin.is_alive()
            return result

        return read_then_leave_and_move

    if page == "first":  # once the snapshot's position and scopes are taken
        monkeypatch.setattr(selectors, "snapshot_start", then_leave_and_move(selectors.snapshot_start, on_call=1))
    else:  # once the request for the second page has read the user's scopes
        monkeypatch.setattr(
            services, "user_scopes_refresh", then_leave_and_move(services.user_scopes_refresh, on_call=2)
        )
    pages, feed_cursor = snapshot(crew_member, limit=1000 if page == "first" else 2)
    monkeypatch.undo()
    entries, _ = SimDevice(crew_member).pull(feed_cursor)

    on_device = {record["id"] for page in pages for record in page}
    for entry in entries:
        (on_device.add if entry["op"] == "upsert" else on_device.discard)(entry["id"])
    assert str(moved) not in on_device


def pull_in_pages_of(member: CrewMember, cursor: str, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while True:
        params: dict[str, str | int] = {"cursor": cursor, "limit": limit}
        response = sync_client(member).get("/api/v1/sync/feed/", params)
        assert response.status_code == 200, response.content
        body = response.json()
        entries += body["entries"]
        cursor = body["cursor"]
        if not body["has_more"]:
            return entries


def test_a_page_that_ends_inside_the_joins_catch_up_serves_nothing_that_passed_through_the_unit_before_it(
    program: Program, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The join's catch-up serves a joined unit's records as they stand; what younger writers
    committed to the unit before it read them is not the new member's, however the pulls
    that bring the catch-up are paged."""
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    joined, elsewhere = UnitFactory.create(program=program), UnitFactory.create(program=program)
    member_there = make_crew_member(program, unit=joined)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)
    caught_up = [encounter(member_there) for _ in range(2)]
    written: dict[str, uuid.UUID] = {}

    def others_write() -> None:
        written["gone"] = encounter(member_there, assessment="never the new member's to see")
        encounter_reassign(
            encounter=Encounter.objects.get(pk=written["gone"]),
            unit=elsewhere,
            actor=supervisor.user,
            accessor=in_the_admin(supervisor.user),
        )

    with younger_writes_before_the_catch_up(monkeypatch, others_write):
        teams_services.unit_member_add(unit=joined, user=crew_member.user)
    later = pull_in_pages_of(crew_member, cursor, limit=1)

    assert [(e["op"], e["data"].get("assessment")) for e in later if e["id"] == str(written["gone"])] == []
    assert {entry["id"] for entry in later} == {str(record_id) for record_id in caught_up}


def test_a_record_moved_from_a_kept_unit_into_the_joined_one_while_the_join_committed_stays_on_the_device(
    program: Program, crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record the member sees all along, moved by a younger writer from their unit into the
    one they join before the join reads its catch-up: the move's removal from their unit
    follows the catch-up in the feed, and must not be the last word the device hears of it."""
    moved = encounter(crew_member, assessment="seen by the member all along")
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    joined = UnitFactory.create(program=program)
    make_crew_member(program, unit=joined)
    supervisor = make_crew_member(program, role=Role.SUPERVISOR)

    def others_write() -> None:
        encounter_reassign(
            encounter=Encounter.objects.get(pk=moved),
            unit=joined,
            actor=supervisor.user,
            accessor=in_the_admin(supervisor.user),
        )

    with younger_writes_before_the_catch_up(monkeypatch, others_write):
        teams_services.unit_member_add(unit=joined, user=crew_member.user)
    later, _ = device.pull(cursor)
    on_device = held_after(later)

    assert list(on_device) == [str(moved)], later
    assert on_device[str(moved)]["data"]["unit_id"] == str(joined.pk)


@pytest.mark.django_db(transaction=True)  # two transactions at once, each committing
@pytest.mark.parametrize("kind", ["delete_vs_edit", "same_field_conflict", "unseen_unchanged_edit"])
def test_a_push_racing_the_writers_leave_does_not_bring_the_units_record_back_to_their_device(
    program: Program, crew_member: CrewMember, kind: str
) -> None:
    """The push began while the change of crew was committing, and its check of the writer's
    rights still read the old crew: it sends the writer the record as it stands (a conflict,
    an edit that changed nothing of a record others had changed), after the change's removal
    of it in the feed's order. The user may no longer see the record; their device must not
    end holding it."""
    mate = make_crew_member(program, unit=crew_member.unit)
    record = encounter(mate, location="first")
    device = SimDevice(crew_member)
    _, cursor = device.pull()
    pushed(mate, "care.encounter", {"location": "second"}, op="update", record_id=record, base_version=1)
    leave_written, release = threading.Event(), threading.Event()

    def supervisor_removes_the_member() -> None:
        try:
            with transaction.atomic():
                teams_services.unit_member_remove(unit=crew_member.unit, user=crew_member.user)
                leave_written.set()
                release.wait(10)
        finally:
            leave_written.set()
            connection.close()

    leave = threading.Thread(target=supervisor_removes_the_member)
    leave.start()
    assert leave_written.wait(10)
    mutation = {
        "delete_vs_edit": device.mutation("delete", "care.encounter", record, None, 1),
        "same_field_conflict": device.mutation("update", "care.encounter", record, {"location": "third"}, 1),
        "unseen_unchanged_edit": device.mutation("update", "care.encounter", record, {"location": "second"}, 1),
    }[kind]
    [result] = device.push(mutation)
    release.set()
    leave.join(30)
    entries, _ = device.pull(cursor)

    assert result["status"] in ("conflict", "applied"), result
    held: set[str] = set()
    for entry in entries:
        (held.add if entry["op"] == "upsert" else held.discard)(entry["id"])
    assert held == set(), entries
    assert snapshot(crew_member)[0] == [[]]  # what a new device of the user gets: nothing
