"""Follow-up reminders at scale: 1,000,000 steps, 10,000 due at once.

Figures: the sweep's time to find and to claim the 10,000 due reminders (with the EXPLAIN of
the claim, which must use the partial index, not scan the table), and the throughput of
sending all 10,000 through the real path: a beat process fires the sweep, a Celery worker (two
processes) claims and sends with the outbox backend (BENCH_NOTIFICATIONS_BACKEND=console for
log lines instead). Rates are timed by the database's own clock: from the first claim to the
last "sent" mark; the CPU of the worker, PostgreSQL and Redis is counted too, so a figure taken
beside other work can be judged by its CPU per reminder.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from tests.bench.support import bench_django, children, cpu_seconds, emit, postgres_pids

STEPS = 1_000_000
DUE = 10_000
PLANS = STEPS // 4
OWNERS = 2_000  # the email rate limit is per recipient: spread the reminders like a real program


def _fill(now: object) -> dict[str, object]:
    from django.db import connection

    from apps.accounts.models import Membership, Role, User
    from tests.accounts.factories import ProgramFactory
    from tests.teams.factories import UnitFactory

    program = ProgramFactory.create(slug="bench", name="Bench")
    unit = UnitFactory.create(program=program)
    owners = User.objects.bulk_create(
        [User(username=f"cm{i}", email=f"cm{i}@example.org") for i in range(OWNERS)], batch_size=1000
    )
    Membership.objects.bulk_create([Membership(user=u, program=program, role=Role.CASE_MANAGER) for u in owners])
    params: dict[str, Any] = {
        "program": program.pk,
        "unit": unit.pk,
        "author": owners[0].pk,
        "owners": [o.pk for o in owners],
        "now": now,
        "plans": PLANS,
        "due": DUE,
    }
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO care_encounter (id, program_id, unit_id, created_by_id, created_at, updated_at, is_deleted,
                                        started_at, ended_at, location, assessment, disposition)
            SELECT md5('e' || g)::uuid, %(program)s, %(unit)s, %(author)s, %(now)s, %(now)s, false,
                   %(now)s, %(now)s, '', '', 'referred'
            FROM generate_series(1, %(plans)s) g
            """,
            params,
        )
        cursor.execute(
            """
            INSERT INTO followups_followupplan (id, created_at, updated_at, program_id, unit_id, encounter_id,
                                                trigger, anchor_at)
            SELECT md5('p' || g)::uuid, %(now)s, %(now)s, %(program)s, %(unit)s, md5('e' || g)::uuid,
                   'referral', %(now)s
            FROM generate_series(1, %(plans)s) g
            """,
            params,
        )
        # Row r: the first DUE are pending and due within the last minute; the next 59 % are
        # long closed; the rest are pending and due later.
        cursor.execute(
            """
            INSERT INTO followups_followupstep (id, created_at, updated_at, program_id, unit_id, plan_id, key, label,
                due_at, owner_id, status, overdue_margin_minutes, completed_by_outcomes, closed_at, missed_reason)
            SELECT md5('s' || r)::uuid, %(now)s, %(now)s, %(program)s, %(unit)s, md5('p' || g)::uuid, 'k' || k,
                   'Step ' || k,
                   CASE WHEN r <= %(due)s THEN %(now)s - make_interval(secs => r %% 60)
                        WHEN r <= 600000 THEN %(now)s - make_interval(mins => r)
                        ELSE %(now)s + make_interval(secs => r) END,
                   (%(owners)s::uuid[])[1 + r %% cardinality(%(owners)s::uuid[])],
                   CASE WHEN r > %(due)s AND r <= 600000 THEN 'completed' ELSE 'pending' END,
                   240, '{declined}',
                   CASE WHEN r > %(due)s AND r <= 600000 THEN %(now)s END, ''
            FROM generate_series(1, %(plans)s) g, generate_series(0, 3) k, LATERAL (SELECT (k * %(plans)s + g) AS r) n
            """,
            params,
        )
        cursor.execute(
            """
            INSERT INTO followups_reminder (program_id, kind, step_id, due_at, sent_at, cancelled_at, cancel_reason)
            SELECT program_id, 'owner_due', id, due_at,
                   CASE WHEN status = 'completed' THEN due_at END, NULL, ''
            FROM followups_followupstep
            UNION ALL
            SELECT program_id, 'supervisor_overdue', id, due_at + interval '240 minutes', NULL,
                   CASE WHEN status = 'completed' THEN closed_at END,
                   CASE WHEN status = 'completed' THEN 'step completed' ELSE '' END
            FROM followups_followupstep
            """
        )
        cursor.execute("ANALYZE")
        cursor.execute("SELECT count(*) FROM followups_followupstep")
        (steps,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM followups_reminder")
        (reminders,) = cursor.fetchone()
    return {"steps": steps, "reminders": reminders, "fill_s": round(time.perf_counter() - started, 1)}


def _server_pids(worker_pid: int) -> dict[str, list[int]]:
    """The processes that do the sending: the worker and its pool, PostgreSQL, Redis."""
    from django.conf import settings

    redis_address = settings.REDIS_URL.split("//", 1)[1].split("/", 1)[0]
    redis = [
        int(cmdline.parent.name)
        for cmdline in Path("/proc").glob("[0-9]*/cmdline")
        if redis_address.encode() in _read(cmdline) and b"redis-server" in _read(cmdline)
    ]
    return {
        "worker": [worker_pid, *children(worker_pid)],
        "postgres": postgres_pids(),
        "redis": redis,
    }


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def main() -> None:
    outbox = tempfile.mkdtemp(prefix="followups-bench-outbox-")
    backend = os.environ.get("BENCH_NOTIFICATIONS_BACKEND", "outbox")  # or "console"
    os.environ["NOTIFICATIONS_OUTBOX_DIR"] = outbox
    os.environ["NOTIFICATIONS_EMAIL_BACKEND"] = backend
    os.environ["FOLLOWUPS_SWEEP_BATCH"] = str(DUE)
    os.environ["FOLLOWUPS_TASK_QUEUE"] = queue = f"followups-bench-{uuid.uuid4().hex[:8]}"
    with bench_django():
        from django.conf import settings
        from django.db import connection, transaction
        from django.db.models import Max, Min
        from django.test import override_settings
        from django.utils import timezone

        from apps.followups import services
        from apps.followups.models import Reminder
        from apps.notifications.models import NotificationAttempt
        from tests.live import celery_beat, celery_worker

        now = timezone.now()
        filled = _fill(now)
        print(f"filled: {filled}", flush=True)
        stale = now - __import__("datetime").timedelta(seconds=settings.FOLLOWUPS_REDISPATCH_AFTER_SECONDS)
        args = {"now": now, "stale": stale, "limit": DUE}
        # The claim as the sweep runs it, measured by the server and rolled back.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + services.CLAIM_SQL, args)
            explain = "\n".join(row[0] for row in cursor.fetchall())
            transaction.set_rollback(True)
        print(explain, flush=True)
        find_sql = services.CLAIM_SQL.split("WHERE id = ANY(ARRAY(", 1)[1].rsplit("))", 1)[0]
        finds, claims, sweeps = [], [], []
        for _ in range(5):
            with transaction.atomic(), connection.cursor() as cursor:
                started = time.perf_counter()
                cursor.execute(find_sql, args)
                found = len(cursor.fetchall())
                finds.append(time.perf_counter() - started)
                transaction.set_rollback(True)
        for _ in range(3):
            # One UPDATE of all 10,000 (rolled back) ...
            with transaction.atomic():
                started = time.perf_counter()
                claimed = services.reminders_claim_due(now=now)
                claims.append(time.perf_counter() - started)
                transaction.set_rollback(True)
            # ... and the sweep as it runs: batches of FOLLOWUPS_CLAIM_BATCH, each committed and its
            # sends queued (to a queue no worker reads, emptied after), then put back unclaimed.
            with override_settings(FOLLOWUPS_TASK_QUEUE=f"{queue}-discarded"):
                started = time.perf_counter()
                swept = services.reminders_dispatch_due(now=now)
                sweeps.append(time.perf_counter() - started)
            redis.Redis.from_url(settings.REDIS_URL).delete(f"{queue}-discarded")
            Reminder.objects.filter(pk__in=claimed).update(claimed_at=None)
            assert len(claimed) == found == swept == DUE, (len(claimed), found, swept)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")  # this backend's counts, now
            time.sleep(1.5)
            cursor.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'followups_reminder'"
            )
            updated, hot = cursor.fetchone()

        log_dir = Path(tempfile.mkdtemp(prefix="followups-bench-logs-"))
        env = {
            "CELERY_WORKER_QUEUES": f"celery,{queue}",
            "NOTIFICATIONS_OUTBOX_DIR": outbox,
            "NOTIFICATIONS_EMAIL_BACKEND": backend,
            "FOLLOWUPS_SWEEP_SECONDS": "1",
        }
        with celery_worker(log_dir, name="followups-bench", concurrency=2, **env) as worker:
            pids = _server_pids(worker.process.pid)
            cpu_before = {name: cpu_seconds(group) for name, group in pids.items()}
            # The real path: beat sends the sweep, the worker claims and queues, the worker sends.
            with celery_beat(log_dir, name="followups-bench-beat", schedule_file=log_dir / "beat", **env):
                reminders = Reminder.objects.filter(due_at__lte=now, sent_at=None, cancelled_at=None)
                deadline = time.monotonic() + 900
                while reminders.exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
                emails = NotificationAttempt.objects.filter(channel="email")
                while emails.filter(status__in=["queued", "sending"]).exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
            cpu = {name: round(cpu_seconds(group) - cpu_before[name], 2) for name, group in pids.items()}
        done = Reminder.objects.filter(due_at__lte=now, claimed_at__isnull=False)
        first_claim = done.aggregate(first=Min("claimed_at"))["first"]
        last_sent = done.aggregate(last=Max("sent_at"))["last"]
        sent = done.filter(sent_at__isnull=False).count()
        emails_sent = emails.filter(status="sent").count()
        last_email = emails.aggregate(last=Max("sent_at"))["last"]
        reminders_s = (last_sent - first_claim).total_seconds()
        emails_s = (last_email - first_claim).total_seconds()
        cpu_total = sum(cpu.values())
        emit(
            "followups",
            **filled,
            due=DUE,
            backend=backend,
            sweep_find_ms={"best": round(min(finds) * 1000, 1), "worst": round(max(finds) * 1000, 1)},
            claim_one_update_ms={"best": round(min(claims) * 1000, 1), "worst": round(max(claims) * 1000, 1)},
            sweep_find_and_claim_ms={"best": round(min(sweeps) * 1000, 1), "worst": round(max(sweeps) * 1000, 1)},
            sweep_target_ms=100,
            claim_uses_index="reminder_to_send" in explain,
            reminder_updates_hot=f"{hot}/{updated}",
            reminders_sent=sent,
            reminders_per_s=round(sent / reminders_s, 1),
            reminder_emails_sent=emails_sent,
            emails_per_s=round(emails_sent / emails_s, 1),
            end_to_end_s=round(emails_s, 2),
            send_target_per_s=500,
            cpu_s=cpu,
            cpu_ms_per_reminder=round(cpu_total * 1000 / max(sent, 1), 2),
            worker_processes=2,
        )


if __name__ == "__main__":
    main()
