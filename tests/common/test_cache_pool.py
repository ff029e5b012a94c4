"""A web process keeps its Redis connections for the cache across requests.

Every API request reads and writes the cache (the per-device rate limit). Under ASGI each
request runs in a thread of its own, and Django builds a cache object, with its own
connection pool, per thread: without a pool shared by the process, every request opened a
new Redis connection.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis
from django.conf import settings

from tests.conftest import CrewMember
from tests.live import asgi_server


def _connections_opened() -> int:
    stats = redis.Redis.from_url(settings.REDIS_URL).info("stats")
    return int(stats["total_connections_received"])


@pytest.mark.django_db(transaction=True)
def test_a_web_process_serves_requests_on_the_cache_connections_it_keeps(
    crew_member: CrewMember, live_server_logs: Path
) -> None:
    with asgi_server(live_server_logs, name="web-cache-pool") as server:
        headers = {"Authorization": f"Bearer {crew_member.token}"}
        with httpx.Client(base_url=server.http_url, headers=headers, timeout=30) as client:
            assert client.get("/api/v1/me/").status_code == 200  # the process's first connection
            before = _connections_opened()
            for _ in range(20):
                assert client.get("/api/v1/me/").status_code == 200
            opened = _connections_opened() - before - 1  # less the one that counted them

    assert opened <= 1, f"20 requests opened {opened} Redis connections"
