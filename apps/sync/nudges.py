"""Nudges after writes of synced records: one per scope per window, from a thread of their own.

A push nudges every scope that sees what it changed: the unit's crew, and the program's case
managers and supervisors, whose scopes every unit of the program shares. When many devices
sync at once (a shift ends, a district comes back online) each push would nudge the same
program-wide scopes again, every connected device of them would read its feed again, and the
nudges alone cost the pushing process a Redis round trip per scope per push.

So writes of synced records (pushes, and a case manager's edits) nudge through a
``CoalescingNudger``: a scope not nudged within the last window is nudged at once; a scope
nudged more recently is held, and nudged once when its window ends, however many writes came
in it. Every change is followed by a nudge within one window (a
nudge carries no data: the device reads everything committed before it). The sends run on
the nudger's own thread and event loop, so a push answers without waiting for Redis. A
nudge lost with its process delays a device until its next pull or safety poll, as any lost
nudge does; it never loses a change.

Changes that must reach a crew at once (dispatch's offers, written with
``apps.sync.services.record_change``) and a user's own scope changes nudge directly
(``apps.sync.services.nudge_scopes``), never through here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable

from channels.layers import get_channel_layer

from apps.sync import conf
from apps.sync.scopes import feed_group_name

logger = logging.getLogger(__name__)

Send = Callable[[list[str]], Awaitable[None]]


class CoalescingNudger:
    """One process's nudges (see the module docstring); ``send`` delivers a list of scopes'
    nudges, on the nudger's own event loop."""

    def __init__(self, *, window_seconds: float, send: Send, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window_seconds
        self._send = send
        self._clock = clock
        self._lock = threading.Lock()
        self._sent_at: dict[str, float] = {}
        self._held: set[str] = set()
        self._flush_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0
        self._start_lock = threading.Lock()

    def nudge(self, scopes: Iterable[str]) -> None:
        """Nudge these scopes now, or at the end of their window if one was nudged within it."""
        now = self._clock()
        due: list[str] = []
        with self._lock:
            for scope in dict.fromkeys(scopes):
                sent_at = self._sent_at.get(scope)
                if sent_at is None or now - sent_at >= self.window:
                    self._sent_at[scope] = now
                    due.append(scope)
                    self._held.discard(scope)
                else:
                    self._held.add(scope)
                    flush_at = sent_at + self.window
                    if self._flush_at is None or flush_at < self._flush_at:
                        self._flush_at = flush_at
                        self._in_loop(self._schedule_flush, flush_at - now)
        if due:
            self._in_loop(self._send_now, due)

    def flush_held(self) -> list[str]:
        """Take the held scopes that are due (their window over), marking them sent now;
        schedules the next flush for any still held."""
        now = self._clock()
        with self._lock:
            due = sorted(scope for scope in self._held if now - self._sent_at[scope] >= self.window)
            for scope in due:
                self._held.discard(scope)
                self._sent_at[scope] = now
            self._flush_at = None
            if self._held:
                self._flush_at = min(self._sent_at[scope] for scope in self._held) + self.window
                self._in_loop(self._schedule_flush, self._flush_at - now)
            if len(self._sent_at) > 10_000:  # forget scopes long quiet
                self._sent_at = {s: t for s, t in self._sent_at.items() if now - t < self.window or s in self._held}
        return due

    # On the nudger's loop.

    def _schedule_flush(self, delay: float) -> None:
        assert self._loop is not None
        self._loop.call_later(max(delay, 0.0), self._flush)

    def _flush(self) -> None:
        due = self.flush_held()
        if due:
            self._send_now(due)

    def _send_now(self, scopes: list[str]) -> None:
        assert self._loop is not None
        self._loop.create_task(self._send_logged(scopes))

    async def _send_logged(self, scopes: list[str]) -> None:
        try:
            await self._send(scopes)
        except Exception:
            # The change is committed and the device will read it at its next pull.
            logger.exception("feed nudge of %d scopes failed", len(scopes))

    def _in_loop(self, function: Callable[..., None], *args: object) -> None:
        with self._start_lock:
            if self._loop is None or self._pid != os.getpid():  # first use, or a forked child
                self._loop, self._pid = asyncio.new_event_loop(), os.getpid()
                threading.Thread(target=self._loop.run_forever, name="feed-nudges", daemon=True).start()
            loop = self._loop
        loop.call_soon_threadsafe(function, *args)


async def send_nudges(scopes: list[str]) -> None:
    """Nudge the devices reading these scopes, in this order."""
    channel_layer = get_channel_layer()
    if channel_layer is None:
        return
    for scope in scopes:
        await channel_layer.group_send(feed_group_name(scope), {"type": "feed.nudge"})


_nudger = CoalescingNudger(window_seconds=conf.NUDGE_WINDOW_MS / 1000, send=send_nudges)


def nudge_soon(scopes: Iterable[str]) -> None:
    """Nudge these scopes within one window (call after the change has committed)."""
    _nudger.nudge(scopes)
