from __future__ import annotations

import time
import uuid

import pytest
from django.db import transaction

from apps.sync import services
from apps.sync.scopes import unit_scope
from tests.conftest import CrewMember
from tests.live import AsgiServer
from tests.realtime.client import authenticated_socket, receive, send

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
