"""Push throughput: 20 devices, 10,000 mutations in batches of 200, over HTTP into PostgreSQL.

    python -m tests.bench sync_push        (under `python config/embedded.py`, or make bench)

Real uvicorn processes (SYNC_BENCH_WEB_PROCESSES, default 3: one per core and one more, as
the README advises for deployment; devices split between them) serve the push endpoint;
each device sends its batches in order from its own thread. Each device's 500 mutations:
200 encounter creates, 200 clinical-note creates, 100 encounter updates. Beside it, the raw
floor: the same number of rows upserted straight through psycopg (executemany, one
transaction per 200 rows), and the ratio.

The machine's speed varies by half from one minute to the next (the floor with it), so the
push is measured in ROUNDS rounds (SYNC_BENCH_ROUNDS, default 3), each by 20 fresh devices
and followed at once by its own floor: every round is printed, and the headline figures are
the rounds' medians.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tests.bench.support import bench_django, cpu_seconds, emit, postgres_pids

DEVICES = 20
PER_DEVICE = 500
BATCH = 200
WEB_PROCESSES = int(os.environ.get("SYNC_BENCH_WEB_PROCESSES", "3"))
ROUNDS = int(os.environ.get("SYNC_BENCH_ROUNDS", "3"))


def device_mutations(unit_id: str) -> list[dict[str, Any]]:
    mutations: list[dict[str, Any]] = []
    encounters = [uuid.uuid4() for _ in range(200)]
    next_id = iter(range(1, 10_000))
    for record_id in encounters:
        mutations.append(
            {
                "mutation_id": next(next_id),
                "type": "care.encounter",
                "id": str(record_id),
                "op": "create",
                "fields": {
                    "unit_id": unit_id,
                    "started_at": "2026-11-20T14:05:00+00:00",
                    "location": "125th St & Lexington Ave",
                    "assessment": "Calm, oriented; reports three nights without sleep.",
                },
                "observed_at": "2026-11-20T14:06:00+00:00",
            }
        )
    for n, record_id in enumerate(encounters):
        mutations.append(
            {
                "mutation_id": next(next_id),
                "type": "care.note",
                "id": str(uuid.uuid4()),
                "op": "create",
                "fields": {"encounter_id": str(record_id), "body": f"Note {n}: safety plan reviewed with the person."},
                "observed_at": "2026-11-20T14:20:00+00:00",
            }
        )
    for record_id in encounters[:100]:
        mutations.append(
            {
                "mutation_id": next(next_id),
                "type": "care.encounter",
                "id": str(record_id),
                "op": "update",
                "base_version": 1,
                "fields": {"disposition": "referred"},
                "observed_at": "2026-11-20T14:30:00+00:00",
            }
        )
    return mutations


def warm_up_mutations(unit_id: str) -> list[dict[str, Any]]:
    """A warm-up device's one batch: the same kinds of mutation as a measured device's."""
    plan = device_mutations(unit_id)
    return plan[:10] + plan[200:210] + plan[400:405]


def raw_floor(rows: int) -> float:
    """Seconds to upsert the same number of rows straight through psycopg."""
    import psycopg
    from django.db import connection

    connection.ensure_connection()
    params = connection.get_connection_params()
    program_id, unit_id, user_id = _one_unit()
    started = time.perf_counter()
    connect_params = {k: v for k, v in params.items() if k != "cursor_factory"}
    with psycopg.connect(**connect_params) as raw, raw.cursor() as cursor:
        for start in range(0, rows, BATCH):
            values = [
                (uuid.uuid4(), program_id, unit_id, user_id, "125th St & Lexington Ave", "Calm, oriented.")
                for _ in range(min(BATCH, rows - start))
            ]
            cursor.executemany(
                "INSERT INTO care_encounter (id, program_id, unit_id, created_by_id, created_at, updated_at,"
                " is_deleted, started_at, location, assessment, disposition)"
                " VALUES (%s, %s, %s, %s, now(), now(), false, now(), %s, %s, '')"
                " ON CONFLICT (id) DO UPDATE SET location = EXCLUDED.location, updated_at = now()",
                values,
            )
            raw.commit()
    return time.perf_counter() - started


def _one_unit() -> tuple[Any, Any, Any]:
    from apps.teams.models import UnitMember

    member = UnitMember.objects.select_related("unit").first()
    assert member is not None
    return member.unit.program_id, member.unit_id, member.user_id


def cpu_used(web_pids: list[int]) -> dict[str, float]:
    """CPU seconds so far of the web processes, PostgreSQL, and this client."""
    return {"web": cpu_seconds(web_pids), "database": cpu_seconds(postgres_pids()), "client": time.process_time()}


def main() -> None:
    with bench_django():
        from apps.accounts.models import DevicePlatform, Membership, Program, Role, User
        from apps.accounts.services import device_register
        from apps.sync.models import Mutation, MutationStatus
        from apps.teams.models import ResponseModel, Unit, UnitMember
        from tests.bench.support import summary_ms
        from tests.live import asgi_server

        program = Program.objects.create(slug="bench", name="Bench")
        unit = Unit.objects.create(program=program, call_sign="B-1", response_model=ResponseModel.EMT_CLINICIAN)
        tokens, devices = [], []
        # DEVICES devices warm the servers up, then DEVICES fresh ones are measured per round.
        for n in range((ROUNDS + 1) * DEVICES):
            user = User.objects.create(username=f"clinician{n}")
            Membership.objects.create(user=user, program=program, role=Role.CLINICIAN)
            UnitMember.objects.create(unit=unit, user=user)
            registered, _token, raw = device_register(user=user, name=f"Tablet {n}", platform=DevicePlatform.ANDROID)
            tokens.append(raw)
            devices.append(registered.pk)
        # Bodies encoded before the clock starts: the client shares the machine's two cores
        # with the servers and the database, and what is measured is the server.
        bodies = [[json.dumps({"mutations": warm_up_mutations(str(unit.pk))}).encode()] for _ in range(DEVICES)]
        for _ in range(ROUNDS * DEVICES):
            plan = device_mutations(str(unit.pk))
            batches = [plan[start : start + BATCH] for start in range(0, PER_DEVICE, BATCH)]
            bodies.append([json.dumps({"mutations": batch}).encode() for batch in batches])
        logs = Path(__file__).resolve().parents[2] / ".data" / "bench-logs"

        import contextlib

        with contextlib.ExitStack() as stack:
            servers = [stack.enter_context(asgi_server(logs, name=f"web-push-{n}")) for n in range(WEB_PROCESSES)]
            failures: list[str] = []
            latencies: list[float] = []
            lock = threading.Lock()

            def device(n: int) -> None:
                server = servers[n % len(servers)]
                headers = {
                    "Authorization": f"Bearer {tokens[n]}",
                    "Tandem-Sync-Protocol": "2",
                    "Content-Type": "application/json",
                }
                # The standard library's client: the devices share the two cores with the
                # servers, and a heavier client's parsing of each answer is taken from them.
                client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                try:
                    for body in bodies[n]:
                        begun = time.perf_counter()
                        client.request("POST", "/api/v1/sync/push/", body=body, headers=headers)
                        response = client.getresponse()
                        answer = response.read()
                        with lock:
                            latencies.append(time.perf_counter() - begun)
                        if response.status != 200:
                            failures.append(f"{response.status} {answer[:200]!r}")
                finally:
                    client.close()

            def run_devices(numbers: range) -> float:
                threads = [threading.Thread(target=device, args=(n,)) for n in numbers]
                started = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                return time.perf_counter() - started

            # A server is measured as it runs, not as it starts: each process's first pushes
            # import modules, compile validators and open its database and Redis
            # connections, once in its life.
            run_devices(range(DEVICES))
            warm_up_failures = list(failures)
            failures.clear()
            latencies.clear()
            web = [server.live.process.pid for server in servers]
            total = DEVICES * PER_DEVICE
            rounds: list[dict[str, Any]] = []
            cpu_before = cpu_used(web)
            for number in range(1, ROUNDS + 1):
                elapsed = run_devices(range(number * DEVICES, (number + 1) * DEVICES))
                cpu_after_push = cpu_used(web)
                # Right after the push, so that both see the machine at the same speed.
                floor_seconds = raw_floor(total)
                rate, floor_rate = total / elapsed, total / floor_seconds
                rounds.append(
                    {
                        "seconds": round(elapsed, 2),
                        "mutations_per_second": round(rate),
                        "raw_floor_rows_per_second": round(floor_rate),
                        "ratio_of_raw_floor": round(rate / floor_rate, 3),
                        # Where the two cores went, per mutation: web processes, PostgreSQL, this client.
                        "cpu_ms_per_mutation": {
                            name: round((cpu_after_push[name] - cpu_before[name]) * 1000 / total, 3)
                            for name in cpu_before
                        },
                    }
                )
                cpu_before = cpu_used(web)

        measured_devices = devices[DEVICES:]
        applied = Mutation.objects.filter(status=MutationStatus.APPLIED, device_id__in=measured_devices).count()

        def median_of(figure: str) -> Any:
            return statistics.median(round_[figure] for round_ in rounds)

        emit(
            "sync_push",
            devices=DEVICES,
            mutations=total,
            batch=BATCH,
            web_processes=WEB_PROCESSES,
            rounds=ROUNDS,
            applied=applied,
            failures=len(failures),
            first_failure=failures[0] if failures else None,
            warm_up_failures=len(warm_up_failures),
            mutations_per_second=median_of("mutations_per_second"),
            target_mutations_per_second=5000,
            raw_floor_rows_per_second=median_of("raw_floor_rows_per_second"),
            ratio_of_raw_floor=median_of("ratio_of_raw_floor"),
            batch_latency=summary_ms(latencies),
            each_round=rounds,
        )


if __name__ == "__main__":
    main()
