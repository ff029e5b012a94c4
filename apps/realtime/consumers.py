"""The one websocket of a field device: authenticate, join groups, forward.

Protocol (JSON text frames):

    client → {"type": "auth", "token": "<device token>"}   must be the first message
    server → {"type": "auth.ok", "device": "<id>", "user": "<id>"}
    client → {"type": "feed.subscribe", "cursor": "<cursor or null>", "request_id": "<optional tag>"}
    server → {"type": "feed.entries", "entries": [...], "cursor": "...", "has_more": false}
             at once (possibly empty: "caught up"; carrying the subscribe's request_id),
             then whenever the feed grows; a refused subscribe's error frame carries it too
    server → {"type": "error", "code": "throttled", "retry_after": <whole seconds>, ...} for a
             subscribe beyond FEED_SUBSCRIBE_LIMIT (5) in FEED_SUBSCRIBE_WINDOW_SECONDS (60):
             the socket stays as it was; subscribe after retry_after seconds
    client → {"type": "ping"}                               server → {"type": "pong"}
    client → {"type": "<domain message>", ..., "request_id": "<optional tag>"}
    server → the domain app's reply (or an error frame), carrying the same request_id
    server → {"type": "error", "code": "...", "detail": "...", "field": ...}  bad frame; socket stays open
    server → {"type": "device.revoked", "purge_local_data": true, "push_outbox_first": true},
             then close 4403: push the outbox over HTTP (it is kept for review), then purge
    server → {"type": "user.deactivated", ...the same}: the user's account was deactivated
    server → {"type": "auth.ended", "code": "token_expired" | "token_invalid"}, then close 4401:
             the socket's token stopped working (it expired, its rotation's grace ended, or
             its successor was used); reconnect with the current token, or sign in again
    server → {"type": "scopes.changed", "removed": [...], "added": [...]}  the user's units or roles
             changed; drop what belonged to a removed scope (sent when the channel layer
             says so, or when a feed read finds the user's scopes changed, whichever is first)

The token travels in the first message, not the URL, so it never lands in access logs.
Feed entries are read from the database (the same pages as GET /api/v1/sync/feed/); the
channel layer only carries nudges, so a lost nudge delays delivery but never loses it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from apps.accounts.models import DeviceToken, User
from apps.accounts.selectors import (
    TokenProblem,
    TokenRejected,
    device_token_for,
    device_token_recheck,
    token_usable_until,
)
from apps.accounts.services import device_authenticated, device_group_name, device_token_group_name
from apps.audit.models import AccessChannel
from apps.audit.services import Accessor
from apps.common.api.parsers import strict_loads
from apps.realtime.handlers import Handler, HandlerError, handler_for
from apps.sync import audit as sync_audit
from apps.sync import selectors as feed
from apps.sync.models import ChangeEntry
from apps.sync.scopes import feed_group_name
from apps.sync.services import user_scopes_refresh

logger = logging.getLogger(__name__)


class CloseCode:
    """Application close codes (4000-4999), stable for clients to act on."""

    UNAUTHENTICATED = 4401  # no, unknown or expired token, or none sent in time
    REVOKED = 4403  # the device was revoked or its user deactivated: push the outbox, then purge


MAX_FRAME_BYTES = 64 * 1024
MAX_REQUEST_ID_LENGTH = 100
# A token check whose read failed is made again within this many seconds.
TOKEN_CHECK_RETRY_SECONDS = 5.0
FEED_PAGE_SIZE = 200
# Backoff while committed entries wait behind an older, still-running transaction, then a
# look every HELD_BACK_RETRY_LATER_SECONDS until it ends: its commit nudges only its own
# scopes, so nothing else tells this socket.
HELD_BACK_RETRY_SECONDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
HELD_BACK_RETRY_LATER_SECONDS = 2.0
# Each subscribe sends the feed again from its cursor, a whole catch-up for a few bytes: 30
# subscribes from an old cursor sent 15 MB. A device subscribes once a socket, and again after
# bootstrapping from a refused cursor; more than this in a window of the socket's is refused.
# Counted by the socket itself, which alone reads its frames: nothing to share through Redis,
# as the HTTP throttles do, and the times of a few subscribes cost nothing to keep, so the
# window slides (a fixed one lets twice the limit through across its edge).
FEED_SUBSCRIBE_LIMIT = 5
FEED_SUBSCRIBE_WINDOW_SECONDS = 60


def _in_thread_pool(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Run a database call in the event loop's thread pool.

    Channels' default (thread_sensitive) runs every consumer's database calls, for every
    socket of the process, one at a time in a single thread; a burst of feed reads after an
    assignment then queues behind itself. These calls hold no state between them, so they
    may run side by side, each borrowing a connection from the process's pool.
    """
    return database_sync_to_async(function, thread_sensitive=False)


def _authenticate_now(raw_token: str) -> tuple[DeviceToken, list[str]]:
    token = device_token_for(raw_token=raw_token)
    device_authenticated(token=token)
    return token, user_scopes_refresh(user=token.device.user)


def _read_feed_now(scopes: list[str], cursor: str | None, token: DeviceToken) -> feed.FeedPage:
    """A page of the feed, for a token that still works once it was read (raises
    TokenRejected otherwise): a page read after its device was revoked or its user
    deactivated is never served, even when the channel layer lost word of it."""
    page = feed.feed_page(
        scopes=scopes,
        cursor=cursor,
        limit=FEED_PAGE_SIZE,
        reader_device_id=token.device_id,
        user_id=token.device.user_id,
    )
    device_token_recheck(token_id=token.pk)
    return page


def _recheck_token_now(token: DeviceToken) -> DeviceToken:
    return device_token_recheck(token_id=token.pk)


def _handle_now(handler: Handler, token: DeviceToken, message: dict[str, Any]) -> dict[str, Any] | None:
    """A domain message answered for the token as it stands now (raises TokenRejected once it
    stopped working): a device revoked, or a user deactivated, acts no more, even when the
    channel layer lost word of it."""
    return handler(device_token_recheck(token_id=token.pk), message)


def _refresh_scopes_now(user_id: Any) -> list[str]:
    return user_scopes_refresh(user=User.objects.get(pk=user_id))


def _audit_delivered_now(token: DeviceToken, entries: list[ChangeEntry]) -> None:
    # Health information sent down a socket is a read like any other (P8).
    sync_audit.record_reads(
        accessor=Accessor.from_token(token, AccessChannel.WEBSOCKET),
        records=((entry.record_type, entry.record_id) for entry in entries),
    )


def _request_tag(message: dict[str, Any]) -> dict[str, str] | None:
    """The tag a client may put on a request to match the answer to it, to send back as it
    came ({} when there is none); None when it is not one (not a string, or too long)."""
    request_id = message.get("request_id")
    if request_id is None:
        return {}
    if not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID_LENGTH:
        return None
    return {"request_id": request_id}


_authenticate = _in_thread_pool(_authenticate_now)
_recheck_token = _in_thread_pool(_recheck_token_now)
_refresh_scopes = _in_thread_pool(_refresh_scopes_now)
_handle = _in_thread_pool(_handle_now)
_read_feed = _in_thread_pool(_read_feed_now)
_audit_delivered = _in_thread_pool(_audit_delivered_now)


@dataclass(frozen=True)
class _Subscribe:
    """A ``feed.subscribe`` accepted: the cursor to read from, and the tag its errors carry."""

    cursor: str | None
    request_tag: dict[str, str]


class DeviceConsumer(AsyncJsonWebsocketConsumer):
    token: DeviceToken | None = None
    scopes: list[str]
    groups_joined: list[str]
    auth_timer: asyncio.Task[None] | None = None
    token_check: asyncio.Task[None] | None = None
    ended = False
    feed_cursor: str | None = None
    feed_subscribed = False
    feed_lock: asyncio.Lock
    token_lock: asyncio.Lock
    feed_retry: asyncio.Task[None] | None = None
    feed_poll: asyncio.Task[None] | None = None
    feed_sender: asyncio.Task[None] | None = None
    # Set by a nudge; cleared when a read starts. Nudges during a read make one more read.
    feed_dirty = False
    feed_subscribed_at: collections.deque[float]  # monotonic times of the window's subscribes

    async def connect(self) -> None:
        self.scopes = []
        self.feed_subscribed_at = collections.deque()
        self.groups_joined = []
        self.feed_lock = asyncio.Lock()
        self.token_lock = asyncio.Lock()
        await self.accept()
        self.auth_timer = asyncio.create_task(self._close_unless_authenticated())

    async def disconnect(self, code: int) -> None:
        self.ended = True  # a token check still reading must not schedule another
        for task in (self.auth_timer, self.token_check, self.feed_retry, self.feed_poll, self.feed_sender):
            if task is not None:
                task.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data is None:
            await self.send_error("binary_not_supported", "Send JSON text frames.")
            return
        # A character is up to four bytes in UTF-8: count the bytes only when it may matter.
        if len(text_data) * 4 > MAX_FRAME_BYTES and len(text_data.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
            await self.send_error("frame_too_large", f"Frames are limited to {MAX_FRAME_BYTES} bytes.")
            return
        try:
            message = strict_loads(text_data)
        except (ValueError, RecursionError):  # NaN, 1e400, or nested deeper than the parser reads
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
        elif kind == "feed.subscribe":
            await self.handle_feed_subscribe(message)
        elif (handler := handler_for(kind)) is not None:
            await self.run_domain_handler(handler, message)
        else:
            # A tagged message gets its tag back with the refusal: the client waiting on that
            # request's answer (a type a newer app sends) learns it failed.
            await self.send_error(
                "unknown_type", f"Unknown message type {kind!r}.", field="type", **(_request_tag(message) or {})
            )

    async def handle_auth(self, message: dict[str, Any]) -> None:
        if self.token is not None:
            await self.send_error("already_authenticated", "This socket is already authenticated.")
            return
        raw_token = message.get("token")
        if not isinstance(raw_token, str) or not raw_token:
            await self.send_error("invalid_message", "'token' must be a non-empty string.", field="token")
            return
        try:
            self.token, self.scopes = await _authenticate(raw_token)
        except TokenRejected as rejection:
            await self.send_json({"type": "auth.failed", "code": rejection.problem.value, **rejection.instructions()})
            await self.close(code=CloseCode.REVOKED if rejection.problem.locks_out else CloseCode.UNAUTHENTICATED)
            return
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        device = self.token.device
        await self.join(device_group_name(device.pk))
        await self.join(device_token_group_name(self.token.pk))
        for scope in self.scopes:
            await self.join(feed_group_name(scope))
        await self.send_json({"type": "auth.ok", "device": str(device.pk), "user": str(device.user_id)})
        self._check_token_later()

    async def handle_feed_subscribe(self, message: dict[str, Any]) -> None:
        assert self.token is not None  # handlers run once the socket is authenticated
        tag = await self.request_tag_of(message)
        if tag is None:
            return
        # A misspelt or missing cursor would read as null: the whole feed from its start,
        # sent again over a device's records without a word.
        unknown = sorted(set(message) - {"type", "cursor", "request_id"})
        if unknown:
            await self.send_error("invalid_message", f"Unknown field {unknown[0]!r}.", field=unknown[0], **tag)
            return
        if "cursor" not in message:
            await self.send_error(
                "invalid_message", "Send 'cursor': the stored cursor, or null.", field="cursor", **tag
            )
            return
        cursor = message["cursor"]
        if cursor is not None and not isinstance(cursor, str):
            await self.send_error("invalid_message", "'cursor' must be a string or null.", field="cursor", **tag)
            return
        try:
            feed.FeedPosition.decode(cursor, reader_device_id=self.token.device_id)
        except feed.InvalidCursor as error:
            await self.send_error("invalid_cursor", str(error), field="cursor", **tag)
            return
        wait = self._subscribe_wait()
        if wait > 0:
            await self.send_error(
                "throttled",
                f"At most {FEED_SUBSCRIBE_LIMIT} subscribes in {FEED_SUBSCRIBE_WINDOW_SECONDS} seconds: the"
                " the socket stays as it was.",
                retry_after=math.ceil(wait),
                **tag,
            )
            return
        await self.send_feed(subscribe=_Subscribe(cursor, tag))
        if self.feed_poll is None and settings.FEED_SAFETY_POLL_SECONDS > 0:
            self.feed_poll = asyncio.create_task(self._poll_feed())

    def _subscribe_wait(self) -> float:
        """Seconds until this socket may subscribe again; 0 when it may now, and the subscribe
        is counted."""
        now = time.monotonic()
        subscribed_at = self.feed_subscribed_at
        while subscribed_at and subscribed_at[0] <= now - FEED_SUBSCRIBE_WINDOW_SECONDS:
            subscribed_at.popleft()
        if len(subscribed_at) >= FEED_SUBSCRIBE_LIMIT:
            return subscribed_at[0] + FEED_SUBSCRIBE_WINDOW_SECONDS - now
        subscribed_at.append(now)
        return 0.0

    async def send_feed(self, *, subscribe: _Subscribe | None = None) -> None:
        """Send every servable entry after this socket's cursor, in order, once.

        For a ``subscribe``, from its cursor, and a page is sent even when empty: the reply
        tells the device it is caught up.
        """
        assert self.token is not None
        tag = subscribe.request_tag if subscribe is not None else {}
        async with self.feed_lock:
            always_answer = subscribe is not None
            if subscribe is not None:
                # Under the lock: a read running now would end by putting its cursor over this
                # one, and a nudge's read in between would answer for the subscribe (a refused
                # cursor without the subscribe's request_id).
                self.feed_cursor = subscribe.cursor
                self.feed_subscribed = True
            # Not after its cursor was refused: the device bootstraps, then subscribes again.
            if not self.feed_subscribed:
                return
            while True:
                try:
                    page = await _read_feed(self.scopes, self.feed_cursor, self.token)
                except feed.InvalidCursor as error:
                    # Older than the feed keeps (410 over HTTP): bootstrap from the snapshot.
                    self.feed_subscribed = False
                    if isinstance(error, feed.CursorExpired):
                        # As the 410's body: after a restore the outbox goes without its bases.
                        restored = isinstance(error, feed.CursorAhead)
                        await self.send_error(
                            "cursor_expired", str(error), field="cursor", database_restored=restored, **tag
                        )
                    else:
                        await self.send_error("invalid_cursor", str(error), field="cursor", **tag)
                    return
                except TokenRejected as rejection:
                    self.feed_subscribed = False
                    await self._end_for(rejection)
                    return
                joined = False
                if page.scopes != self.scopes:
                    # The user's access changed and the channel layer's word of it is late
                    # or lost: the page was read for the scopes they have now.
                    joined = await self.follow_scopes(page.scopes)
                cursor = page.position.encode(self.token.device_id)
                # Not for a cursor that only moved up with the feed: every socket would get a
                # message whenever any crew's change committed. It goes with the next one.
                if page.passed_entries or always_answer:
                    answering = tag if always_answer else {}  # a subscribe's answer: its first page
                    always_answer = False
                    # Recorded before it goes out: if the audit trail cannot take the read,
                    # the page is not sent, and the device reads it again once it can.
                    audited = [entry for entry in page.entries if sync_audit.is_audited(entry)]
                    if audited:
                        await _audit_delivered(self.token, audited)
                    await self.send_json(
                        {
                            "type": "feed.entries",
                            "entries": [feed.entry_as_message(entry, self.token.device_id) for entry in page.entries],
                            "cursor": cursor,
                            "has_more": page.has_more,
                            **answering,
                        }
                    )
                self.feed_cursor = cursor
                # A scope's group joined after the read: what it committed in between was
                # nudged to a group this socket was not in yet, so read once more.
                if not page.has_more and not joined:
                    break
        if page.held_back and (self.feed_retry is None or self.feed_retry.done()):
            self.feed_retry = asyncio.create_task(self._retry_held_back())

    async def _retry_held_back(self) -> None:
        for delay in itertools.chain(HELD_BACK_RETRY_SECONDS, itertools.repeat(HELD_BACK_RETRY_LATER_SECONDS)):
            await asyncio.sleep(delay)
            if not self.feed_subscribed:
                return
            assert self.token is not None
            try:
                page = await _read_feed(self.scopes, self.feed_cursor, self.token)
            except TokenRejected as rejection:
                await self._end_for(rejection)
                return
            if page.passed_entries:
                await self.send_feed()
            if not page.held_back:
                return

    async def _poll_feed(self) -> None:
        # A safety net under the nudges, which the channel layer may drop. A round whose read
        # failed (the database or the audit trail unavailable for a moment) is logged and the
        # next one runs: ended by it, the net would be gone for the rest of the socket's life.
        while True:
            await asyncio.sleep(settings.FEED_SAFETY_POLL_SECONDS)
            try:
                await self.send_feed()
            except Exception:
                logger.exception("feed safety poll could not read the feed")

    async def run_domain_handler(self, handler: Any, message: dict[str, Any]) -> None:
        tag = await self.request_tag_of(message)
        if tag is None:
            return
        assert self.token is not None
        try:
            reply = await _handle(handler, self.token, message)
        except TokenRejected as rejection:
            await self._end_for(rejection)
            return
        except HandlerError as refusal:
            await self.send_error(refusal.code, refusal.detail, field=refusal.field, **tag)
            return
        except Exception:
            # A server fault: the client should retry; the socket stays open.
            logger.exception("websocket handler for %s failed", message["type"])
            await self.send_error("server_error", "Could not process the message; retry.", **tag)
            return
        if reply is not None:
            await self.send_json({**reply, **tag})

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)

    async def request_tag_of(self, message: dict[str, Any]) -> dict[str, str] | None:
        """The message's ``_request_tag``; None, with the error sent, when its request_id is
        not one."""
        tag = _request_tag(message)
        if tag is None:
            await self.send_error(
                "invalid_message",
                f"'request_id' must be a string of at most {MAX_REQUEST_ID_LENGTH}.",
                field="request_id",
            )
        return tag

    async def send_error(self, code: str, detail: str, *, field: str | None = None, **extra: str | bool | int) -> None:
        await self.send_json({"type": "error", "code": code, "detail": detail, "field": field, **extra})

    async def _close_unless_authenticated(self) -> None:
        await asyncio.sleep(settings.WEBSOCKET_AUTH_TIMEOUT_SECONDS)
        if self.token is None:
            await self.close(code=CloseCode.UNAUTHENTICATED)

    def _check_token_later(self, *, at_most: float | None = None) -> None:
        """Check the token again when the clock ends it, or within WEBSOCKET_TOKEN_RECHECK_SECONDS
        in case the channel layer lost the word of a change (``token_changed``)."""
        assert self.token is not None
        if self.ended:
            return
        if self.token_check is not None and self.token_check is not asyncio.current_task():
            self.token_check.cancel()
        until_unusable = (token_usable_until(self.token) - timezone.now()).total_seconds()
        delay = max(0.0, min(until_unusable, settings.WEBSOCKET_TOKEN_RECHECK_SECONDS or until_unusable))
        if at_most is not None:
            # After a failed check: soon, but not at once, even for a token the clock has ended.
            delay = min(max(delay, 1.0), at_most)
        self.token_check = asyncio.create_task(self._check_token_after(delay))

    async def _check_token_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.check_token()

    async def check_token(self) -> None:
        """A socket lives as long as its token, not as long as its connection."""
        assert self.token is not None
        # One check at a time: a read begun before a rotation must not land after the read
        # that saw it, and schedule by the token as it was.
        async with self.token_lock:
            if self.ended:
                return
            try:
                token = await _recheck_token(self.token)
            except TokenRejected as rejection:
                await self._end_for(rejection)
                return
            except Exception:
                # The database unavailable for a moment: the check is made again. Ended by
                # it, the socket would outlive its token's revocation or expiry.
                logger.exception("websocket could not check its token again")
                self._check_token_later(at_most=TOKEN_CHECK_RETRY_SECONDS)
                return
            if self.ended:  # the client left while the token was read
                return
            self.token = token
            self._check_token_later()

    # Channel-layer events, sent to the groups this socket joined.

    async def token_changed(self, event: dict[str, Any]) -> None:
        """The token was rotated, or its successor used: it may have stopped working."""
        if self.token is not None:
            await self.check_token()

    async def feed_nudge(self, event: dict[str, Any]) -> None:
        # Read in a task of its own, so this socket's next channel-layer message is not held
        # up, and coalesce: one transaction nudges several scopes, all served by one read.
        if not self.feed_subscribed:
            return
        self.feed_dirty = True
        if self.feed_sender is None or self.feed_sender.done():
            self.feed_sender = asyncio.create_task(self._send_while_dirty())

    async def _send_while_dirty(self) -> None:
        while self.feed_dirty:
            self.feed_dirty = False
            await self.send_feed()

    async def scopes_changed(self, event: dict[str, Any]) -> None:
        """The user's units or roles changed: follow exactly the scopes they may see now."""
        if self.token is None:
            return
        scopes = await _refresh_scopes(self.token.device.user_id)
        if self.feed_subscribed:
            # The read takes the user's scopes in the snapshot of the entries it serves.
            await self.send_feed()
        if not self.feed_subscribed:  # never subscribed, or its cursor was just refused
            await self.follow_scopes(scopes)

    async def follow_scopes(self, scopes: list[str]) -> bool:
        """Join the groups of gained scopes, leave those of lost ones, and tell the device.
        Returns whether it joined any."""
        removed = sorted(set(self.scopes) - set(scopes))
        added = sorted(set(scopes) - set(self.scopes))
        self.scopes = scopes
        if not removed and not added:
            return False
        for scope in removed:
            group = feed_group_name(scope)
            await self.channel_layer.group_discard(group, self.channel_name)
            self.groups_joined.remove(group)
        for scope in added:
            await self.join(feed_group_name(scope))
        await self.send_json({"type": "scopes.changed", "removed": removed, "added": added})
        return bool(added)

    async def device_revoked(self, event: dict[str, Any]) -> None:
        await self._lock_out("device.revoked")

    async def user_deactivated(self, event: dict[str, Any]) -> None:
        await self._lock_out("user.deactivated")

    async def _lock_out(self, frame_type: str) -> None:
        # The device's token was locked out with it, so the push still takes its outbox.
        await self._end({"type": frame_type, "purge_local_data": True, "push_outbox_first": True}, CloseCode.REVOKED)

    async def _end_for(self, rejection: TokenRejected) -> None:
        """The socket's token stopped working: say why, and close."""
        if rejection.problem.locks_out:  # word of it from the device's group was lost
            frame_type = "device.revoked" if rejection.problem is TokenProblem.REVOKED else "user.deactivated"
            await self._end({"type": frame_type, **rejection.instructions()}, CloseCode.REVOKED)
        else:
            await self._end({"type": "auth.ended", "code": rejection.problem.value}, CloseCode.UNAUTHENTICATED)

    async def _end(self, last_frame: dict[str, Any], close_code: int) -> None:
        # Said once: a lockout may be told by the device's group and found by a token check.
        if self.ended:
            return
        self.ended = True
        await self.send_json(last_frame)
        await self.close(code=close_code)

    async def realtime_event(self, event: dict[str, Any]) -> None:
        """Forward a mechanism's payload as it is; payloads carry ids, never health information."""
        await self.send_json(event["payload"])
