"""Two transactions at once, in the dispatch tests: work run on a connection of its own, as
another request's, seen waiting on the advisory lock it is expected to wait for; and a lock
(a unit's board) held by another transaction."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection, transaction

from apps.common.locks import advisory_lock_key
from apps.dispatch import services
from apps.sync.services import RECORD_LOCKS
from apps.teams.models import Unit

# How long a test waits for another thread, generously: the suite runs on busy machines.
PATIENCE = 120.0


def board_key(unit: Unit) -> int:
    return services._unit_board_key(unit.pk)


def record_key(record_id: uuid.UUID) -> int:
    return advisory_lock_key(RECORD_LOCKS, record_id)


def _advisory_lock_of(key: int) -> tuple[int, int]:
    # A bigint advisory lock shows in pg_locks as its high (classid) and low (objid) halves.
    return (key >> 32) & 0xFFFF_FFFF, key & 0xFFFF_FFFF


def holders_of_advisory_lock(key: int) -> list[int]:
    """The server processes (pids) that hold this advisory lock now, read from pg_locks."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND classid::bigint = %s AND objid::bigint = %s",
            _advisory_lock_of(key),
        )
        return [pid for (pid,) in cursor.fetchall()]


@dataclass
class Running:
    """Work running in a thread of its own, as another request would."""

    thread: threading.Thread
    outcome: dict[str, Any]
    # Whether it was seen waiting for the advisory lock it was expected to wait for.
    waited: bool

    def result(self) -> Any:
        """What the work returned, once it has ended: it must end, and without an error."""
        self.thread.join(PATIENCE)
        assert not self.thread.is_alive(), f"the work never ended in {PATIENCE:.0f}s"
        assert "error" not in self.outcome, f"the work failed: {self.outcome['error']!r}"
        assert "returned" in self.outcome, "the work never ran"
        return self.outcome["returned"]

    def error(self) -> Exception | None:
        """The error the work ended with (None: it returned), once it has ended."""
        self.thread.join(PATIENCE)
        assert not self.thread.is_alive(), f"the work never ended in {PATIENCE:.0f}s"
        return self.outcome.get("error")


def run_until_done_or_blocked(work: Any, *, blocked_on: int | None = None) -> Running:
    """Run ``work`` in a thread with its own database connection, as another request would,
    and return once it has ended, or once it waits for the advisory lock ``blocked_on`` (a
    bigint key; ``Running.waited`` says which). Fails when it does neither in time, naming
    the locks it waits for: a wait for another lock is a test that holds the wrong one."""
    outcome: dict[str, Any] = {}
    started, done = threading.Event(), threading.Event()

    def run() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                outcome["pid"] = cursor.fetchone()[0]
            started.set()
            outcome["returned"] = work()
        except Exception as error:  # noqa: BLE001 - judged in the test's own thread
            outcome["error"] = error
        finally:
            started.set()
            done.set()
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(PATIENCE), "the work never started"
    assert "pid" in outcome, f"the work never reached the database: {outcome.get('error')!r}"
    expected = _advisory_lock_of(blocked_on) if blocked_on is not None else None
    waits_for: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + PATIENCE
    while not done.is_set():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT locktype, classid::bigint, objid::bigint, objsubid FROM pg_locks"
                " WHERE pid = %s AND NOT granted",
                [outcome["pid"]],
            )
            waits_for = cursor.fetchall()
        if expected is not None and ("advisory", *expected, 1) in waits_for:
            return Running(thread, outcome, waited=True)
        if time.monotonic() > deadline:
            pytest.fail(f"the work neither ended nor waited for the lock in {PATIENCE:.0f}s; it waits for {waits_for}")
        time.sleep(0.01)
    return Running(thread, outcome, waited=False)


@contextlib.contextmanager
def held_elsewhere(take: Callable[[], None]) -> Iterator[None]:
    """Within this block another transaction holds the locks ``take`` takes, as another
    writer under way does; it commits as the block ends. What goes wrong in it fails the
    test here."""
    taken, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                take()
                taken.set()
                assert release.wait(PATIENCE), f"held for {PATIENCE:.0f}s: the block never ended"
        except BaseException as failure:  # noqa: BLE001 - judged in the test's own thread
            failures.append(failure)
        finally:
            taken.set()
            connection.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(PATIENCE), "the other transaction never took its locks"
    assert not failures, f"the other transaction failed: {failures[0]!r}"
    try:
        yield
    finally:
        release.set()
        holder.join(PATIENCE)
    assert not holder.is_alive(), "the other transaction never ended"
    assert not failures, f"the other transaction failed: {failures[0]!r}"


def board_held_elsewhere(unit: Unit) -> contextlib.AbstractContextManager[None]:
    """Another transaction holds the unit's board, as a crew's or a dispatcher's action on
    the unit under way does."""
    return held_elsewhere(lambda: services._lock_unit_boards([unit.pk]))


def waits_for_a_lock(pid: int, *, timeout: float = PATIENCE) -> bool:
    """Whether backend ``pid`` is seen waiting for a lock (pg_locks) within ``timeout`` seconds:
    polled, so the test goes on as soon as it is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = %s AND NOT granted)", [pid])
            if cursor.fetchone()[0]:
                return True
        time.sleep(0.01)
    return False


def advisory_locks(pid: int, *, granted: bool) -> set[int]:
    """The advisory locks (their bigint keys) backend ``pid`` holds (``granted``) or waits for."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT classid::bigint, objid::bigint FROM pg_locks"
            " WHERE pid = %s AND locktype = 'advisory' AND objsubid = 1 AND granted = %s",
            [pid, granted],
        )
        halves = cursor.fetchall()
    keys = {high << 32 | low for high, low in halves}
    return {key - (1 << 64) if key >= 1 << 63 else key for key in keys}
