"""In-app delivery end to end: notify → worker → channel layer → the device's open websocket."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from apps.accounts import services as accounts_services
from apps.accounts.models import Program
from apps.notifications import services
from apps.notifications.models import AttemptStatus, Channel, NotificationAttempt, Urgency
from tests.accounts.factories import device_with_token
from tests.conftest import CrewMember
from tests.live import AsgiServer, LiveProcess
from tests.notifications import payloads
from tests.realtime.client import authenticated_socket, close_code, receive, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_notification_reaches_the_open_socket_and_the_device_confirms_it(
    asgi: AsgiServer, worker: LiveProcess, program: Program, crew_member: CrewMember
) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        started = time.monotonic()
        notification = services.notify(
            program=program,
            recipients=[crew_member.user.pk],
            kind="assignment.offered",
            urgency=Urgency.URGENT,
            text="New assignment offered to your unit",
            link="/assignments/42",
        )

        frame = receive(socket, timeout=5)
        payloads.record("in_app", frame)

    assert time.monotonic() - started < 5
    assert frame == {
        "type": "notification",
        "id": str(notification.pk),
        "kind": "assignment.offered",
        "urgency": "urgent",
        "text": "New assignment offered to your unit",
        "link": "/assignments/42",
    }
    attempt = NotificationAttempt.objects.get(notification=notification, channel=Channel.IN_APP)
    wait_for(lambda: NotificationAttempt.objects.get(pk=attempt.pk).status == AttemptStatus.SENT)

    response = crew_member.client().post(
        f"/api/v1/notifications/{notification.pk}/receipts/", {"status": "opened"}, format="json"
    )

    attempt.refresh_from_db()
    assert response.status_code == 200
    assert attempt.status == AttemptStatus.OPENED
    assert attempt.delivered_at is not None and attempt.opened_at is not None


def test_revoked_device_gets_nothing_while_the_users_other_device_does(
    asgi: AsgiServer, worker: LiveProcess, program: Program, crew_member: CrewMember
) -> None:
    lost, lost_token = device_with_token(crew_member.user, name="Lost tablet")
    with (
        authenticated_socket(asgi.ws_url, crew_member.token) as kept_socket,
        authenticated_socket(asgi.ws_url, lost_token) as lost_socket,
    ):
        accounts_services.device_revoke(device=lost, revoked_by=None, reason="lost")
        assert receive(lost_socket)["type"] == "device.revoked"
        assert close_code(lost_socket) == 4403

        notification = services.notify(
            program=program,
            recipients=[crew_member.user.pk],
            kind="assignment.offered",
            urgency=Urgency.URGENT,
            text="New assignment offered to your unit",
        )

        frame = receive(kept_socket, timeout=5)
        payloads.record("in_app", frame)

    assert frame["id"] == str(notification.pk)
    assert not NotificationAttempt.objects.filter(device=lost).exists()
    lost_client = crew_member.client()
    lost_client.credentials(HTTP_AUTHORIZATION=f"Bearer {lost_token}")
    assert lost_client.get("/api/v1/notifications/").status_code == 401


def test_device_confirms_over_its_socket_and_another_users_receipt_is_refused(
    asgi: AsgiServer, program: Program, crew_member: CrewMember, outsider: CrewMember
) -> None:
    notification = services.notify(
        program=program,
        recipients=[crew_member.user.pk],
        kind="assignment.offered",
        urgency=Urgency.URGENT,
        text="New assignment offered to your unit",
    )
    receipt = {"type": "notification.receipt", "id": str(notification.pk), "status": "acknowledged"}

    with authenticated_socket(asgi.ws_url, outsider.token) as socket:
        send(socket, receipt)
        refused = receive(socket)
        send(socket, {**receipt, "status": "read"})
        malformed = receive(socket)
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, receipt)
        accepted = receive(socket)

    assert (refused["type"], refused["code"], refused["field"]) == ("error", "not_found", "id")
    assert (malformed["code"], malformed["field"]) == ("invalid_message", "status")
    assert accepted == {"type": "notification.receipt.ok", "id": str(notification.pk), "status": "acknowledged"}
    recipient = notification.recipients.get()
    assert recipient.acknowledged_at is not None
    assert not NotificationAttempt.objects.filter(device=outsider.device).exists()
