"""uvicorn against daphne on Tandem's own application: the measurement behind the choice.

For each server: memory per authenticated idle websocket, websocket ping/pong round trip
latency under 200 concurrent sockets, and authenticated HTTP requests per second.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from pathlib import Path
from typing import Any

CONNECTIONS = 500
ROUND_TRIPS = 4_000
HTTP_REQUESTS = 1_500
HTTP_CONCURRENCY = 20
SERVERS = ("uvicorn", "uvicorn-websockets-sansio", "uvicorn-wsproto", "daphne")


def make_devices(count: int) -> list[str]:
    from apps.accounts.models import Role
    from tests.accounts.factories import ProgramFactory, device_with_token
    from tests.conftest import make_crew_member

    member = make_crew_member(ProgramFactory.create(slug="bench"), role=Role.CLINICIAN)
    return [member.token] + [device_with_token(member.user, f"Device {index}")[1] for index in range(count - 1)]


async def measure(server_url: str, http_url: str, pid: int, tokens: list[str]) -> dict[str, Any]:
    import httpx
    import psutil
    import websockets

    process = psutil.Process(pid)
    rss_before = process.memory_info().rss

    async def open_one(token: str) -> Any:
        socket = await websockets.connect(f"{server_url}/ws/v1/device/", open_timeout=60, max_queue=None)
        await socket.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(await socket.recv())["type"] == "auth.ok"
        return socket

    sockets = []
    for start in range(0, len(tokens), 50):
        sockets += await asyncio.gather(*(open_one(token) for token in tokens[start : start + 50]))
    await asyncio.sleep(1)
    rss_after = process.memory_info().rss

    round_trips: list[float] = []

    async def ping_loop(socket: Any, count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await socket.send('{"type": "ping"}')
            await socket.recv()
            round_trips.append(time.perf_counter() - started)

    active = sockets[:200]
    started = time.perf_counter()
    await asyncio.gather(*(ping_loop(socket, ROUND_TRIPS // len(active)) for socket in active))
    ws_elapsed = time.perf_counter() - started

    async with httpx.AsyncClient(base_url=http_url, headers={"Authorization": f"Bearer {tokens[0]}"}) as client:
        statuses: list[int] = []

        async def http_loop(count: int) -> None:
            for _ in range(count):
                statuses.append((await client.get("/api/v1/me/")).status_code)

        started = time.perf_counter()
        await asyncio.gather(*(http_loop(HTTP_REQUESTS // HTTP_CONCURRENCY) for _ in range(HTTP_CONCURRENCY)))
        http_elapsed = time.perf_counter() - started
    assert set(statuses) == {200}, set(statuses)

    for socket in sockets:
        await socket.close()

    from tests.bench.support import summary_ms

    return {
        "kb_per_idle_socket": round((rss_after - rss_before) / len(sockets) / 1024, 1),
        "ws_round_trip": summary_ms(round_trips),
        "ws_messages_per_s": round(len(round_trips) / ws_elapsed),
        "http_requests_per_s": round(len(statuses) / http_elapsed),
    }


def main() -> None:
    import logging

    from tests.bench.support import bench_django, emit

    logging.getLogger("httpx").setLevel(logging.WARNING)

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    with bench_django():
        from tests.live import asgi_server

        tokens = make_devices(CONNECTIONS)
        log_dir = Path(".data") / "bench-logs"
        results: dict[str, Any] = {}
        for server in SERVERS:
            # One device sends all the HTTP requests: its rate limit (1,200/min) would answer
            # 429 to what measures the server, not the limit.
            with asgi_server(
                log_dir, server=server, name=server, FEED_SAFETY_POLL_SECONDS="0", THROTTLE_DEVICE_RATE="100000/min"
            ) as running:
                results[server] = asyncio.run(
                    measure(running.ws_url, running.http_url, running.live.process.pid, tokens)
                )
    emit("asgi_servers", connections=CONNECTIONS, **results)


if __name__ == "__main__":
    main()
