from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import websockets
from django.conf import settings
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from websockets.sync.client import ClientConnection

from apps.accounts import services
from apps.accounts.models import Device, DeviceToken, User
from apps.sync import services as sync_services
from apps.sync.scopes import unit_scope
from tests.admin_pages import resubmitted
from tests.conftest import LOCKOUTS, CrewMember
from tests.live import AsgiServer, asgi_server
from tests.realtime.client import assert_locked_out, authenticated_socket, close_code, open_socket, receive, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def test_device_authenticates_with_its_first_message(asgi: AsgiServer, crew_member: CrewMember) -> None:
    with open_socket(asgi.ws_url) as socket:
        send(socket, {"type": "auth", "token": crew_member.token})

        assert receive(socket) == {
            "type": "auth.ok",
            "device": str(crew_member.device.pk),
            "user": str(crew_member.user.pk),
        }
        send(socket, {"type": "ping"})
        assert receive(socket) == {"type": "pong"}


def test_a_socket_opened_with_a_rotated_token_ends_the_token_it_replaced(
    asgi: AsgiServer, crew_member: CrewMember
) -> None:
    _token, new_token = services.device_token_rotate(token=crew_member.device.tokens.get())

    with authenticated_socket(asgi.ws_url, new_token):
        pass

    with open_socket(asgi.ws_url) as socket:
        send(socket, {"type": "auth", "token": crew_member.token})
        assert receive(socket) == {"type": "auth.failed", "code": "token_invalid"}


def assert_ended(socket: ClientConnection, code: str, *, within: float) -> None:
    """The server says the socket's token stopped working and closes it with 4401."""
    assert receive(socket, timeout=within) == {"type": "auth.ended", "code": code}
    assert close_code(socket, timeout=1) == 4401


def test_an_open_socket_ends_when_the_successor_of_its_token_is_first_used(
    asgi: AsgiServer, crew_member: CrewMember
) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as old_socket:
        _token, new_token = services.device_token_rotate(token=crew_member.device.tokens.get())
        send(old_socket, {"type": "ping"})
        assert receive(old_socket) == {"type": "pong"}  # the rotation's answer may never arrive

        response = httpx.get(f"{asgi.http_url}/api/v1/devices/", headers={"Authorization": f"Bearer {new_token}"})

        assert response.status_code == 200
        assert_ended(old_socket, "token_invalid", within=1)


def test_an_open_socket_ends_when_its_token_expires(asgi: AsgiServer, crew_member: CrewMember) -> None:
    DeviceToken.objects.filter(device=crew_member.device).update(expires_at=timezone.now() + timedelta(seconds=2))

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "ping"})
        assert receive(socket) == {"type": "pong"}

        assert_ended(socket, "token_expired", within=4)


def test_an_open_socket_ends_when_the_grace_of_a_rotation_made_while_it_was_open_ends(
    asgi: AsgiServer, crew_member: CrewMember
) -> None:
    token = crew_member.device.tokens.get()
    grace = timedelta(minutes=settings.DEVICE_TOKEN_ROTATION_GRACE_MINUTES)  # the server's too

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        with transaction.atomic():
            services.device_token_rotate(token=token)
            # As if the rotation were made most of a grace period ago.
            DeviceToken.objects.filter(pk=token.pk).update(replaced_at=timezone.now() - grace + timedelta(seconds=2))
        send(socket, {"type": "ping"})
        assert receive(socket) == {"type": "pong"}

        assert_ended(socket, "token_invalid", within=4)


def test_an_open_socket_finds_a_revocation_whose_word_was_lost(live_server_logs: Path, crew_member: CrewMember) -> None:
    with (
        asgi_server(live_server_logs, name="web-token-recheck", WEBSOCKET_TOKEN_RECHECK_SECONDS="1") as server,
        authenticated_socket(server.ws_url, crew_member.token) as socket,
    ):
        # Revoked behind the services' back, so no socket is told.
        now = timezone.now()
        Device.objects.filter(pk=crew_member.device.pk).update(revoked_at=now)
        DeviceToken.objects.filter(device=crew_member.device).update(revoked_at=now)

        assert receive(socket, timeout=3) == {
            "type": "device.revoked",
            "purge_local_data": True,
            "push_outbox_first": True,
        }
        assert close_code(socket, timeout=1) == 4403


def test_a_check_of_the_token_that_failed_is_made_again(live_server_logs: Path, crew_member: CrewMember) -> None:
    """A check whose read failed (the database unavailable for a moment) is made again:
    ended by it, the socket would outlive its token's revocation or expiry."""
    with (
        asgi_server(live_server_logs, name="web-token-recheck-fails", WEBSOCKET_TOKEN_RECHECK_SECONDS="1") as server,
        authenticated_socket(server.ws_url, crew_member.token) as socket,
    ):
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE accounts_devicetoken RENAME TO accounts_devicetoken_away")
        try:
            time.sleep(2.5)  # at least one check fails
        finally:
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE accounts_devicetoken_away RENAME TO accounts_devicetoken")
        _revoke_unannounced(crew_member)

        assert receive(socket, timeout=4) == {
            "type": "device.revoked",
            "purge_local_data": True,
            "push_outbox_first": True,
        }
        assert close_code(socket, timeout=1) == 4403


def _revoke_unannounced(member: CrewMember) -> None:
    now = timezone.now()
    Device.objects.filter(pk=member.device.pk).update(revoked_at=now)
    DeviceToken.objects.filter(device=member.device).update(revoked_at=now)


def _deactivate_unannounced(member: CrewMember) -> None:
    User.objects.filter(pk=member.user.pk).update(is_active=False)


@pytest.mark.parametrize(
    ("lock_out", "frame_type"),
    [
        pytest.param(_revoke_unannounced, "device.revoked", id="revoked"),
        pytest.param(_deactivate_unannounced, "user.deactivated", id="deactivated"),
    ],
)
def test_an_open_socket_whose_lockout_word_was_lost_serves_no_more_of_the_feed(
    asgi: AsgiServer, crew_member: CrewMember, lock_out: Callable[[CrewMember], None], frame_type: str
) -> None:
    """The channel layer may drop the word of a revocation or a deactivation, and the token is
    checked again only a minute later: meanwhile every nudge of the crew's scopes would send
    the lost tablet the crew's new records. The read that finds the device locked out sends
    nothing of them, and ends the socket instead."""
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        assert receive(socket)["entries"] == []
        lock_out(crew_member)  # behind the services' back: no socket is told

        record_id = uuid.uuid4()
        with transaction.atomic():
            sync_services.record_change(
                program_id=crew_member.unit.program_id,
                record_type="test.note",
                record_id=record_id,
                scopes=[unit_scope(crew_member.unit.pk)],
                data={"body": "written after the lockout"},
            )

        assert receive(socket, timeout=3) == {"type": frame_type, "purge_local_data": True, "push_outbox_first": True}
        assert close_code(socket, timeout=1) == 4403


# JSON may carry a lone surrogate, which no token holds (nor could be hashed as UTF-8).
@pytest.mark.parametrize("token", ["tdm_forged", "tdm_\ud800", "tdm_\x00"])
def test_unknown_token_is_closed_with_4401(asgi: AsgiServer, db: None, token: str) -> None:
    with open_socket(asgi.ws_url) as socket:
        send(socket, {"type": "auth", "token": token})

        assert receive(socket) == {"type": "auth.failed", "code": "token_invalid"}
        assert close_code(socket) == 4401


@pytest.mark.parametrize(("lock_out", "code"), LOCKOUTS)
def test_a_locked_out_device_is_closed_with_4403_and_told_to_hand_over_its_outbox(
    asgi: AsgiServer, crew_member: CrewMember, lock_out: Callable[[CrewMember], None], code: str
) -> None:
    lock_out(crew_member)

    with open_socket(asgi.ws_url) as socket:
        send(socket, {"type": "auth", "token": crew_member.token})

        assert receive(socket) == {
            "type": "auth.failed",
            "code": code,
            "purge_local_data": True,
            "push_outbox_first": True,
        }
        assert close_code(socket) == 4403


def test_revoking_a_connected_device_closes_its_socket_within_a_second(
    asgi: AsgiServer, crew_member: CrewMember
) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        started = time.monotonic()
        services.device_revoke(device=crew_member.device, revoked_by=None, reason="lost tablet")

        assert_locked_out(socket, "device.revoked", since=started)


def test_deactivating_a_connected_user_in_the_admin_closes_their_sockets_within_a_second(
    asgi: AsgiServer, crew_member: CrewMember, superuser_client: Client
) -> None:
    change_url = f"/admin/accounts/user/{crew_member.user.pk}/change/"
    data = resubmitted(superuser_client.get(change_url))
    assert data.pop("is_active") == "on"

    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        started = time.monotonic()
        response = superuser_client.post(change_url, data)

        assert response.status_code == 302
        assert_locked_out(socket, "user.deactivated", since=started)


def test_messages_before_auth_get_an_error_frame(asgi: AsgiServer, crew_member: CrewMember) -> None:
    with open_socket(asgi.ws_url) as socket:
        send(socket, {"type": "ping"})

        assert receive(socket)["code"] == "not_authenticated"
        send(socket, {"type": "auth", "token": crew_member.token})
        assert receive(socket)["type"] == "auth.ok"


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ("{not json", "malformed_json", None),
        ('{"type": "ping", "deep": ' + "[" * 5_000 + "]" * 5_000 + "}", "malformed_json", None),
        ('{"type": "ping", "latitude": NaN}', "malformed_json", None),
        ('{"type": "ping", "latitude": 1e400}', "malformed_json", None),
        ("[1, 2]", "invalid_message", "type"),
        ('{"type": 7}', "invalid_message", "type"),
        ('{"type": "launch"}', "unknown_type", "type"),
        ('{"type": "auth", "token": 5}', "already_authenticated", None),
    ],
)
def test_malformed_frames_get_an_error_and_keep_the_connection(
    asgi: AsgiServer, crew_member: CrewMember, frame: str, code: str, field: str | None
) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        socket.send(frame)

        error = receive(socket)
        assert (error["type"], error["code"], error["field"]) == ("error", code, field)
        send(socket, {"type": "ping"})
        assert receive(socket) == {"type": "pong"}


def test_a_tagged_message_of_an_unknown_type_gets_its_tag_back_with_the_refusal(
    asgi: AsgiServer, crew_member: CrewMember
) -> None:
    """A client waits on a tagged message's answer (a type this server does not take, from a
    newer app): the refusal carries the tag, so the client knows that request failed."""
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        send(socket, {"type": "assignment.decline", "assignment": "x", "request_id": "decline-1"})

        error = receive(socket)

    assert (error["type"], error["code"], error["field"], error.get("request_id")) == (
        "error",
        "unknown_type",
        "type",
        "decline-1",
    )


def test_auth_with_a_non_string_token_names_the_field(asgi: AsgiServer, db: None) -> None:
    with open_socket(asgi.ws_url) as socket:
        send(socket, {"type": "auth", "token": 5})

        assert receive(socket) == {
            "type": "error",
            "code": "invalid_message",
            "detail": "'token' must be a non-empty string.",
            "field": "token",
        }


def test_binary_and_oversized_frames_are_refused(asgi: AsgiServer, crew_member: CrewMember) -> None:
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        socket.send(b"\x00\x01")
        assert receive(socket)["code"] == "binary_not_supported"
        socket.send(json.dumps({"type": "ping", "padding": "x" * 70_000}))
        assert receive(socket)["code"] == "frame_too_large"
        # 20,000 characters, 80,000 bytes: the limit is in bytes.
        socket.send(json.dumps({"type": "ping", "padding": "\U0001f600" * 20_000}, ensure_ascii=False))
        assert receive(socket)["code"] == "frame_too_large"
        socket.send(json.dumps({"type": "ping", "padding": "\U0001f600" * 10_000}, ensure_ascii=False))
        assert receive(socket) == {"type": "pong"}


def test_a_frame_far_over_the_limit_is_not_read_before_the_socket_authenticates(asgi: AsgiServer, db: None) -> None:
    # Before its token is checked, a socket could make the server hold 16 MiB per message
    # (uvicorn's default), 32 messages deep: the server stops reading at a few times the limit.
    with open_socket(asgi.ws_url) as socket:
        socket.send("x" * (1024 * 1024))

        assert close_code(socket) == 1009  # message too big


def test_token_is_never_needed_in_the_url(asgi: AsgiServer, crew_member: CrewMember) -> None:
    with open_socket(f"{asgi.ws_url}", additional_headers={"X-Ignored": crew_member.token}) as socket:
        send(socket, {"type": "ping"})
        assert receive(socket)["code"] == "not_authenticated"
    assert crew_member.token not in asgi.live.log()


def test_browser_socket_from_a_foreign_origin_is_refused(asgi: AsgiServer, db: None) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        open_socket(asgi.ws_url, origin="https://evil.example")

    assert refused.value.response.status_code == 403


def test_idle_socket_survives_past_the_redis_socket_timeout(asgi: AsgiServer, crew_member: CrewMember) -> None:
    """redis-py 8 defaults to a 5 s socket timeout, which closed idle consumers with 1011."""
    with authenticated_socket(asgi.ws_url, crew_member.token) as socket:
        time.sleep(7)

        services.device_revoke(device=crew_member.device, revoked_by=None, reason="lost")
        assert receive(socket, timeout=2)["type"] == "device.revoked"


def test_more_than_a_hundred_devices_connect_and_receive_at_once(asgi: AsgiServer, crew_member: CrewMember) -> None:
    """redis-py 8 caps a pool at 100 connections by default; 150 sockets must all work."""
    from tests.accounts.factories import device_with_token

    tokens = [device_with_token(crew_member.user, name=f"Device {index}") for index in range(150)]

    async def connect_all() -> list[dict[str, object]]:
        async def one(token: str) -> dict[str, object]:
            async with websockets.connect(f"{asgi.ws_url}/ws/v1/device/", open_timeout=30) as socket:
                await socket.send(json.dumps({"type": "auth", "token": token}))
                assert json.loads(await socket.recv())["type"] == "auth.ok"
                await socket.send(json.dumps({"type": "ping"}))
                reply: dict[str, object] = json.loads(await socket.recv())
                return reply

        return await asyncio.gather(*(one(token) for _device, token in tokens))

    replies = asyncio.run(connect_all())

    assert replies == [{"type": "pong"}] * 150
