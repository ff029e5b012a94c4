"""The admin's pages on the clock of the program the user works in."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase
from django.urls import reverse
from django.utils import timezone

from apps.workspace.access import request_time_zone


class WorkspaceTimeZoneMiddleware:
    """Every admin page shows times, and reads the times typed into its forms, in the time
    zone of the user's program (``apps.workspace.access.workspace_time_zone``); the page's
    header names it. The API is left alone: its times carry their offset."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not request.path.startswith(reverse("admin:index")):
            return self.get_response(request)
        # For this request only: the thread serves the next request on the default clock.
        with timezone.override(request_time_zone(request)):
            return self.get_response(request)
