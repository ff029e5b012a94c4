"""Reading an incident (its callback number, address, nature) is audited like a clinical note (P8)."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from websockets.exceptions import ConnectionClosed

from apps.accounts.models import Program, Role
from apps.audit.models import AuditEvent
from apps.dispatch import services
from apps.dispatch.models import AssignmentStatus
from tests.conftest import CrewMember, make_crew_member, sign_in_to_admin
from tests.dispatch.factories import intake_body, make_incident
from tests.live import AsgiServer
from tests.realtime.client import authenticated_socket, receive, send
from tests.sync.helpers import sync_client
from tests.workspace.scenario import staff


def events(**filters: object) -> list[tuple[str, str, str]]:
    return list(AuditEvent.objects.filter(**filters).values_list("action", "channel", "record_type"))


@pytest.mark.django_db
def test_incident_detail_and_list_are_recorded_with_who_and_which_device(
    program: Program, dispatcher: CrewMember
) -> None:
    incident = make_incident(program, dispatcher, callback_number="+12125550199")
    client = dispatcher.client()

    assert client.get(f"/api/v1/dispatch/incidents/{incident.pk}/").status_code == 200
    assert client.get("/api/v1/dispatch/incidents/").status_code == 200

    reads = AuditEvent.objects.filter(record_type="dispatch.incident", record_id=incident.pk, action="read")
    assert reads.count() == 2
    for event in reads:
        assert (event.actor_id, event.device_id, event.program_id, event.channel) == (
            dispatcher.user.pk,
            dispatcher.device.pk,
            program.pk,
            "api",
        )


@pytest.mark.django_db
def test_intake_is_a_creation_and_its_retry_a_read(program: Program, dispatcher: CrewMember) -> None:
    body = intake_body(program)
    first = dispatcher.client().post("/api/v1/dispatch/incidents/", body, format="json")
    retry = dispatcher.client().post("/api/v1/dispatch/incidents/", body, format="json")

    assert (first.status_code, retry.status_code) == (201, 200)
    assert events(record_id=first.json()["id"]) == [
        ("create", "api", "dispatch.incident"),
        ("read", "api", "dispatch.incident"),
    ]


@pytest.mark.django_db
def test_a_crew_reading_its_assignment_is_recorded(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment = services.assignment_offer(
        incident=make_incident(program, dispatcher), unit=crew_member.unit, actor=dispatcher.user
    )

    response = crew_member.client().get(f"/api/v1/dispatch/assignments/{assignment.pk}/")
    listed = crew_member.client().get("/api/v1/dispatch/assignments/")

    assert (response.status_code, listed.status_code) == (200, 200)
    assert response.json()["incident"]["callback_number"] == assignment.incident.callback_number
    assert events(record_id=assignment.pk, device_id=crew_member.device.pk) == [
        ("read", "api", "dispatch.assignment"),
        ("read", "api", "dispatch.assignment"),
    ]


@pytest.mark.django_db
def test_an_outsider_reads_nothing_and_leaves_no_trace_of_a_read(
    program: Program, dispatcher: CrewMember, foreign_dispatcher: CrewMember
) -> None:
    incident = make_incident(program, dispatcher)
    before = AuditEvent.objects.count()

    detail = foreign_dispatcher.client().get(f"/api/v1/dispatch/incidents/{incident.pk}/")
    listed = foreign_dispatcher.client().get("/api/v1/dispatch/incidents/")

    assert detail.status_code == 404
    assert listed.json()["results"] == []
    assert AuditEvent.objects.count() == before


@pytest.mark.django_db
def test_opening_an_incident_in_the_admin_is_recorded(program: Program, dispatcher: CrewMember) -> None:
    incident = make_incident(program, dispatcher)
    manager = staff(make_crew_member(program, role=Role.CASE_MANAGER).user)
    client = sign_in_to_admin(Client(), manager)

    opened = client.get(reverse("admin:dispatch_incident_change", args=[incident.pk]))
    listed = client.get(reverse("admin:dispatch_incident_changelist"))

    assert (opened.status_code, listed.status_code) == (200, 200)
    assert events(record_id=incident.pk, actor_id=manager.pk) == [
        ("read", "admin", "dispatch.incident"),
        ("read", "admin", "dispatch.incident"),
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
def test_an_offer_delivered_over_the_websocket_is_recorded_for_the_receiving_device(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        assert receive(socket)["type"] == "feed.entries"
        assignment = services.assignment_offer(
            incident=make_incident(program, dispatcher), unit=crew_member.unit, actor=dispatcher.user
        )
        delivered: list[dict[str, Any]] = []
        while not any(entry["id"] == str(assignment.pk) for entry in delivered):
            delivered.extend(receive(socket, timeout=3)["entries"])

    # Written by the server process before the frame went out.
    assert events(record_id=assignment.pk, device_id=crew_member.device.pk) == [
        ("read", "websocket", "dispatch.assignment")
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
def test_an_offer_whose_delivery_cannot_be_recorded_is_not_delivered_over_the_websocket(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The read is recorded before the frame goes out: a socket never holds health
    information whose delivery the audit trail lacks (the device pulls it again later)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_websocket_reads() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'audit trail unavailable'; END $$;"
            "CREATE TRIGGER refuse_websocket_reads BEFORE INSERT ON audit_auditevent FOR EACH ROW"
            " WHEN (NEW.channel = 'websocket') EXECUTE FUNCTION refuse_websocket_reads()"
        )
    try:
        with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
            send(socket, {"type": "feed.subscribe", "cursor": None})
            assert receive(socket)["type"] == "feed.entries"
            assignment = services.assignment_offer(
                incident=make_incident(program, dispatcher), unit=crew_member.unit, actor=dispatcher.user
            )
            frames: list[str] = []
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                while True:
                    frames.append(str(socket.recv(timeout=3)))
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER refuse_websocket_reads ON audit_auditevent; DROP FUNCTION refuse_websocket_reads()"
            )

    assert not any(str(assignment.pk) in frame for frame in frames), frames


@pytest.mark.django_db(transaction=True)
def test_an_offer_pulled_from_the_feed_over_http_is_recorded(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment = services.assignment_offer(
        incident=make_incident(program, dispatcher), unit=crew_member.unit, actor=dispatcher.user
    )

    pulled = sync_client(crew_member).get("/api/v1/sync/feed/")

    assert pulled.status_code == 200
    assert str(assignment.pk) in {entry["id"] for entry in pulled.json()["entries"]}
    assert events(record_id=assignment.pk, device_id=crew_member.device.pk) == [("read", "sync", "dispatch.assignment")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
def test_an_acknowledgement_over_the_websocket_is_recorded_as_a_write_from_the_device(
    asgi: AsgiServer, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment = services.assignment_offer(
        incident=make_incident(program, dispatcher), unit=crew_member.unit, actor=dispatcher.user
    )

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "assignment.acknowledge", "assignment": str(assignment.pk)})
        answer = receive(socket)

    assert answer["type"] == "assignment.acknowledged"
    assert events(record_id=assignment.pk, device_id=crew_member.device.pk, action="update") == [
        ("update", "websocket", "dispatch.assignment")
    ]


@pytest.mark.django_db
def test_a_refused_crew_report_leaves_no_write_in_the_audit_trail(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment = services.assignment_offer(
        incident=make_incident(program, dispatcher), unit=crew_member.unit, actor=dispatcher.user
    )

    refused = crew_member.client().post(f"/api/v1/dispatch/assignments/{assignment.pk}/check-in/", {}, format="json")

    assert refused.status_code == 409
    assert events(record_id=assignment.pk, action="update") == []


@pytest.mark.django_db
def test_a_retried_close_writes_nothing_and_is_a_read(program: Program, dispatcher: CrewMember) -> None:
    """A close sent again (its answer lost) answers with the closed incident and changes
    nothing: a read of it, as a retried intake is, not a second update."""
    incident = make_incident(program, dispatcher)
    url = f"/api/v1/dispatch/incidents/{incident.pk}/close/"

    first = dispatcher.client().post(url, {"unserved_reason": "duplicate"}, format="json")
    retry = dispatcher.client().post(url, {"unserved_reason": "duplicate"}, format="json")

    assert (first.status_code, retry.status_code) == (200, 200)
    assert events(record_id=incident.pk, actor_id=dispatcher.user.pk, action__in=["update", "read"]) == [
        ("update", "api", "dispatch.incident"),
        ("read", "api", "dispatch.incident"),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("action", "body", "by_dispatch", "acknowledged"),
    [
        ("acknowledge", {}, False, False),
        ("status", {"status": "en_route", "event_id": str(uuid.uuid4())}, False, True),
        ("decline", {"reason": "Already on a call"}, False, False),
        ("cancel", {"reason": "Sent another unit"}, True, False),
    ],
)
def test_an_assignment_action_sent_again_writes_nothing_and_is_a_read(
    program: Program,
    dispatcher: CrewMember,
    crew_member: CrewMember,
    action: str,
    body: dict[str, Any],
    by_dispatch: bool,
    acknowledged: bool,
) -> None:
    """An acknowledgement, a status with its event id, a decline or a cancel sent again is
    answered with the assignment as it stands and changes nothing: a read, not an update."""
    assignment = services.assignment_offer(
        incident=make_incident(program, dispatcher), unit=crew_member.unit, actor=dispatcher.user
    )
    if acknowledged:
        services.assignment_acknowledge(assignment_id=assignment.pk, user=crew_member.user, device=crew_member.device)
    member = dispatcher if by_dispatch else crew_member
    url = f"/api/v1/dispatch/assignments/{assignment.pk}/{action}/"

    first = member.client().post(url, body, format="json")
    retry = member.client().post(url, body, format="json")

    assert (first.status_code, retry.status_code) == (200, 200), (first.json(), retry.json())
    assert events(record_id=assignment.pk, actor_id=member.user.pk) == [
        ("update", "api", "dispatch.assignment"),
        ("read", "api", "dispatch.assignment"),
    ]


@pytest.mark.django_db
def test_a_partners_acknowledgement_after_the_first_is_a_read(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """First wins: the partner's ack gets the same answer and writes nothing."""
    partner = make_crew_member(program, unit=crew_member.unit)
    assignment = services.assignment_offer(
        incident=make_incident(program, dispatcher), unit=crew_member.unit, actor=dispatcher.user
    )
    url = f"/api/v1/dispatch/assignments/{assignment.pk}/acknowledge/"

    first = crew_member.client().post(url, {}, format="json")
    second = partner.client().post(url, {}, format="json")

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["acknowledged_by"] == first.json()["acknowledged_by"]
    assert events(record_id=assignment.pk, actor_id=partner.user.pk) == [("read", "api", "dispatch.assignment")]


@pytest.mark.django_db
def test_a_check_in_sent_again_is_a_second_check_in(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """A check-in has no id to retry under: each one moves the next one's deadline, a write."""
    assignment = services.assignment_offer(
        incident=make_incident(program, dispatcher), unit=crew_member.unit, actor=dispatcher.user
    )
    services.assignment_acknowledge(assignment_id=assignment.pk, user=crew_member.user, device=crew_member.device)
    services.assignment_update_status(
        assignment_id=assignment.pk, user=crew_member.user, device=crew_member.device, status=AssignmentStatus.ON_SCENE
    )
    url = f"/api/v1/dispatch/assignments/{assignment.pk}/check-in/"

    assert crew_member.client().post(url, {}, format="json").status_code == 200
    assert crew_member.client().post(url, {}, format="json").status_code == 200
    checked_in = ("update", "api", "dispatch.assignment")
    assert events(record_id=assignment.pk, actor_id=crew_member.user.pk) == [checked_in, checked_in]
