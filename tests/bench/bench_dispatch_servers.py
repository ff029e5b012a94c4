"""uvicorn against daphne on the dispatch delivery workload (bench_asgi_servers measures the
bare socket: memory, ping round trips, HTTP requests per second).

    python -m tests.bench dispatch_servers        (make bench BENCH=dispatch_servers)

For each server, one process: 1,000 devices (250 units of 4) connect, authenticate and
subscribe; then a ping → pong round trip on one socket, and assignments offered at 20 per
second for 10 s, timed from commit to receipt on each of the unit's devices (as in
bench_dispatch). Also the memory each idle connection costs the server process.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from tests.bench.bench_dispatch import (
    DEVICES_PER_UNIT,
    LOG_DIR,
    WARM_UP_CONNECTIONS,
    Device,
    connect_all,
    create_world,
    measure_delivery,
    raise_fd_limit,
    rss_kb,
    tail_ms,
)

UNITS = int(os.environ.get("BENCH_UNITS", "250"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
RATE = 20.0
PINGS = 300


def release_units() -> None:
    """Between servers: end every assignment so each unit can take an offer again."""
    from django.utils import timezone

    from apps.dispatch.models import Assignment, AssignmentStatus
    from apps.teams.models import Unit, UnitStatus

    now = timezone.now()
    Assignment.objects.filter(status__in=AssignmentStatus.active()).update(
        status=AssignmentStatus.CANCELLED,
        ended_at=now,
        end_reason="bench reset",
        resend_due_at=None,
        escalate_due_at=None,
    )
    Unit.objects.update(status=UnitStatus.AVAILABLE, status_changed_at=now)


async def ping_round_trips(ws_url: str, token: str) -> list[float]:
    # Each device's reader task owns its recv(); the probe uses a socket of its own.
    import websockets

    times: list[float] = []
    async with websockets.connect(f"{ws_url}/ws/v1/device/", ping_interval=None) as socket:
        await socket.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(await socket.recv())["type"] == "auth.ok"
        for _ in range(PINGS):
            started = time.monotonic()
            await socket.send('{"type": "ping"}')
            assert json.loads(await socket.recv()) == {"type": "pong"}
            times.append(time.monotonic() - started)
    return times


async def run_one(server: Any, tokens: list[str], prefix: str) -> dict[str, Any]:
    from tests.bench.support import summary_ms

    devices = [Device(index, token) for index, token in enumerate(tokens)]
    receipts: dict[str, dict[int, float]] = {}
    pid = server.live.process.pid
    await connect_all(server.ws_url, devices[:WARM_UP_CONNECTIONS], receipts)
    await asyncio.sleep(1)
    before = rss_kb(pid)
    connect_seconds = await connect_all(server.ws_url, devices[WARM_UP_CONNECTIONS:], receipts)
    await asyncio.sleep(2)
    after = rss_kb(pid)
    pings = await ping_round_trips(server.ws_url, devices[0].token)
    latencies, missing, offers, _writer_seconds = await measure_delivery(
        devices, receipts, seconds=SECONDS, rate=RATE, prefix=prefix
    )
    for device in devices:
        if device.reader is not None:
            device.reader.cancel()
    await asyncio.gather(*(device.socket.close() for device in devices), return_exceptions=True)
    return {
        "connect_all_seconds": round(connect_seconds, 1),
        "per_idle_connection_kb": round((after - before) / (len(devices) - WARM_UP_CONNECTIONS), 1),
        "ping_round_trip": summary_ms(pings),
        "delivery_commit_to_device": summary_ms(latencies) | tail_ms(latencies) | {"missing": missing},
        "offers": offers,
    }


def main() -> None:
    raise_fd_limit()
    from tests.bench.support import bench_django, emit
    from tests.live import asgi_server

    results: dict[str, Any] = {}
    env = {
        "FEED_SAFETY_POLL_SECONDS": "3600",
        "LOG_LEVEL": "WARNING",
        "WEBSOCKET_GC_FREEZE_SECONDS": "5",
    }
    with bench_django():
        world = create_world(UNITS)
        for server_name in ("uvicorn", "daphne"):
            release_units()
            with asgi_server(LOG_DIR, server=server_name, name=f"bench-{server_name}", **env) as server:
                results[server_name] = asyncio.run(run_one(server, world["tokens"], prefix=server_name))
    emit(
        "dispatch_servers",
        devices=UNITS * DEVICES_PER_UNIT,
        incidents_per_second=RATE,
        seconds=SECONDS,
        server_env=env,
        **results,
    )


if __name__ == "__main__":
    main()
