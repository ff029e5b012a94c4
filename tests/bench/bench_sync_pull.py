"""Pull: first sync of 50,000 records, and an incremental pull of 500 changes in a big feed.

    python -m tests.bench sync_pull        (under `python config/embedded.py`, or make bench)

1. First sync: a device whose user sees 50,000 encounters pages through
   GET /api/v1/sync/snapshot/ (5,000 per page) from a real uvicorn process. Reported: the
   time, the bytes, and the server's resident memory before and after (flat = the
   snapshot is not held in memory). Then the same device's first WatermelonDB sync of the
   same records (GET /api/v1/sync/watermelon/pull/ while has_more), and the memory after it.
2. Incremental pull: 500 new changes in the device's scope, pulled with one
   GET /api/v1/sync/feed/?limit=500 from the cursor before them, with 10,000 and then with
   1,000,000 rows in the change table (the rest in other scopes), then with 10,000 again
   (the other scopes' rows deleted, the table rewritten): the same pulls on either side of
   the big table, so a drift of the machine or the server process is not taken for the
   cost of the rows. Reported: the median and p99 of 20 pulls each.

Records are seeded with set-based SQL in the shapes the sync layer writes (the push path
is measured by bench_sync_push), the assessments sealed as the push path seals health
information; the reads are the real endpoints, which open them. (The 1,000,000 rows in
other scopes are plain: the device never reads them.)
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx

from tests.bench.support import bench_django, emit, summary_ms

SNAPSHOT_RECORDS = 50_000
SNAPSHOT_PAGE = 5_000
INCREMENTAL = 500
SMALL_FEED = 10_000
BIG_FEED = 1_000_000


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def seed_records(program_id: uuid.UUID, unit_id: uuid.UUID, user_id: uuid.UUID, count: int) -> None:
    """`count` encounters with their sync heads and audience, as the push path leaves them."""
    from django.db import connection

    from apps.accounts.models import Role
    from apps.common.encryption import seal_json
    from apps.sync.scopes import audience_of, program_role_scope, unit_scope

    scopes = [
        unit_scope(unit_id),
        program_role_scope(program_id, Role.CASE_MANAGER),
        program_role_scope(program_id, Role.SUPERVISOR),
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE TEMP TABLE seed AS
            SELECT gen_random_uuid() AS id, n, sealed, sealed_location
            FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(sealed, sealed_location, n)
            """,
            [
                [seal_json(f"Calm, oriented. Visit {n}") for n in range(1, count + 1)],
                [seal_json(f"Street {n}") for n in range(1, count + 1)],
            ],
        )
        cursor.execute(
            """
            INSERT INTO care_encounter (id, program_id, unit_id, created_by_id, created_at, updated_at, is_deleted,
                                        started_at, location, assessment, disposition)
            SELECT id, %s, %s, %s, now(), now(), false, now(), 'Street ' || n, 'Calm, oriented. Visit ' || n, ''
            FROM seed
            """,
            [program_id, unit_id, user_id],
        )
        cursor.execute(
            """
            INSERT INTO sync_syncedrecord (record_id, record_type, program_id, version, data, scopes, audience,
                                           is_deleted, updated_at)
            SELECT id, 'care.encounter', %s, 1,
                   jsonb_build_object('unit_id', %s::text, 'program_id', %s::text, 'author_id', %s::text,
                                      'deleted', false, 'person_id', null, 'started_at', '2026-11-20T14:05:00Z',
                                      'ended_at', null, 'location', sealed_location,
                                      'assessment', sealed, 'disposition', ''),
                   %s::varchar[], %s, false, now()
            FROM seed
            """,
            [program_id, str(unit_id), str(program_id), str(user_id), sorted(scopes), audience_of(scopes)],
        )
        cursor.execute(
            "INSERT INTO sync_audience (key, scopes) VALUES (%s, %s::varchar[]) ON CONFLICT DO NOTHING",
            [audience_of(scopes), sorted(scopes)],
        )
        cursor.execute("DROP TABLE seed")
        cursor.execute("ANALYZE")


def seed_feed(program_id: uuid.UUID, rows: int, scope: str, chunk: int = 100_000, sealed: bool = False) -> None:
    """`rows` feed entries in `scope`, one transaction per chunk (the feed is ordered by them);
    with ``sealed`` the assessments are sealed, as the push path stores them."""
    from django.db import connection, transaction

    from apps.common.encryption import seal_json

    for start in range(0, rows, chunk):
        size = min(chunk, rows - start)
        assessments = [seal_json(f"Visit {n}") if sealed else f"Visit {n}" for n in range(1, size + 1)]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO sync_changeentry (program_id, scope, record_type, record_id, operation, data, version,
                                              reason, origin_device_id, created_at)
                SELECT %s, %s, 'care.encounter', gen_random_uuid(), 'upsert',
                       jsonb_build_object('location', 'Street ' || n, 'assessment', assessment), 1, '', null,
                       now()
                FROM unnest(%s::text[]) WITH ORDINALITY AS t(assessment, n)
                """,
                [program_id, scope, assessments],
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sync_changeentry")


def shrink_feed(other_scope: str, *, keep_rows: int) -> None:
    """Delete the other scope's oldest entries until the table holds ``keep_rows``, and
    rewrite the table and its indexes at that size."""
    from django.db import connection

    from apps.sync.models import ChangeEntry

    surplus = ChangeEntry.objects.count() - keep_rows
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM sync_changeentry WHERE id IN"
            " (SELECT id FROM sync_changeentry WHERE scope = %s ORDER BY id LIMIT %s)",
            [other_scope, surplus],
        )
        cursor.execute("VACUUM FULL ANALYZE sync_changeentry")


def main() -> None:
    with bench_django():
        from apps.accounts.models import DevicePlatform, Membership, Program, Role, User
        from apps.accounts.services import device_register
        from apps.sync.scopes import unit_scope
        from apps.sync.services import user_scopes_refresh
        from apps.teams.models import ResponseModel, Unit, UnitMember
        from tests.live import asgi_server

        program = Program.objects.create(slug="bench", name="Bench")
        unit = Unit.objects.create(program=program, call_sign="B-1", response_model=ResponseModel.EMT_CLINICIAN)
        other_unit = Unit.objects.create(program=program, call_sign="B-2", response_model=ResponseModel.CO_RESPONSE)
        user = User.objects.create(username="clinician")
        Membership.objects.create(user=user, program=program, role=Role.CLINICIAN)
        UnitMember.objects.create(unit=unit, user=user)
        _device, _token, token = device_register(user=user, name="Tablet", platform=DevicePlatform.ANDROID)
        user_scopes_refresh(user=user)
        headers = {"Authorization": f"Bearer {token}", "Tandem-Sync-Protocol": "2"}
        seed_records(program.pk, unit.pk, user.pk, SNAPSHOT_RECORDS)
        logs = Path(__file__).resolve().parents[2] / ".data" / "bench-logs"

        with (
            asgi_server(logs, name="web-pull") as server,
            httpx.Client(base_url=server.http_url, headers=headers, timeout=120) as client,
        ):
            client.get("/healthz")
            client.get("/api/v1/sync/feed/", params={"limit": 1})  # warm: imports, connection
            rss_before = rss_kib(server.live.process.pid)
            started = time.perf_counter()
            cursor, received, size, pages, feed_cursor = "", 0, 0, 0, None
            while True:
                response = client.get("/api/v1/sync/snapshot/", params={"cursor": cursor, "limit": SNAPSHOT_PAGE})
                assert response.status_code == 200, response.text
                size += len(response.content)
                body = json.loads(response.content)
                received += len(body["records"])
                assert all(record["data"]["assessment"].startswith("Calm") for record in body["records"][:1])  # opened
                pages += 1
                if not body["has_more"]:
                    feed_cursor = body["feed_cursor"]
                    break
                cursor = body["cursor"]
            first_sync = time.perf_counter() - started
            rss_after = rss_kib(server.live.process.pid)
            assert received == SNAPSHOT_RECORDS and feed_cursor

            started = time.perf_counter()
            timestamp, watermelon_records, watermelon_parts = "", 0, 0
            while True:
                response = client.get("/api/v1/sync/watermelon/pull/", params={"last_pulled_at": timestamp})
                assert response.status_code == 200, response.text
                body = json.loads(response.content)
                watermelon_records += sum(len(kinds["updated"]) for kinds in body["changes"].values())
                watermelon_parts += 1
                timestamp = body["timestamp"]
                if not body["has_more"]:
                    break
            watermelon_first_sync = time.perf_counter() - started
            rss_after_watermelon = rss_kib(server.live.process.pid)
            assert watermelon_records == SNAPSHOT_RECORDS

            def incremental(feed_rows: int, already: int) -> tuple[dict[str, float], str]:
                seed_feed(program.pk, feed_rows - already - INCREMENTAL, unit_scope(other_unit.pk))
                start = client.get("/api/v1/sync/feed/", params={"limit": 1000}).json()
                cursor = start["cursor"]
                while start["has_more"]:
                    start = client.get("/api/v1/sync/feed/", params={"cursor": cursor, "limit": 1000}).json()
                    cursor = start["cursor"]
                seed_feed(program.pk, INCREMENTAL, unit_scope(unit.pk), sealed=True)
                return pulls(cursor), cursor

            def pulls(cursor: str) -> dict[str, float]:
                timings = []
                for _ in range(20):
                    begun = time.perf_counter()
                    page = client.get("/api/v1/sync/feed/", params={"cursor": cursor, "limit": INCREMENTAL})
                    timings.append(time.perf_counter() - begun)
                    assert page.status_code == 200 and len(page.json()["entries"]) == INCREMENTAL
                    assert page.json()["entries"][0]["data"]["assessment"].startswith("Visit")  # opened
                return summary_ms(timings)

            from apps.sync.models import ChangeEntry

            small, _ = incremental(SMALL_FEED, 0)
            big, big_cursor = incremental(BIG_FEED, SMALL_FEED)
            big_rows = ChangeEntry.objects.count()
            shrink_feed(unit_scope(other_unit.pk), keep_rows=SMALL_FEED)
            small_again = pulls(big_cursor)
            rss_end = rss_kib(server.live.process.pid)

        emit(
            "sync_pull",
            first_sync_records=received,
            first_sync_pages=pages,
            first_sync_seconds=round(first_sync, 2),
            first_sync_target_seconds=5,
            first_sync_megabytes=round(size / 1e6, 1),
            server_rss_mib_before=round(rss_before / 1024, 1),
            server_rss_mib_after=round(rss_after / 1024, 1),
            watermelon_first_sync_seconds=round(watermelon_first_sync, 2),
            watermelon_first_sync_parts=watermelon_parts,
            server_rss_mib_after_watermelon=round(rss_after_watermelon / 1024, 1),
            server_rss_mib_end=round(rss_end / 1024, 1),
            incremental_500_with_10k_rows=small,
            incremental_500_with_1m_rows=big,
            incremental_500_with_10k_rows_again=small_again,
            change_table_rows=big_rows,
            incremental_target_ms=100,
        )


if __name__ == "__main__":
    main()
