"""Live delivery of assignments to 2,000 connected devices on one web process.

    python -m tests.bench dispatch        (make bench BENCH=dispatch)

500 units of 4 crew devices connect to ONE uvicorn process, authenticate and subscribe to
their feed. A writer process takes in incidents at 20 per second and offers each to a unit
(through the dispatch services, as the REST API does); for every offer it reports the
moment its transaction committed. Each device stamps when the offer arrives. Printed:

- delivery: commit → receipt on each of the unit's devices, p50 / p99 (target p99 < 50 ms);
- memory per idle connection: the web process's RSS before and after connecting, divided
  (target < 50 KB);
- replay: a device that missed 1,000 entries reconnects and resumes from its cursor;
- floor: a bare Redis publish → subscribe round trip in the same run.

Times are CLOCK_MONOTONIC (time.monotonic), one clock for every process on the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

DEVICES_PER_UNIT = 4
UNITS = int(os.environ.get("BENCH_UNITS", "500"))
RATE_PER_SECOND = float(os.environ.get("BENCH_RATE", "20"))
# 25 s at 20/s is 500 offers: one per unit, so no unit has to be recalled to take another.
DURATION_SECONDS = float(os.environ.get("BENCH_SECONDS", "25"))
WARM_UP_CONNECTIONS = 50
REPLAY_ENTRIES = 1000
CONNECT_CONCURRENCY = 100
LOG_DIR = Path(__file__).resolve().parent.parent.parent / ".data" / "bench-logs"


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, min(hard, 65536))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def tail_ms(values_seconds: list[float]) -> dict[str, float]:
    from tests.bench.support import percentile

    ms = [value * 1000 for value in values_seconds]
    return {
        "p90_ms": round(percentile(ms, 0.90), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "max_ms": round(max(ms, default=float("nan")), 2),
    }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# --------------------------------------------------------------------------------------------
# Set-up (sync Django, before the event loop starts)


def create_world(units_count: int = UNITS) -> dict[str, Any]:
    """One program, a dispatcher, units of 4 crew devices each; returns raw tokens."""
    from django.db import transaction

    from apps.accounts.models import Device, DevicePlatform, DeviceToken, Membership, Program, Role, User, hash_token
    from apps.accounts.services import device_register
    from apps.teams.models import ResponseModel, Unit, UnitMember, UnitStatus

    with transaction.atomic():
        program = Program.objects.create(slug="bench", name="Bench program")
        dispatcher = User.objects.create(username="bench-dispatcher")
        Membership.objects.create(user=dispatcher, program=program, role=Role.DISPATCHER)
        device_register(user=dispatcher, name="Console", platform=DevicePlatform.WEB)
        units = Unit.objects.bulk_create(
            Unit(
                program=program,
                call_sign=f"U{index:04d}",
                response_model=ResponseModel.EMT_CLINICIAN,
                status=UnitStatus.AVAILABLE,
            )
            for index in range(units_count)
        )
        users = User.objects.bulk_create(
            User(username=f"crew-{index:05d}", password="!")  # an unusable password
            for index in range(units_count * DEVICES_PER_UNIT)
        )
        Membership.objects.bulk_create(Membership(user=user, program=program, role=Role.CLINICIAN) for user in users)
        UnitMember.objects.bulk_create(
            UnitMember(unit=units[index // DEVICES_PER_UNIT], user=user, is_on_shift=True)
            for index, user in enumerate(users)
        )
        devices = Device.objects.bulk_create(
            Device(user=user, name="Tablet", platform=DevicePlatform.ANDROID) for user in users
        )
        raw_tokens = [f"tdm_bench_{uuid.uuid4().hex}{uuid.uuid4().hex}" for _ in devices]
        from datetime import timedelta

        from django.utils import timezone

        expires = timezone.now() + timedelta(days=1)
        DeviceToken.objects.bulk_create(
            DeviceToken(device=device, key_hash=hash_token(raw), key_prefix=raw[:10], expires_at=expires)
            for device, raw in zip(devices, raw_tokens, strict=True)
        )
    return {
        "program_id": str(program.pk),
        "unit_ids": [str(unit.pk) for unit in units],
        "tokens": raw_tokens,
    }


# --------------------------------------------------------------------------------------------
# The writer: a separate process, as the REST API's process would be


def stamp(stamps: list[float]) -> None:
    stamps.append(time.monotonic())


def writer_main(seconds: float, rate: float, prefix: str = "BENCH") -> None:
    """Take in incidents and offer each to the next unit, printing `assignment unit_index commit_time`."""
    import django

    django.setup()
    from django.db import transaction
    from django.utils import timezone

    from apps.accounts.models import Program, User
    from apps.dispatch import services
    from apps.teams.models import Unit

    program = Program.objects.get(slug="bench")
    dispatcher = User.objects.get(username="bench-dispatcher")
    units = list(Unit.objects.filter(program=program).order_by("call_sign"))
    active: dict[int, uuid.UUID] = {}
    count = int(seconds * rate)
    started = time.monotonic()
    for index in range(count):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        unit_index = index % len(units)
        if unit_index in active:  # the unit's previous call is done: dispatch recalls it
            services.assignment_cancel(assignment_id=active[unit_index], actor=dispatcher, device=None, reason="bench")
        incident, _created = services.incident_intake(
            program=program,
            actor=dispatcher,
            device=None,
            external_call_id=f"{prefix}-{index:06d}",
            source="911",
            priority="high",
            received_at=timezone.now(),
            address=f"{index} Bench St",
            nature="Person in distress outside a store; caller says no weapon seen.",
            mental_health_nexus=True,
            weapon=False,
            violence_in_progress=False,
            imminent_self_harm=False,
            medical_emergency=False,
        )
        committed: list[float] = []  # one per offer; the callback below runs before the next
        with transaction.atomic():
            # Registered first, so it runs first after COMMIT: before the nudges go out.
            transaction.on_commit(partial(stamp, committed))
            assignment = services.assignment_offer(incident=incident, unit=units[unit_index], actor=dispatcher)
        active[unit_index] = assignment.pk
        print(f"{assignment.pk} {unit_index} {committed[0]:.6f}", flush=True)
    print(f"done {time.monotonic() - started:.3f}", flush=True)


# --------------------------------------------------------------------------------------------
# The devices


class Device:
    def __init__(self, index: int, token: str) -> None:
        self.index = index
        self.unit_index = index // DEVICES_PER_UNIT
        self.token = token
        self.socket: Any = None
        self.cursor: str | None = None
        self.reader: asyncio.Task[None] | None = None


async def connect(ws_url: str, device: Device, cursor: str | None = None) -> dict[str, Any]:
    import websockets

    device.socket = await websockets.connect(
        f"{ws_url}/ws/v1/device/", open_timeout=60, ping_interval=None, max_size=2**24, compression=None
    )
    await device.socket.send(json.dumps({"type": "auth", "token": device.token}))
    reply = json.loads(await device.socket.recv())
    assert reply["type"] == "auth.ok", reply
    await device.socket.send(json.dumps({"type": "feed.subscribe", "cursor": cursor}))
    first: dict[str, Any] = json.loads(await device.socket.recv())
    assert first["type"] == "feed.entries", first
    device.cursor = first["cursor"]
    return first


async def read_forever(device: Device, receipts: dict[str, dict[int, float]]) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        async for raw in device.socket:
            now = time.monotonic()
            frame = json.loads(raw)
            if frame.get("type") != "feed.entries":
                continue
            device.cursor = frame["cursor"]
            for entry in frame["entries"]:
                if entry["type"] == "dispatch.assignment" and entry["data"].get("status") == "offered":
                    receipts.setdefault(entry["id"], {}).setdefault(device.index, now)
    except ConnectionClosed:
        return


async def connect_all(ws_url: str, devices: list[Device], receipts: dict[str, dict[int, float]]) -> float:
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
    started = time.monotonic()

    async def one(device: Device) -> None:
        async with limit:
            await connect(ws_url, device)
        device.reader = asyncio.create_task(read_forever(device, receipts))

    await asyncio.gather(*(one(device) for device in devices))
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------
# Measurements


async def measure_delivery(
    devices: list[Device],
    receipts: dict[str, dict[int, float]],
    seconds: float = DURATION_SECONDS,
    rate: float = RATE_PER_SECOND,
    prefix: str = "BENCH",
) -> tuple[list[float], int, int, float]:
    from tests.live import child_environment

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.bench_dispatch",
        "writer",
        str(seconds),
        str(rate),
        prefix,
        env=child_environment(),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    offers: list[tuple[str, int, float]] = []
    writer_seconds = float("nan")
    while line := (await process.stdout.readline()).decode().strip():
        fields = line.split()
        if fields[0] == "done":
            writer_seconds = float(fields[1])
            break
        offers.append((fields[0], int(fields[1]), float(fields[2])))
    assert await process.wait() == 0
    await asyncio.sleep(2)  # grace for the last deliveries
    latencies: list[float] = []
    missing = 0
    for assignment_id, unit_index, committed in offers:
        got = receipts.get(assignment_id, {})
        for device_index in range(unit_index * DEVICES_PER_UNIT, (unit_index + 1) * DEVICES_PER_UNIT):
            if device_index in got:
                latencies.append(got[device_index] - committed)
            else:
                missing += 1
    return latencies, missing, len(offers), writer_seconds


async def measure_replay(ws_url: str, device: Device, program_id: str, unit_id: str) -> dict[str, float]:
    """Disconnect one device, add 1,000 entries to its unit's feed, reconnect from its cursor."""
    if device.reader is not None:
        device.reader.cancel()
    await device.socket.close()
    cursor = device.cursor

    def write_missed() -> None:
        from django.db import connection, transaction

        from apps.sync.scopes import unit_scope
        from apps.sync.services import record_change

        note = {"text": "x" * 400}
        try:
            for batch in range(REPLAY_ENTRIES // 100):
                with transaction.atomic():
                    for index in range(100):
                        record_change(
                            program_id=uuid.UUID(program_id),
                            record_type="bench.missed",
                            record_id=uuid.uuid4(),
                            scopes=[unit_scope(unit_id)],
                            data={"n": batch * 100 + index, **note},
                        )
        finally:
            connection.close()

    await asyncio.to_thread(write_missed)
    started = time.monotonic()
    first = await connect(ws_url, device, cursor)
    subscribed = time.monotonic()
    seen = [entry["data"]["n"] for entry in first["entries"] if entry["type"] == "bench.missed"]
    while len(seen) < REPLAY_ENTRIES:
        frame = json.loads(await asyncio.wait_for(device.socket.recv(), 30))
        seen += [entry["data"]["n"] for entry in frame.get("entries", []) if entry["type"] == "bench.missed"]
    finished = time.monotonic()
    assert seen == list(range(REPLAY_ENTRIES)), "replay out of order or incomplete"
    await device.socket.close()
    return {
        "entries": REPLAY_ENTRIES,
        "reconnect_to_last_entry_ms": round((finished - started) * 1000, 1),
        "subscribe_reply_to_last_entry_ms": round((finished - subscribed) * 1000, 1),
    }


async def measure_redis_floor(redis_url: str, samples: int = 1000, rate: float = 100) -> list[float]:
    import redis.asyncio as redis

    publisher = redis.from_url(redis_url)
    subscriber = redis.from_url(redis_url)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe("bench.floor")
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    latencies: list[float] = []

    async def listen() -> None:
        while len(latencies) < samples:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            if message is not None:
                latencies.append(time.monotonic() - float(message["data"]))

    listener = asyncio.create_task(listen())
    started = time.monotonic()
    for index in range(samples):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await publisher.publish("bench.floor", f"{time.monotonic():.6f}")
    await asyncio.wait_for(listener, 30)
    await pubsub.aclose()
    await publisher.aclose()
    await subscriber.aclose()
    return latencies


async def run(server: Any, world: dict[str, Any]) -> dict[str, Any]:
    from django.conf import settings

    from tests.bench.support import summary_ms

    devices = [Device(index, token) for index, token in enumerate(world["tokens"])]
    receipts: dict[str, dict[int, float]] = {}
    pid = server.live.process.pid
    rss_start = rss_kb(pid)
    await connect_all(server.ws_url, devices[:WARM_UP_CONNECTIONS], receipts)
    await asyncio.sleep(1)
    rss_before = rss_kb(pid)
    connect_seconds = await connect_all(server.ws_url, devices[WARM_UP_CONNECTIONS:], receipts)
    await asyncio.sleep(2)
    rss_after = rss_kb(pid)
    idle_connections = len(devices) - WARM_UP_CONNECTIONS

    latencies, missing, offers, writer_seconds = await measure_delivery(devices, receipts)
    floor = await measure_redis_floor(settings.REDIS_URL)
    replay = await measure_replay(server.ws_url, devices[0], world["program_id"], world["unit_ids"][0])
    rss_end = rss_kb(pid)
    for device in devices[1:]:
        if device.reader is not None:
            device.reader.cancel()
    await asyncio.gather(*(device.socket.close() for device in devices[1:]), return_exceptions=True)

    delivery = summary_ms(latencies) | tail_ms(latencies)
    per_connection_kb = (rss_after - rss_before) / idle_connections
    return {
        "devices": len(devices),
        "units": UNITS,
        "web_processes": 1,
        "incidents_per_second": RATE_PER_SECOND,
        "offers": offers,
        "writer_seconds": writer_seconds,
        "delivery_commit_to_device": delivery | {"missing": missing, "target_p99_ms": 50},
        "redis_pubsub_floor": summary_ms(floor),
        "memory": {
            "rss_idle_server_kb": rss_start,
            "rss_before_kb": rss_before,
            "rss_after_kb": rss_after,
            "rss_end_kb": rss_end,
            "idle_connections_measured": idle_connections,
            "per_idle_connection_kb": round(per_connection_kb, 1),
            "target_kb": 50,
        },
        "connect_all_seconds": round(connect_seconds, 1),
        "replay": replay,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "writer":
        writer_main(float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
        return
    fd_limit = raise_fd_limit()
    from tests.bench.support import bench_django, emit

    with bench_django():
        world = create_world()
        from tests.live import asgi_server

        env = {
            # The safety poll is a net under lost nudges; here it would only add noise.
            "FEED_SAFETY_POLL_SECONDS": "3600",
            "LOG_LEVEL": "WARNING",
            # CPython's full collections stall every socket of the process; see apps/realtime/gc_policy.py.
            "WEBSOCKET_GC_FREEZE_SECONDS": os.environ.get("BENCH_GC_FREEZE_SECONDS", "5"),
        }
        with asgi_server(LOG_DIR, name="bench-web", **env) as server:
            figures = asyncio.run(run(server, world))
    emit("dispatch", **figures, fd_limit=fd_limit, cpus=os.cpu_count(), server="uvicorn", server_env=env)


if __name__ == "__main__":
    main()
