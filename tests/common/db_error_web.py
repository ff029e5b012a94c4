"""The web process of tests/common/test_logs_live.py: the project's ASGI application, with a
view the database refuses (Django answers 500 and logs it) and a path on which the refusal
leaves the ASGI application itself (uvicorn answers 500 and logs it).

Run with DJANGO_SETTINGS_MODULE=tests.common.db_error_settings, whose ROOT_URLCONF is this module.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.asgi import application as tandem  # sets Django up, LOGGING with it
from config.urls import urlpatterns as tandem_urlpatterns
from tests.common.db_error_tasks import copy_preference_row

OUTSIDE_DJANGO = "/test/outside-django/copy-preference/"


def copy_preference(request: HttpRequest, preference_id: str) -> HttpResponse:
    copy_preference_row(preference_id)
    return HttpResponse("copied")


urlpatterns = [path("test/copy-preference/<str:preference_id>", copy_preference), *tandem_urlpatterns]


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"].startswith(OUTSIDE_DJANGO):
        await sync_to_async(copy_preference_row)(scope["path"].removeprefix(OUTSIDE_DJANGO))
    await tandem(scope, receive, send)
