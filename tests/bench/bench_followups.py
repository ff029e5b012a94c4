"""Follow-up reminders at scale: 1,000,000 steps, 10,000 due at once.

Figures: the sweep's time to find and to claim the 10,000 due reminders (with the EXPLAIN of
the claim, which must use the partial index, not scan the table), and the throughput of
sending all 10,000 through a real Celery worker (two processes) with the outbox backends.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.bench.support import bench_django, emit

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


def main() -> None:
    outbox = tempfile.mkdtemp(prefix="followups-bench-outbox-")
    os.environ["NOTIFICATIONS_OUTBOX_DIR"] = outbox
    os.environ["FOLLOWUPS_SWEEP_BATCH"] = str(DUE)
    os.environ["FOLLOWUPS_TASK_QUEUE"] = queue = f"followups-bench-{uuid.uuid4().hex[:8]}"
    with bench_django():
        from django.conf import settings
        from django.db import connection, transaction
        from django.utils import timezone

        from apps.followups import services
        from apps.followups.models import Reminder
        from apps.notifications.models import NotificationAttempt
        from tests.live import celery_worker

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
        finds = []
        for _ in range(5):
            with transaction.atomic(), connection.cursor() as cursor:
                started = time.perf_counter()
                cursor.execute(find_sql, args)
                found = len(cursor.fetchall())
                finds.append(time.perf_counter() - started)
                transaction.set_rollback(True)
        started = time.perf_counter()
        with transaction.atomic():
            claimed = services.reminders_claim_due(now=now)
        claim_s = time.perf_counter() - started
        assert len(claimed) == found == DUE, (len(claimed), found)
        # Put them back unclaimed: the timed send below starts from the sweep itself.
        Reminder.objects.filter(pk__in=claimed).update(claimed_at=None)

        log_dir = Path(tempfile.mkdtemp(prefix="followups-bench-logs-"))
        env = {"CELERY_WORKER_QUEUES": f"celery,{queue}", "NOTIFICATIONS_OUTBOX_DIR": outbox}
        with celery_worker(log_dir, name="followups-bench", concurrency=2, **env):
            started = time.perf_counter()
            dispatched = services.reminders_dispatch_due(now=timezone.now())
            assert dispatched == DUE, dispatched
            dispatch_s = time.perf_counter() - started
            # Through the sweep's partial index: cheap enough to poll without slowing the worker.
            pending = Reminder.objects.filter(sent_at=None, cancelled_at=None, due_at__lte=now)
            deadline = time.monotonic() + 600
            while pending.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            send_s = time.perf_counter() - started
            sent = Reminder.objects.filter(pk__in=claimed, sent_at__isnull=False).count()
            emails = NotificationAttempt.objects.filter(channel="email")
            while emails.filter(status__in=["queued", "sending"]).exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            emails_s = time.perf_counter() - started
            emails_sent = emails.filter(status="sent").count()
        emit(
            "followups",
            **filled,
            due=DUE,
            sweep_find_ms={"best": round(min(finds) * 1000, 1), "worst": round(max(finds) * 1000, 1)},
            sweep_claim_ms=round(claim_s * 1000, 1),
            claim_uses_index="reminder_to_send" in explain,
            dispatch_s=round(dispatch_s, 2),
            reminders_sent=sent,
            reminders_per_s=round(sent / send_s, 1),
            reminder_emails_sent=emails_sent,
            emails_per_s=round(emails_sent / emails_s, 1),
            worker_processes=2,
        )


if __name__ == "__main__":
    main()
