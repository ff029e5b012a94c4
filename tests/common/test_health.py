from __future__ import annotations

import httpx
import pytest
from django.test import Client

from apps.common import health
from tests.live import AsgiServer, LiveProcess

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.live
def test_healthz_is_ok_when_database_redis_and_a_worker_answer(asgi: AsgiServer, worker: LiveProcess) -> None:
    response = httpx.get(f"{asgi.http_url}/healthz", timeout=10)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "redis": True,
        "worker": True,
    }


def test_healthz_is_503_and_names_the_failing_check(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_worker() -> None:
        raise RuntimeError("no Celery worker answered")

    monkeypatch.setitem(health.CHECKS, "worker", no_worker)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["checks"]["worker"] == {
        "ok": False,
        "error": "RuntimeError",
        "ms": response.json()["checks"]["worker"]["ms"],
    }
    assert response.json()["checks"]["database"]["ok"] is True
