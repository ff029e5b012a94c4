"""The answer to a sign-in while the account is locked out (django-axes)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from apps.common.api.errors import error_body

MESSAGE = "Too many failed sign-ins; try again later or ask a supervisor to unlock the account."


def lockout_response(request: HttpRequest, original_response: Any = None, credentials: Any = None) -> HttpResponse:
    retry_after = str(int(settings.AXES_COOLOFF_TIME * 3600))
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse(error_body(429, "account_locked", MESSAGE), status=429)
    else:
        response = HttpResponse(MESSAGE, status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = retry_after
    return response
