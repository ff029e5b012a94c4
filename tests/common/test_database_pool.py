"""A web process keeps its database connections across requests.

Under ASGI each request runs its database work in a thread of its own: a connection kept by
that thread would die with it, and every request would start a PostgreSQL backend. The
connections live in a per-process pool instead (settings ``DATABASE_POOL_SIZE``).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from django.db import connection

from tests.conftest import CrewMember
from tests.live import asgi_server, database_url

APPLICATION_NAME = "tandem-pool-test"


def _server_backends() -> set[tuple[int, object]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s", [APPLICATION_NAME]
        )
        return set(cursor.fetchall())


@pytest.mark.django_db(transaction=True)
def test_a_web_process_serves_requests_on_the_connections_it_keeps(
    crew_member: CrewMember, live_server_logs: Path
) -> None:
    # The server's own connections are told apart from everyone else's by their application name.
    url = f"{database_url()}?application_name={APPLICATION_NAME}"
    with asgi_server(live_server_logs, name="web-pool", DATABASE_URL=url) as server:
        headers = {"Authorization": f"Bearer {crew_member.token}"}
        with httpx.Client(base_url=server.http_url, headers=headers, timeout=30) as client:
            for _ in range(5):
                assert client.get("/api/v1/me/").status_code == 200
            kept = _server_backends()
            for _ in range(20):
                assert client.get("/api/v1/me/").status_code == 200
            after = _server_backends()

    assert kept, "the web process kept no database connection between requests"
    # The later requests were served by the backends already there: none was started for them.
    assert after <= kept
