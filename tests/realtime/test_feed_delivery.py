from __future__ import annotations

import contextlib
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, transaction

from apps.realtime.consumers import FEED_SUBSCRIBE_LIMIT, FEED_SUBSCRIBE_WINDOW_SECONDS
from apps.sync import services
from apps.sync.scopes import unit_scope
from apps.sync.selectors import FeedPosition
from tests.accounts.factories import device_with_token
from tests.conftest import CrewMember
from tests.live import AsgiServer, asgi_server
from tests.realtime.client import authenticated_socket, receive, send
from tests.sync.helpers import sync_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def record(member: CrewMember, n: int) -> str:
    record_id = uuid.uuid4()
    with transaction.atomic():
        services.record_change(
            program_id=member.unit.program_id,
            record_type="test.note",
            record_id=record_id,
            scopes=[unit_scope(member.unit.pk)],
            data={"n": n},
        )
    return str(record_id)


def test_subscribed_device_receives_a_change_right_after_commit(asgi: AsgiServer, crew_member: CrewMember) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        assert receive(socket)["entries"] == []  # caught up

        started = time.monotonic()
        record_id = record(crew_member, 1)
        message = receive(socket, timeout=2)

        assert message["type"] == "feed.entries"
        assert [entry["id"] for entry in message["entries"]] == [record_id]
        assert time.monotonic() - started < 1


def test_reconnecting_device_gets_what_it_missed_in_order(asgi: AsgiServer, crew_member: CrewMember) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        receive(socket)
        first = record(crew_member, 1)
        message = receive(socket)
        assert [entry["id"] for entry in message["entries"]] == [first]
        cursor = message["cursor"]

    missed = [record(crew_member, n) for n in range(2, 6)]

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": cursor})
        message = receive(socket)

    assert first not in [entry["id"] for entry in message["entries"]]
    assert [entry["id"] for entry in message["entries"]] == missed


def test_outsider_socket_receives_nothing_of_another_unit(
    asgi: AsgiServer, crew_member: CrewMember, outsider: CrewMember
) -> None:
    with authenticated_socket(asgi.ws_url, outsider.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        assert receive(socket)["entries"] == []
        record(crew_member, 1)
        send(socket, {"type": "ping"})

        assert receive(socket) == {"type": "pong"}
        with pytest.raises(TimeoutError):
            receive(socket, timeout=0.5)


def test_bad_subscribe_cursor_gets_an_error_frame(asgi: AsgiServer, crew_member: CrewMember) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": 12})
        assert receive(socket)["field"] == "cursor"
        send(socket, {"type": "feed.subscribe", "cursor": "not-a-cursor"})
        assert receive(socket)["code"] == "invalid_cursor"


def test_a_subscribe_with_a_misspelt_or_missing_cursor_is_refused_not_read_as_from_the_start(
    asgi: AsgiServer, crew_member: CrewMember
) -> None:
    """Read as null, it sent the whole feed again over the device's records without a word."""
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "curser": "stored"})
        misspelt = receive(socket)
        send(socket, {"type": "feed.subscribe"})
        missing = receive(socket)
        send(socket, {"type": "ping"})
        pong = receive(socket)

    assert (misspelt["type"], misspelt["code"], misspelt["field"]) == ("error", "invalid_message", "curser")
    assert (missing["type"], missing["code"], missing["field"]) == ("error", "invalid_message", "cursor")
    assert pong == {"type": "pong"}  # nothing subscribed: no entries came before it


def test_another_devices_cursor_gets_an_error_frame(asgi: AsgiServer, crew_member: CrewMember) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        receive(socket)
        record(crew_member, 1)
        message = receive(socket)
    _device, other_token = device_with_token(crew_member.user, name="Tablet, signed in again")

    for cursor in (message["cursor"], message["entries"][0]["cursor"]):
        with authenticated_socket(asgi.ws_url, other_token) as socket:
            send(socket, {"type": "feed.subscribe", "cursor": cursor})
            error = receive(socket)
            assert (error["type"], error["code"], error["field"]) == ("error", "invalid_cursor", "cursor")
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:  # its own device goes on
        send(socket, {"type": "feed.subscribe", "cursor": message["cursor"]})
        answer = receive(socket)
    assert (answer["type"], answer["entries"], answer["has_more"]) == ("feed.entries", [], False)
    # From where it was, or further up the feed (others' transactions have ended since).
    resumed, then = (
        FeedPosition.decode(cursor, reader_device_id=crew_member.device.pk)
        for cursor in (answer["cursor"], message["cursor"])
    )
    assert (resumed.transaction_id, resumed.entry_id) >= (then.transaction_id, then.entry_id)


def test_health_records_sent_down_a_socket_are_audited_as_reads(asgi: AsgiServer, crew_member: CrewMember) -> None:
    from apps.audit.models import AuditEvent
    from tests.conftest import make_crew_member
    from tests.sync.helpers import SimDevice, encounter_fields

    writer = SimDevice(make_crew_member(crew_member.unit.program, unit=crew_member.unit))
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        receive(socket)
        record_id = uuid.uuid4()
        writer.push(writer.mutation("create", "care.encounter", record_id, encounter_fields(writer.member)))
        assert [entry["id"] for entry in receive(socket)["entries"]] == [str(record_id)]

    deadline = time.monotonic() + 5
    while not AuditEvent.objects.filter(action="read", actor_id=crew_member.user.pk).exists():
        assert time.monotonic() < deadline, "no audit event for the socket read"
        time.sleep(0.05)
    event = AuditEvent.objects.get(action="read", actor_id=crew_member.user.pk)
    assert (event.record_id, event.device_id, event.channel) == (record_id, crew_member.device.pk, "websocket")


def a_cursor_the_feed_no_longer_keeps(server: AsgiServer, member: CrewMember) -> str:
    """A cursor served over the socket, then pruned past: older than the feed keeps."""
    with authenticated_socket(server.ws_url, member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        receive(socket)
        record(member, 1)
        cursor: str = receive(socket)["cursor"]
    record(member, 2)
    services.feed_prune(older_than=timedelta(0))
    return cursor


def test_a_cursor_older_than_the_feed_keeps_gets_an_error_frame(asgi: AsgiServer, crew_member: CrewMember) -> None:
    first_cursor = a_cursor_the_feed_no_longer_keeps(asgi, crew_member)

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": first_cursor})
        error = receive(socket)
        assert (error["type"], error["code"], error["field"]) == ("error", "cursor_expired", "cursor")
        assert error["database_restored"] is False
        send(socket, {"type": "ping"})
        assert receive(socket) == {"type": "pong"}


def test_a_cursor_ahead_of_the_database_gets_an_error_frame(asgi: AsgiServer, crew_member: CrewMember) -> None:
    from apps.sync.selectors import FeedPosition

    ahead = FeedPosition((1 << 62), 1).encode()  # beyond any transaction this database has run
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": ahead})
        error = receive(socket)
        assert (error["type"], error["code"], error["field"]) == ("error", "cursor_expired", "cursor")
        # Restored from a backup: the outbox is pushed without its bases, as after the 410.
        assert error["database_restored"] is True


def test_a_subscribes_answer_or_error_frame_carries_its_request_id(asgi: AsgiServer, crew_member: CrewMember) -> None:
    """As a domain message's does: the client waiting on that subscribe learns how it went."""
    expired = a_cursor_the_feed_no_longer_keeps(asgi, crew_member)
    refused: list[dict[str, object]] = [
        {"cursor": 12},
        {"curser": None},
        {},
        {"cursor": "not-a-cursor"},
        {"cursor": expired},
    ]

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        errors = []
        for n, frame in enumerate(refused):
            send(socket, {"type": "feed.subscribe", **frame, "request_id": f"subscribe-{n}"})
            errors.append(receive(socket))
        bootstrapped = sync_client(crew_member).get("/api/v1/sync/snapshot/").json()["feed_cursor"]
        send(socket, {"type": "feed.subscribe", "cursor": bootstrapped, "request_id": "at-last"})
        answer = receive(socket)

    assert [(error["type"], error["code"], error["field"], error.get("request_id")) for error in errors] == [
        ("error", "invalid_message", "cursor", "subscribe-0"),
        ("error", "invalid_message", "curser", "subscribe-1"),
        ("error", "invalid_message", "cursor", "subscribe-2"),
        ("error", "invalid_cursor", "cursor", "subscribe-3"),
        ("error", "cursor_expired", "cursor", "subscribe-4"),
    ]
    assert (answer["type"], answer["request_id"]) == ("feed.entries", "at-last")


def test_subscribing_over_and_over_is_throttled_and_the_socket_goes_on_from_its_cursor(
    asgi: AsgiServer, crew_member: CrewMember
) -> None:
    """Each subscribe sent the feed again from its cursor: 30 frames of 50 bytes made the
    server send 15 MB."""
    first = record(crew_member, 1)

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        answers = []
        for _ in range(FEED_SUBSCRIBE_LIMIT):
            send(socket, {"type": "feed.subscribe", "cursor": None})
            answers.append(receive(socket))
        send(socket, {"type": "feed.subscribe", "cursor": None, "request_id": "once-more"})
        throttled = receive(socket)
        later = record(crew_member, 2)
        delivered = receive(socket)

    assert [[entry["id"] for entry in answer["entries"]] for answer in answers] == [[first]] * FEED_SUBSCRIBE_LIMIT
    assert (throttled["type"], throttled["code"], throttled["request_id"]) == ("error", "throttled", "once-more")
    assert 0 < throttled["retry_after"] <= FEED_SUBSCRIBE_WINDOW_SECONDS
    # Still subscribed, from where the last subscribe's answer left it: not the feed again.
    assert [entry["id"] for entry in delivered["entries"]] == [later]


def test_a_refused_cursor_is_refused_once_and_the_socket_waits_for_a_new_subscribe(
    live_server_logs: Path, crew_member: CrewMember
) -> None:
    # A safety poll every second: it must not read the refused cursor again.
    with asgi_server(live_server_logs, name="web-poll-each-second", FEED_SAFETY_POLL_SECONDS="1") as server:
        first_cursor = a_cursor_the_feed_no_longer_keeps(server, crew_member)

        with authenticated_socket(server.ws_url, crew_member.token) as socket:
            send(socket, {"type": "feed.subscribe", "cursor": first_cursor})
            refused = receive(socket)
            with pytest.raises(TimeoutError):  # bootstrapping: nothing until it subscribes again
                receive(socket, timeout=3)
            bootstrapped = sync_client(crew_member).get("/api/v1/sync/snapshot/").json()["feed_cursor"]
            send(socket, {"type": "feed.subscribe", "cursor": bootstrapped})
            answer = receive(socket)
            later = record(crew_member, 3)
            delivered = receive(socket, timeout=10)

    assert (refused["type"], refused["code"]) == ("error", "cursor_expired")
    assert answer["type"] == "feed.entries"
    assert [entry["id"] for entry in delivered["entries"]] == [later]


def test_an_entry_held_back_by_an_older_transaction_of_another_crew_arrives_once_it_ends(
    asgi: AsgiServer, crew_member: CrewMember, outsider: CrewMember
) -> None:
    """The older transaction's commit nudges only its own crew: the socket looks again
    itself, rather than leave the entry to the safety poll (30 s)."""
    begun = threading.Event()

    def older_writer_of_another_crew() -> None:
        try:
            with transaction.atomic():
                services.record_change(
                    program_id=outsider.unit.program_id,
                    record_type="test.note",
                    record_id=uuid.uuid4(),
                    scopes=[unit_scope(outsider.unit.pk)],
                    data={"n": 0},
                )
                begun.set()
                time.sleep(3)
        finally:
            connection.close()

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        receive(socket)
        writer = threading.Thread(target=older_writer_of_another_crew)
        writer.start()
        assert begun.wait(10)
        ours = record(crew_member, 1)  # committed, and held back behind the older transaction
        writer.join(30)
        message = receive(socket, timeout=10)

    assert [entry["id"] for entry in message["entries"]] == [ours]


def test_subscribing_again_from_an_older_cursor_while_a_read_runs_is_answered_from_that_cursor(
    asgi: AsgiServer, crew_member: CrewMember
) -> None:
    locked = threading.Event()

    def hold_the_feeds_reads(seconds: float) -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("LOCK TABLE sync_feedretention IN ACCESS EXCLUSIVE MODE")
                locked.set()
                time.sleep(seconds)
        finally:
            connection.close()

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        start = receive(socket)["cursor"]
        first = record(crew_member, 1)
        receive(socket)
        locker = threading.Thread(target=hold_the_feeds_reads, args=(1.5,))
        locker.start()
        assert locked.wait(10)
        second = record(crew_member, 2)  # its nudge starts a read, which waits for the lock
        time.sleep(0.3)
        send(socket, {"type": "feed.subscribe", "cursor": start})
        locker.join(30)
        frames = []
        with contextlib.suppress(TimeoutError):
            while True:
                frames.append(receive(socket, timeout=1.5))

    # The last answer is the subscribe's, from its own cursor: everything after it.
    assert [entry["id"] for entry in frames[-1]["entries"]] == [first, second]


@pytest.mark.parametrize("observed_at", ["2026-02-30T10:00:00+00:00", "2026-11-23T25:00:00+00:00"])
def test_a_well_formed_impossible_time_is_an_error_naming_the_field(
    asgi: AsgiServer, crew_member: CrewMember, observed_at: str
) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(
            socket,
            {"type": "assignment.acknowledge", "assignment": str(uuid.uuid4()), "observed_at": observed_at},
        )
        reply = receive(socket)

    assert (reply["type"], reply["code"], reply["field"]) == ("error", "invalid_message", "observed_at")
