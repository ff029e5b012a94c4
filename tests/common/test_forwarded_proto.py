"""Which requests production takes for HTTPS: only those a trusted proxy says came over it.

A web process under production settings is sent a plain-HTTP request carrying
``X-Forwarded-Proto: https``. It must redirect the request to HTTPS unless the header came
from a proxy it was told to trust: a client that writes the header itself is not secure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.live import AsgiServer, asgi_server

# An address no request of this test comes from: uvicorn trusts no proxy header.
NOBODY = "192.0.2.1"
PATH = "/api/v1/no-such-thing/"


@pytest.fixture
def production_web(
    django_db_setup: None, live_server_logs: Path, request: pytest.FixtureRequest
) -> Iterator[AsgiServer]:
    with asgi_server(
        live_server_logs,
        name=f"web-{request.node.originalname}",
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="127.0.0.1",
        **request.param,
    ) as server:
        yield server


def get(server: AsgiServer, **headers: str) -> httpx.Response:
    return httpx.get(f"{server.http_url}{PATH}", headers=headers, timeout=10, follow_redirects=False)


@pytest.mark.parametrize("production_web", [{"FORWARDED_ALLOW_IPS": NOBODY}], indirect=True)
def test_a_client_that_writes_the_proxy_header_itself_is_still_redirected_to_https(
    production_web: AsgiServer,
) -> None:
    response = get(production_web, **{"X-Forwarded-Proto": "https"})

    assert response.status_code == 301
    assert response.headers["Location"] == f"https://127.0.0.1:{production_web.port}{PATH}"


@pytest.mark.parametrize("production_web", [{"FORWARDED_ALLOW_IPS": "127.0.0.1"}], indirect=True)
def test_the_header_of_a_proxy_the_web_server_trusts_is_believed(production_web: AsgiServer) -> None:
    assert get(production_web).status_code == 301
    assert get(production_web, **{"X-Forwarded-Proto": "https"}).status_code == 404


@pytest.mark.parametrize(
    "production_web", [{"FORWARDED_ALLOW_IPS": NOBODY, "TRUST_X_FORWARDED_PROTO": "true"}], indirect=True
)
def test_a_deployment_that_says_so_believes_the_header_of_any_client(production_web: AsgiServer) -> None:
    assert get(production_web).status_code == 301
    assert get(production_web, **{"X-Forwarded-Proto": "https"}).status_code == 404
    assert get(production_web, **{"X-Forwarded-Proto": "http"}).status_code == 301
