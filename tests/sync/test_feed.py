from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import pytest
from django.db import connection, transaction

from apps.accounts.models import Program, Role
from apps.sync import selectors, services
from apps.sync.scopes import program_role_scope, scopes_for_user, unit_scope, user_scope
from apps.teams.models import UnitMember
from tests.accounts.factories import device_with_token
from tests.conftest import CrewMember, make_crew_member

# The feed serves only what every older transaction has finished writing, so these tests
# commit for real instead of running inside one test transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def record_for_unit(member: CrewMember, **data: Any) -> uuid.UUID:
    record_id = uuid.uuid4()
    with transaction.atomic():
        services.record_change(
            program_id=member.unit.program_id,
            record_type="test.note",
            record_id=record_id,
            scopes=[unit_scope(member.unit.pk)],
            data=data,
        )
    return record_id


def pull(member: CrewMember, cursor: str | None = None, limit: int = 200) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    response = member.client().get("/api/v1/sync/feed/", params)
    assert response.status_code == 200, response.json()
    body: dict[str, Any] = response.json()
    return body


def test_scopes_cover_the_user_their_units_and_program_roles(program: Program, crew_member: CrewMember) -> None:
    dispatcher = make_crew_member(program, role=Role.DISPATCHER)

    assert scopes_for_user(crew_member.user) == sorted(
        [user_scope(crew_member.user.pk), unit_scope(crew_member.unit.pk)]
    )
    assert program_role_scope(program.pk, Role.DISPATCHER) in scopes_for_user(dispatcher.user)


def test_pull_returns_changes_in_order_and_resumes_from_the_cursor(crew_member: CrewMember) -> None:
    first = record_for_unit(crew_member, n=1)
    second = record_for_unit(crew_member, n=2)

    page = pull(crew_member)

    assert [entry["id"] for entry in page["entries"]] == [str(first), str(second)]
    assert page["entries"][0]["data"] == {"n": 1}
    assert page["has_more"] is False
    third = record_for_unit(crew_member, n=3)
    assert [entry["id"] for entry in pull(crew_member, page["cursor"])["entries"]] == [str(third)]


def test_pages_are_bounded_and_has_more_says_so(crew_member: CrewMember) -> None:
    ids = [str(record_for_unit(crew_member, n=index)) for index in range(5)]

    first = pull(crew_member, limit=2)
    second = pull(crew_member, first["cursor"], limit=2)
    third = pull(crew_member, second["cursor"], limit=2)

    assert (first["has_more"], second["has_more"], third["has_more"]) == (True, True, False)
    assert [entry["id"] for page in (first, second, third) for entry in page["entries"]] == ids


def test_outsider_sees_nothing_of_another_unit(crew_member: CrewMember, outsider: CrewMember) -> None:
    record_for_unit(crew_member, n=1)

    assert pull(outsider)["entries"] == []


def test_a_devices_own_writes_do_not_come_back_but_the_cursor_moves(crew_member: CrewMember) -> None:
    with transaction.atomic():
        services.record_change(
            program_id=crew_member.unit.program_id,
            record_type="test.note",
            record_id=uuid.uuid4(),
            scopes=[unit_scope(crew_member.unit.pk)],
            data={},
            origin_device_id=crew_member.device.pk,
        )

    page = pull(crew_member)
    other_device = CrewMember(crew_member.user, crew_member.unit, *device_with_token(crew_member.user, "Phone"))

    assert page["entries"] == []
    assert page["cursor"] != selectors.FeedPosition(0, 0).encode()
    assert len(pull(other_device)["entries"]) == 1


@pytest.mark.parametrize("cursor", ["garbage!", "bm90LWEtY3Vyc29y", "LTEuLTE"])
def test_invalid_cursor_is_400_naming_the_cursor(crew_member: CrewMember, cursor: str) -> None:
    response = crew_member.client().get("/api/v1/sync/feed/", {"cursor": cursor})

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "cursor"


def test_bad_limit_and_unknown_parameters_are_400(crew_member: CrewMember) -> None:
    too_big = crew_member.client().get("/api/v1/sync/feed/", {"limit": 100000})
    unknown = crew_member.client().get("/api/v1/sync/feed/", {"since": "yesterday"})

    assert too_big.status_code == 400 and too_big.json()["errors"][0]["field"] == "limit"
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "since"


@pytest.mark.parametrize("limit", ["1_0", "5.0", " 5", "\uff15", "+5"])
def test_a_limit_not_written_in_plain_digits_is_400_naming_it(crew_member: CrewMember, limit: str) -> None:
    """Python's int() reads "1_0" as 10 and a full-width five as 5: a query's number is
    digits, or the client is told."""
    response = crew_member.client().get("/api/v1/sync/feed/", {"limit": limit})

    assert (response.status_code, response.json()["errors"][0]["field"]) == (400, "limit")


def test_a_change_that_commits_late_is_not_skipped(crew_member: CrewMember) -> None:
    """P4: an older transaction still open holds newer entries back until it commits."""
    written, release = threading.Event(), threading.Event()
    late_id = uuid.uuid4()

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                services.record_change(
                    program_id=crew_member.unit.program_id,
                    record_type="test.note",
                    record_id=late_id,
                    scopes=[unit_scope(crew_member.unit.pk)],
                    data={"late": True},
                )
                written.set()
                release.wait(10)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert written.wait(10)
    quick_id = record_for_unit(crew_member, quick=True)

    while_open = pull(crew_member)
    release.set()
    writer.join()
    after_commit = pull(crew_member, while_open["cursor"])

    assert while_open["entries"] == []
    assert [entry["id"] for entry in after_commit["entries"]] == [str(late_id), str(quick_id)]


def test_concurrent_writers_and_a_reader_lose_and_repeat_nothing(program: Program) -> None:
    member = make_crew_member(program)
    writers, per_writer = 6, 15
    written: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(per_writer):
                record_id = uuid.uuid4()
                with transaction.atomic():
                    services.record_change(
                        program_id=program.pk,
                        record_type="test.note",
                        record_id=record_id,
                        scopes=[unit_scope(member.unit.pk)],
                        data={},
                    )
                    time.sleep(rng.uniform(0, 0.01))  # commit order differs from id order
                with lock:
                    written.append(str(record_id))
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(writers)]
    for thread in threads:
        thread.start()
    seen: list[str] = []
    cursor = None
    while not done.is_set():
        if not any(thread.is_alive() for thread in threads):
            done.set()  # one more pull after every writer finished
        page = pull(member, cursor, limit=7)
        seen += [entry["id"] for entry in page["entries"]]
        cursor = page["cursor"]
        while page["has_more"]:
            page = pull(member, cursor, limit=7)
            seen += [entry["id"] for entry in page["entries"]]
            cursor = page["cursor"]

    assert len(written) == writers * per_writer
    assert sorted(seen) == sorted(written)
    assert len(seen) == len(set(seen))


def test_a_page_is_read_for_the_scopes_the_user_has_now_not_those_the_reader_holds(
    program: Program, crew_member: CrewMember
) -> None:
    scopes_before = scopes_for_user(crew_member.user)
    services.user_scopes_refresh(user=crew_member.user)
    other_crew = make_crew_member(program)
    with transaction.atomic():  # a move to another unit, committed with the user's scopes
        UnitMember.objects.filter(user=crew_member.user).update(unit=other_crew.unit)
        services.user_scopes_refresh(user=crew_member.user)
    old_unit_record = record_for_unit(crew_member)
    new_unit_record = record_for_unit(other_crew)

    # A reader that still holds the scopes from before the move (a socket, between reads).
    page = selectors.feed_page(scopes=scopes_before, cursor=None, user_id=crew_member.user.pk)

    assert page.scopes == scopes_for_user(crew_member.user) != scopes_before
    served = [entry.record_id for entry in page.entries]
    assert new_unit_record in served
    assert old_unit_record not in served
