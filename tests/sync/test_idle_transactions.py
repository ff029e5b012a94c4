"""A transaction left open by a hung request does not keep a device from syncing for ever.

A push holds its device's advisory lock (``lock_device``) until its transaction ends. A
request or task thread that hangs inside such a transaction leaves its connection idle in
transaction, lock held: every later push of that device would wait for it. PostgreSQL ends
such a session after ``DATABASE_IDLE_IN_TRANSACTION_TIMEOUT`` seconds, and the lock with it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import CrewMember
from tests.live import PROJECT_ROOT, child_environment, database_url
from tests.sync.helpers import SimDevice, encounter_fields

pytestmark = pytest.mark.django_db(transaction=True)

# The hung holder's timeout: short, so the test is quick, yet long enough for the push to reach
# the lock while the holder still holds it on a machine busy with the rest of the suite.
HOLDER_TIMEOUT_SECONDS = 5
# How long the test lets the push wait before it takes the push for stuck.
STUCK_AFTER_SECONDS = 20

# A process of the application with the test's settings that takes a device's lock the way a
# push does, says so, and then hangs inside the transaction.
HUNG_HOLDER = """
import sys, uuid
import django
django.setup()
from django.db import connection, transaction
from apps.sync.services import lock_device
with transaction.atomic():
    lock_device(uuid.UUID(sys.argv[1]))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        print(cursor.fetchone()[0], flush=True)
    sys.stdin.readline()
"""


class Watchdog(threading.Thread):
    """Watches, from a connection of its own, for backends waiting on an advisory lock.

    Notes whether one ever waited; past the deadline it cancels those still waiting, so a
    push stuck behind the lock fails instead of hanging the test.
    """

    def __init__(self, deadline: float) -> None:
        super().__init__(daemon=True)
        self.deadline = deadline
        self.seen_waiting = False
        self.cancelled = False
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(database_url(), autocommit=True) as watcher:
            while not self.done.wait(0.05):
                waiting = [
                    pid
                    for (pid,) in watcher.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
                    ).fetchall()
                ]
                self.seen_waiting = self.seen_waiting or bool(waiting)
                if waiting and time.monotonic() > self.deadline:
                    for pid in waiting:
                        watcher.execute("SELECT pg_cancel_backend(%s)", [pid])
                    self.cancelled = True


def _backend_alive(pid: int) -> bool:
    with psycopg.connect(database_url(), autocommit=True) as watcher:
        row = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        return bool(row and row[0])


def test_the_application_connections_end_a_transaction_left_idle() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT setting FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'")
        [milliseconds] = cursor.fetchone()

    assert settings.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT > 0
    assert int(milliseconds) == settings.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT * 1000


def test_a_push_waiting_behind_a_hung_transaction_goes_through_once_the_server_ends_it(
    crew_member: CrewMember,
) -> None:
    device = SimDevice(crew_member)
    holder = subprocess.Popen(
        [sys.executable, "-c", HUNG_HOLDER, str(crew_member.device.pk)],
        cwd=PROJECT_ROOT,
        env=child_environment(DATABASE_IDLE_IN_TRANSACTION_TIMEOUT=str(HOLDER_TIMEOUT_SECONDS)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    watchdog = Watchdog(deadline=time.monotonic() + 60)
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.strip().isdigit(), "the holder never took the device's lock"
        holder_pid = int(line)
        watchdog.deadline = time.monotonic() + STUCK_AFTER_SECONDS
        watchdog.start()

        mutation = device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member))
        started = time.monotonic()
        try:
            [result] = device.push(mutation)
        except Exception:
            assert not watchdog.cancelled, (
                f"the push still waited for the device's lock after {STUCK_AFTER_SECONDS} s: "
                "the hung transaction was never ended"
            )
            raise
        waited = time.monotonic() - started
    finally:
        watchdog.done.set()
        if watchdog.is_alive():
            watchdog.join(5)
        holder.kill()
        holder.wait(10)

    assert result["status"] == "applied", result
    # The push did wait for the hung holder, and only about as long as its timeout.
    assert watchdog.seen_waiting
    assert not watchdog.cancelled
    assert waited < STUCK_AFTER_SECONDS
    assert not _backend_alive(holder_pid)


def test_a_negative_timeout_is_refused_at_start() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_ROOT,
        env=child_environment(DATABASE_IDLE_IN_TRANSACTION_TIMEOUT="-1"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT must be 0 (off) or a number of seconds" in result.stderr
