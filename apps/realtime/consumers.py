"""The one websocket of a field device: authenticate, join groups, forward events.

Protocol (JSON text frames):

    client → {"type": "auth", "token": "<device token>"}   must be the first message
    server → {"type": "auth.ok", "device": "<id>", "user": "<id>"}
    client → {"type": "ping"}                               server → {"type": "pong"}
    server → {"type": "error", "code": "...", "detail": "..."}  bad frame; socket stays open
    server → {"type": "device.revoked", "purge_local_data": true}, then close 4403

The token travels in the first message, not the URL, so it never lands in access logs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from apps.accounts.models import DeviceToken
from apps.accounts.selectors import TokenProblem, TokenRejected, device_token_for
from apps.accounts.services import device_group_name, device_mark_seen


class CloseCode:
    """Application close codes (4000-4999), stable for clients to act on."""

    UNAUTHENTICATED = 4401  # no, unknown or expired token, or none sent in time
    REVOKED = 4403  # the device was revoked: purge local data


MAX_FRAME_BYTES = 64 * 1024


@database_sync_to_async
def _authenticate(raw_token: str) -> DeviceToken:
    token = device_token_for(raw_token=raw_token)
    device_mark_seen(device=token.device)
    return token


class DeviceConsumer(AsyncJsonWebsocketConsumer):
    token: DeviceToken | None = None
    groups_joined: list[str]
    auth_timer: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.groups_joined = []
        await self.accept()
        self.auth_timer = asyncio.create_task(self._close_unless_authenticated())

    async def disconnect(self, code: int) -> None:
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data is None:
            await self.send_error("binary_not_supported", "Send JSON text frames.")
            return
        if len(text_data) > MAX_FRAME_BYTES:
            await self.send_error("frame_too_large", f"Frames are limited to {MAX_FRAME_BYTES} bytes.")
            return
        try:
            message = json.loads(text_data)
        except json.JSONDecodeError:
            await self.send_error("malformed_json", "The frame is not valid JSON.")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.send_error("invalid_message", "A frame is a JSON object with a string 'type'.", field="type")
            return
        await self.dispatch_client_message(message)

    async def dispatch_client_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "auth":
            await self.handle_auth(message)
        elif self.token is None:
            await self.send_error("not_authenticated", "Send {'type': 'auth', 'token': ...} first.")
        elif kind == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_error("unknown_type", f"Unknown message type {kind!r}.", field="type")

    async def handle_auth(self, message: dict[str, Any]) -> None:
        if self.token is not None:
            await self.send_error("already_authenticated", "This socket is already authenticated.")
            return
        raw_token = message.get("token")
        if not isinstance(raw_token, str) or not raw_token:
            await self.send_error("invalid_message", "'token' must be a non-empty string.", field="token")
            return
        try:
            self.token = await _authenticate(raw_token)
        except TokenRejected as rejection:
            code = CloseCode.REVOKED if rejection.problem is TokenProblem.REVOKED else CloseCode.UNAUTHENTICATED
            await self.send_json({"type": "auth.failed", "code": rejection.problem.value})
            await self.close(code=code)
            return
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        device = self.token.device
        await self.join(device_group_name(device.pk))
        await self.send_json({"type": "auth.ok", "device": str(device.pk), "user": str(device.user_id)})

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)

    async def send_error(self, code: str, detail: str, *, field: str | None = None) -> None:
        await self.send_json({"type": "error", "code": code, "detail": detail, "field": field})

    async def _close_unless_authenticated(self) -> None:
        await asyncio.sleep(settings.WEBSOCKET_AUTH_TIMEOUT_SECONDS)
        if self.token is None:
            await self.close(code=CloseCode.UNAUTHENTICATED)

    # Channel-layer events, sent to the groups this socket joined.

    async def device_revoked(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "device.revoked", "purge_local_data": True})
        await self.close(code=CloseCode.REVOKED)

    async def realtime_event(self, event: dict[str, Any]) -> None:
        """Forward a domain event's payload as it is; payloads carry ids, never health information."""
        await self.send_json(event["payload"])
