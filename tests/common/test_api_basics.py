from __future__ import annotations

import pytest
from django.test import Client, override_settings
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from tests.conftest import CrewMember
from tests.sync.helpers import PROTOCOL

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


def test_openapi_schema_is_published_and_describes_the_api(crew_member: CrewMember) -> None:
    response = crew_member.client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/auth/devices/" in schema["paths"]
    assert "/api/v1/units/{unit_id}/" in schema["paths"]


def test_docs_page_renders_with_local_assets(crew_member: CrewMember) -> None:
    response = crew_member.client().get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower()


# Lists a view pages by hand (StandardPagination), by their path in the schema.
HAND_PAGED_LISTS = [
    "/api/v1/notifications/",
    "/api/v1/directory/services/",
    "/api/v1/followups/steps/",
    "/api/v1/programs/{program}/devices/",
]


@pytest.mark.parametrize("path", HAND_PAGED_LISTS)
def test_a_hand_paged_list_is_documented_as_the_page_it_answers(path: str, crew_member: CrewMember) -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    documented = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    component = schema["components"]["schemas"][documented["$ref"].rsplit("/", 1)[-1]]

    assert set(component["properties"]) == {"count", "next", "previous", "results"}
    if "{" not in path:
        body = crew_member.client().get(path).json()
        assert set(body) == set(component["properties"]), body


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/directory/services/?zone=", "zone"),
        ("/api/v1/followups/steps/?due_before=", "due_before"),
        ("/api/v1/sync/quarantine/?limit=", "limit"),
    ],
)
def test_a_query_parameter_given_empty_is_refused_not_taken_as_absent(
    path: str, field: str, crew_member: CrewMember
) -> None:
    response = crew_member.client().get(path)

    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["field"] == field


@pytest.mark.parametrize("query", ["page=x", "page=", "page=0", "page_size=%C2%89", "page_size=", "page_size=-1"])
def test_a_page_or_page_size_that_is_not_a_counting_number_is_refused(query: str, crew_member: CrewMember) -> None:
    field = query.split("=")[0]
    for path in ("/api/v1/zones/", "/api/v1/notifications/"):
        response = crew_member.client().get(f"{path}?{query}")

        assert response.status_code == 400, (path, response.content)
        assert response.json()["errors"][0]["field"] == field


PAGED_LISTS = [
    "/api/v1/zones/",
    "/api/v1/units/",
    "/api/v1/notifications/",
    "/api/v1/dispatch/incidents/",
    "/api/v1/dispatch/assignments/",
    "/api/v1/followups/steps/",
    "/api/v1/directory/services/",
]


@pytest.mark.parametrize("page_size", ["201", "10000000000"])
def test_every_paged_list_serves_a_page_size_above_the_largest_at_the_largest(
    page_size: str, crew_member: CrewMember
) -> None:
    for path in PAGED_LISTS:
        response = crew_member.client().get(path, {"page_size": page_size})

        assert response.status_code == 200, (path, response.content)


def test_a_page_past_the_last_is_a_404_naming_the_page(crew_member: CrewMember) -> None:
    for path in PAGED_LISTS:
        response = crew_member.client().get(path, {"page": "2"})

        assert response.status_code == 404, (path, response.content)
        assert response.json()["errors"][0]["field"] == "page", path
        assert response.json()["errors"][0]["code"] == "page_not_found", path


@pytest.mark.parametrize(
    "path", ["/api/v1/zones/", "/api/v1/units/", "/api/v1/notifications/", "/api/v1/dispatch/assignments/"]
)
def test_a_list_refuses_a_query_parameter_it_does_not_take(path: str, crew_member: CrewMember) -> None:
    response = crew_member.client().get(path, {"program": "x", "page": "1"})

    assert response.status_code == 400, response.content
    assert response.json()["errors"][0] == {"field": "program", "code": "unknown_field", "detail": "Unknown field."}


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/zones/", "page"),
        ("/api/v1/dispatch/assignments/", "active"),
        ("/api/v1/directory/services/", "open_now"),
        ("/api/v1/followups/steps/", "page"),
        ("/api/v1/sync/feed/", "limit"),
    ],
)
def test_a_query_parameter_sent_twice_is_a_400_naming_it_not_read_as_its_last_value(
    path: str, parameter: str, crew_member: CrewMember
) -> None:
    client = crew_member.client()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {crew_member.token}", **PROTOCOL)

    response = client.get(f"{path}?{parameter}=1&{parameter}=2")

    assert response.status_code == 400, response.content
    assert response.json()["errors"] == [
        {"field": parameter, "code": "repeated_parameter", "detail": "Send this parameter once."}
    ]


def test_an_unknown_query_parameter_sent_twice_is_unknown(crew_member: CrewMember) -> None:
    response = crew_member.client().get("/api/v1/zones/?colour=red&colour=blue")

    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "colour", "code": "unknown_field", "detail": "Unknown field."}]


def test_no_api_answer_is_kept_in_a_shared_devices_http_cache(crew_member: CrewMember, api_client: APIClient) -> None:
    # What a tablet shared across shifts must not keep on disk: a new token, the records a
    # crew reads (health information), and the errors naming them.
    crew_member.user.set_password("correct horse battery staple")
    crew_member.user.save(update_fields=["password"])
    sign_in = api_client.post(
        "/api/v1/auth/devices/",
        {
            "username": crew_member.user.username,
            "password": "correct horse battery staple",
            "device_name": "Unit 7 tablet",
            "platform": "android",
        },
        format="json",
    )
    me = crew_member.client().get("/api/v1/me/")
    unknown = crew_member.client().get("/api/v1/no-such-thing/")
    refused = api_client.get("/api/v1/me/")

    assert [sign_in.status_code, me.status_code, unknown.status_code, refused.status_code] == [201, 200, 404, 401]
    for response in (sign_in, me, unknown, refused):
        assert "no-store" in response.get("Cache-Control", ""), response.headers


def test_the_staff_site_keeps_its_own_caching(client: Client) -> None:
    response = client.get("/static/admin/css/base.css")

    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")
