"""Assignments reach crews over the real websocket of a real ASGI server, from the change feed."""

from __future__ import annotations

import contextlib
import socket as socket_module
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection
from django.utils import timezone
from websockets.sync.client import ClientConnection

from apps.accounts.models import Device, DeviceToken, Program
from apps.dispatch import services
from apps.dispatch.models import Assignment, AssignmentStatus
from apps.sync import selectors as feed
from apps.sync.scopes import scopes_for_user
from tests.accounts.factories import device_with_token
from tests.conftest import CrewMember, make_crew_member
from tests.dispatch.factories import make_incident
from tests.live import AsgiServer, asgi_server
from tests.realtime.client import authenticated_socket, close_code, receive, send
from tests.teams.factories import UnitFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def subscribe(socket: ClientConnection, cursor: str | None = None) -> dict[str, Any]:
    send(socket, {"type": "feed.subscribe", "cursor": cursor})
    frame = receive(socket)
    assert frame["type"] == "feed.entries", frame
    return frame


def next_entry(socket: ClientConnection, record_type: str, timeout: float = 3) -> dict[str, Any]:
    """The next feed entry of a type, skipping others (unit status changes travel alongside)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = receive(socket, timeout=max(0.01, deadline - time.monotonic()))
        assert frame["type"] == "feed.entries", frame
        for entry in frame["entries"]:
            if entry["type"] == record_type:
                return entry


def offer(program: Program, dispatcher: CrewMember, member: CrewMember, **extra: Any) -> Assignment:
    return services.assignment_offer(
        incident=make_incident(program, dispatcher), unit=member.unit, actor=dispatcher.user, **extra
    )


def test_every_device_of_the_crew_receives_the_assignment_within_a_second(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    partner = make_crew_member(program, unit=crew_member.unit)
    _phone, phone_token = device_with_token(crew_member.user, name="Phone")
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(authenticated_socket(asgi.ws_url, token))
            for token in (crew_member.token, phone_token, partner.token)
        ]
        for socket in sockets:
            subscribe(socket)
        started = time.monotonic()
        assignment = offer(program, dispatcher, crew_member)

        entries = [next_entry(socket, "dispatch.assignment", timeout=1) for socket in sockets]

    assert time.monotonic() - started < 1
    for entry in entries:
        assert (entry["id"], entry["op"], entry["data"]["status"]) == (str(assignment.pk), "upsert", "offered")
        assert entry["data"]["incident"]["nature"] == assignment.incident.nature
        assert entry["data"]["incident"]["safety_screen"]["weapon"] is False


def test_a_device_never_receives_another_units_assignment(
    asgi: AsgiServer,
    program: Program,
    dispatcher: CrewMember,
    crew_member: CrewMember,
    outsider: CrewMember,
    foreign_dispatcher: CrewMember,
) -> None:
    with (
        authenticated_socket(asgi.ws_url, outsider.token) as other_crew,
        authenticated_socket(asgi.ws_url, foreign_dispatcher.token) as other_program,
        authenticated_socket(asgi.ws_url, crew_member.token) as own_crew,
    ):
        for socket in (other_crew, other_program, own_crew):
            subscribe(socket)
        assignment = offer(program, dispatcher, crew_member)
        assert next_entry(own_crew, "dispatch.assignment")["id"] == str(assignment.pk)

        for socket in (other_crew, other_program):
            send(socket, {"type": "ping"})
            assert receive(socket) == {"type": "pong"}
            with pytest.raises(TimeoutError):
                receive(socket, timeout=0.3)


def test_dispatchers_and_supervisors_see_assignments_and_alerts(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, supervisor: CrewMember, crew_member: CrewMember
) -> None:
    assignment = offer(program, dispatcher, crew_member)
    with authenticated_socket(asgi.ws_url, supervisor.token) as socket:
        subscribe(socket)
        Assignment.objects.filter(pk=assignment.pk).update(escalate_due_at=assignment.offered_at)

        services.sweep_deadlines()

        alert = next_entry(socket, "dispatch.alert")
        assert (alert["data"]["kind"], alert["data"]["assignment"]) == ("ack_overdue", str(assignment.pk))


def test_crew_acknowledges_over_the_websocket_first_wins(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    partner = make_crew_member(program, unit=crew_member.unit)
    assignment = offer(program, dispatcher, crew_member)
    with (
        authenticated_socket(asgi.ws_url, crew_member.token) as mine,
        authenticated_socket(asgi.ws_url, partner.token) as theirs,
    ):
        subscribe(theirs)
        ack = {"type": "assignment.acknowledge", "assignment": str(assignment.pk)}

        send(mine, ack | {"request_id": "r1"})
        first = receive(mine)
        send(mine, ack | {"request_id": "r2"})
        retried = receive(mine)
        # The partner's device hears of the acknowledgement through the feed...
        update = next_entry(theirs, "dispatch.assignment")
        send(theirs, ack)
        second_member = receive(theirs)

    assert (first["type"], first["request_id"], retried["request_id"]) == ("assignment.acknowledged", "r1", "r2")
    assert first["assignment"] == retried["assignment"] == second_member["assignment"]
    assert first["assignment"]["acknowledged_by"] == str(crew_member.user.pk)
    assert first["assignment"]["acknowledged_device"] == str(crew_member.device.pk)
    assert update["data"]["status"] == "acknowledged"
    assert Assignment.objects.get(pk=assignment.pk).timeline.filter(kind="acknowledged").count() == 1


def test_a_socket_whose_revocation_word_was_lost_may_not_acknowledge(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """A lost tablet's socket may miss the word of its revocation (the channel layer drops
    messages; the token is checked again a minute later). Whoever holds it must not answer
    the crew's calls meanwhile, nor learn the assignment from the reply: the message finds
    the device revoked, gets the lockout, and changes nothing."""
    assignment = offer(program, dispatcher, crew_member)
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        now = timezone.now()  # revoked behind the services' back: no socket is told
        Device.objects.filter(pk=crew_member.device.pk).update(revoked_at=now)
        DeviceToken.objects.filter(device=crew_member.device).update(revoked_at=now)

        send(socket, {"type": "assignment.acknowledge", "assignment": str(assignment.pk), "request_id": "r1"})

        assert receive(socket) == {"type": "device.revoked", "purge_local_data": True, "push_outbox_first": True}
        assert close_code(socket, timeout=1) == 4403
    after = Assignment.objects.get(pk=assignment.pk)
    assert (after.status, after.acknowledged_at) == (AssignmentStatus.OFFERED, None)


def test_a_late_ack_over_the_websocket_is_told_superseded(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    UnitFactory.create(program=program)
    assignment = offer(program, dispatcher, crew_member)
    Assignment.objects.filter(pk=assignment.pk).update(escalate_due_at=assignment.offered_at)
    services.sweep_deadlines()

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "assignment.acknowledge", "assignment": str(assignment.pk), "request_id": "late"})
        answer = receive(socket)

    assert (answer["type"], answer["code"], answer["field"], answer["request_id"]) == (
        "error",
        "superseded",
        "assignment",
        "late",
    )
    assert Assignment.objects.get(pk=assignment.pk).acknowledged_at is None


def test_crew_checks_in_over_the_websocket(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment = offer(program, dispatcher, crew_member)
    services.assignment_acknowledge(assignment_id=assignment.pk, user=crew_member.user, device=crew_member.device)
    services.assignment_update_status(
        assignment_id=assignment.pk, user=crew_member.user, device=None, status=AssignmentStatus.ON_SCENE
    )

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "assignment.check_in", "assignment": str(assignment.pk)})
        answer = receive(socket)

    assert answer["type"] == "assignment.checked_in" and answer["assignment"]["last_checkin_at"] is not None


@pytest.mark.parametrize("message_type", ["assignment.acknowledge", "assignment.check_in"])
def test_an_outsider_cannot_answer_another_units_assignment(
    asgi: AsgiServer,
    program: Program,
    dispatcher: CrewMember,
    crew_member: CrewMember,
    outsider: CrewMember,
    foreign_dispatcher: CrewMember,
    message_type: str,
) -> None:
    assignment = offer(program, dispatcher, crew_member)

    for stranger in (outsider, foreign_dispatcher, dispatcher):
        with authenticated_socket(asgi.ws_url, stranger.token) as socket:
            send(socket, {"type": message_type, "assignment": str(assignment.pk)})
            assert receive(socket) | {"detail": None} == {
                "type": "error",
                "code": "not_found",
                "field": "assignment",
                "detail": None,
            }

    after = Assignment.objects.get(pk=assignment.pk)
    assert (after.status, after.acknowledged_at, after.last_checkin_at) == (AssignmentStatus.OFFERED, None, None)


@pytest.mark.parametrize(
    ("message", "code", "field"),
    [
        ({"type": "assignment.acknowledge"}, "invalid_message", "assignment"),
        ({"type": "assignment.acknowledge", "assignment": 42}, "invalid_message", "assignment"),
        ({"type": "assignment.acknowledge", "assignment": "not-a-uuid"}, "invalid_message", "assignment"),
        (
            {"type": "assignment.acknowledge", "assignment": "00000000-0000-0000-0000-000000000000"},
            "not_found",
            "assignment",
        ),
        ({"type": "assignment.check_in", "assignment": "x", "observed_at": "noon"}, "invalid_message", "assignment"),
        (
            {
                "type": "assignment.acknowledge",
                "assignment": "00000000-0000-0000-0000-000000000000",
                "observed_at": "2026-01-01T10:00:00",
            },
            "invalid_message",
            "observed_at",
        ),
        ({"type": "assignment.acknowledge", "request_id": 7}, "invalid_message", "request_id"),
        # Text no database column could hold: refused by shape before anything is stored.
        ({"type": "assignment.acknowledge", "assignment": "\x00"}, "invalid_message", "assignment"),
        ({"type": "assignment.acknowledge", "assignment": "\ud800"}, "invalid_message", "assignment"),
        (
            {
                "type": "assignment.check_in",
                "assignment": "00000000-0000-0000-0000-000000000000",
                "observed_at": "2026-01-01T10:00:00+00:00\ud800",
            },
            "invalid_message",
            "observed_at",
        ),
        ({"type": "assignment.acknowledge", "request_id": "\ud800"}, "invalid_message", "assignment"),
        (  # Python's parser stops at the NUL: what follows would be dropped unread
            {
                "type": "assignment.check_in",
                "assignment": "00000000-0000-0000-0000-000000000000",
                "observed_at": "2026-01-01T10:00:00+05:00\x00",
            },
            "invalid_message",
            "observed_at",
        ),
        (  # another script's digits, which Django's parser reads as 2026
            {
                "type": "assignment.check_in",
                "assignment": "00000000-0000-0000-0000-000000000000",
                "observed_at": "\u0662\u0660\u0662\u0666-01-01T10:00:00+00:00",
            },
            "invalid_message",
            "observed_at",
        ),
    ],
)
def test_malformed_dispatch_messages_get_an_error_frame_and_keep_the_connection(
    asgi: AsgiServer, crew_member: CrewMember, message: dict[str, Any], code: str, field: str
) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, message)
        error = receive(socket)
        send(socket, {"type": "ping"})
        pong = receive(socket)

    assert (error["type"], error["code"], error["field"]) == ("error", code, field)
    assert pong == {"type": "pong"}


def test_an_ack_with_a_device_time_in_the_future_is_refused(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment = offer(program, dispatcher, crew_member)

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(
            socket,
            {
                "type": "assignment.acknowledge",
                "assignment": str(assignment.pk),
                "observed_at": "2099-01-01T00:00:00+00:00",
            },
        )
        error = receive(socket)

    assert (error["code"], error["field"]) == ("time_in_future", "observed_at")
    assert Assignment.objects.get(pk=assignment.pk).acknowledged_at is None


@pytest.fixture(scope="module")
def second_asgi(django_db_setup: None, live_server_logs: Path) -> Iterator[AsgiServer]:
    """Another web process on the same database and Redis, as behind a load balancer."""
    with asgi_server(live_server_logs, name="web-second") as server:
        yield server


def test_an_assignment_made_through_one_web_process_reaches_a_device_on_another(
    asgi: AsgiServer, second_asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    incident = make_incident(program, dispatcher)
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        subscribe(socket)
        started = time.monotonic()
        response = httpx.post(
            f"{second_asgi.http_url}/api/v1/dispatch/incidents/{incident.pk}/assignments/",
            json={"unit": str(crew_member.unit.pk)},
            headers={"Authorization": f"Bearer {dispatcher.token}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text

        entry = next_entry(socket, "dispatch.assignment", timeout=2)

    assert entry["id"] == response.json()["id"]
    assert time.monotonic() - started < 2


def test_a_socket_killed_mid_stream_replays_everything_in_order_from_its_cursor(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    total = 40

    def write() -> None:
        try:
            for _ in range(total):
                offer(program, dispatcher, crew_member, additional=True)
        finally:
            connection.close()

    received: list[tuple[str, str]] = []
    writer = threading.Thread(target=write)
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        cursor = subscribe(socket)["cursor"]
        writer.start()
        while sum(1 for kind, _ in received if kind == "dispatch.assignment") < 8:
            frame = receive(socket)
            received += [(entry["type"], entry["id"]) for entry in frame["entries"]]
            cursor = frame["cursor"]
        # Pull the plug: no close handshake, as when a phone goes into a tunnel.
        socket.socket.shutdown(socket_module.SHUT_RDWR)
        socket.socket.close()
        before_the_cut = len(received)

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        frame = subscribe(socket, cursor)
        received += [(entry["type"], entry["id"]) for entry in frame["entries"]]
        # Until the last offer arrived: the writer may still be closing its connection then,
        # with nothing more to send, so waiting for it here would wait for a frame that never comes.
        while frame["has_more"] or sum(1 for kind, _ in received if kind == "dispatch.assignment") < total:
            frame = receive(socket, timeout=5)
            received += [(entry["type"], entry["id"]) for entry in frame["entries"]]
    writer.join()
    assert len(received) > before_the_cut  # changes made while it was gone came on reconnect

    page = feed.feed_page(
        scopes=scopes_for_user(crew_member.user), cursor=None, limit=1000, reader_device_id=crew_member.device.pk
    )
    assert received == [(entry.record_type, str(entry.record_id)) for entry in page.entries]
    assert sum(1 for kind, _ in received if kind == "dispatch.assignment") == total


@pytest.mark.parametrize("message_type", ["assignment.acknowledge", "assignment.check_in"])
def test_a_field_the_message_does_not_take_is_refused_naming_it_not_dropped(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember, message_type: str
) -> None:
    """A misspelt `observed_at` would be lost without a word, and the report kept without the
    time the crew recorded: the message is refused naming the field, as over REST."""
    assignment = offer(program, dispatcher, crew_member)
    if message_type == "assignment.check_in":
        services.assignment_acknowledge(assignment_id=assignment.pk, user=crew_member.user, device=crew_member.device)
        services.assignment_update_status(
            assignment_id=assignment.pk, user=crew_member.user, device=None, status=AssignmentStatus.ON_SCENE
        )
    before = Assignment.objects.get(pk=assignment.pk)

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        observed = timezone.now().isoformat()
        send(
            socket, {"type": message_type, "assignment": str(assignment.pk), "observedAt": observed, "request_id": "r1"}
        )
        error = receive(socket)

    assert (error["type"], error["code"], error["field"], error["request_id"]) == (
        "error",
        "invalid_message",
        "observedAt",
        "r1",
    )
    after = Assignment.objects.get(pk=assignment.pk)
    assert (after.status, after.acknowledged_at, after.last_checkin_at) == (
        before.status,
        before.acknowledged_at,
        before.last_checkin_at,
    )


@pytest.fixture(scope="module")
def polling_asgi(django_db_setup: None, live_server_logs: Path) -> Iterator[AsgiServer]:
    """A web process whose sockets look at the feed every second besides the nudges."""
    with asgi_server(live_server_logs, name="web-polling", FEED_SAFETY_POLL_SECONDS="1") as server:
        yield server


def test_the_safety_poll_outlives_a_read_that_failed_and_brings_an_offer_whose_nudge_was_lost(
    settings: Any, polling_asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The poll is the net under lost nudges. One read that fails (here the audit trail refuses
    the delivery for a moment; a database failover would do the same) must not take the net
    away for the rest of the socket's life: the offer arrives at a later round."""
    with authenticated_socket(polling_asgi.ws_url, crew_member.token) as socket:
        subscribe(socket)
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE FUNCTION refuse_websocket_reads() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN RAISE EXCEPTION 'audit trail unavailable'; END $$;"
                "CREATE TRIGGER refuse_websocket_reads BEFORE INSERT ON audit_auditevent FOR EACH ROW"
                " WHEN (NEW.channel = 'websocket') EXECUTE FUNCTION refuse_websocket_reads()"
            )
        try:
            # The nudge is lost (the channel layer cannot be reached): only the poll can tell.
            settings.CHANNEL_LAYERS = {
                "default": {
                    "BACKEND": "channels_redis.core.RedisChannelLayer",
                    "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:1/0", "socket_connect_timeout": 1}]},
                }
            }
            assignment = offer(program, dispatcher, crew_member)
            time.sleep(2.5)  # a round or two of the poll, each refused
        finally:
            with connection.cursor() as cursor:
                cursor.execute(
                    "DROP TRIGGER refuse_websocket_reads ON audit_auditevent; DROP FUNCTION refuse_websocket_reads()"
                )

        entry = next_entry(socket, "dispatch.assignment", timeout=5)

    assert entry["id"] == str(assignment.pk)
