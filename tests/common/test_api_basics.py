from __future__ import annotations

import pytest
from django.test import Client, override_settings
from rest_framework.test import APIClient

from tests.conftest import CrewMember

pytestmark = pytest.mark.django_db


def test_unknown_api_url_answers_in_the_error_shape(client: Client) -> None:
    response = client.get("/api/v1/no-such-thing/")

    assert response.status_code == 404
    assert response.json() == {"status": 404, "code": "not_found", "detail": "Not found.", "errors": []}


def test_unknown_admin_url_stays_html(client: Client) -> None:
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_oversized_body_is_413(api_client: APIClient, crew_member: CrewMember) -> None:
    response = crew_member.client().post("/api/v1/auth/devices/", {"username": "x" * 5000}, format="json")

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert response.json()["limit_bytes"] == 1024


def test_wrong_content_type_is_415(api_client: APIClient) -> None:
    response = api_client.generic("POST", "/api/v1/auth/devices/", "username=x", content_type="text/plain")

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_openapi_schema_is_published_and_describes_the_api(client: Client) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/auth/devices/" in schema["paths"]
    assert "/api/v1/units/{unit_id}/" in schema["paths"]


def test_docs_page_renders_with_local_assets(client: Client) -> None:
    response = client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower()
